package node

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/mirror"
)

// withPlan is a channel whose status.mirror lists peers as name=address
// pairs (nil peers: no plan).
func withPlan(ns, name string, peers ...[2]string) *v1.SharedMemoryChannel {
	smc := &v1.SharedMemoryChannel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if peers != nil {
		smc.Status.Mirror = &v1.MirrorPlan{}
		for _, p := range peers {
			smc.Status.Mirror.Peers = append(smc.Status.Mirror.Peers, v1.MirrorPeer{Name: p[0], Address: p[1]})
		}
	}
	return smc
}

var (
	a = [2]string{"node-a", "10.0.0.1:7470"}
	b = [2]string{"node-b", "10.0.0.2:7470"}
	c = [2]string{"node-c", "10.0.0.3:7470"}
)

func TestPlanFor(t *testing.T) {
	peerB, peerC := mirror.Peer{Name: "node-b", Addr: b[1]}, mirror.Peer{Name: "node-c", Addr: c[1]}
	for _, tc := range []struct {
		name  string
		chans []*v1.SharedMemoryChannel
		want  mirror.Plan
	}{
		{"no channels", nil, mirror.Plan{}},
		{"no plans", []*v1.SharedMemoryChannel{withPlan("ns", "x")}, mirror.Plan{}},
		{"a plan without this node", []*v1.SharedMemoryChannel{withPlan("ns", "x", b, c)}, mirror.Plan{}},
		{"a plan of this node alone", []*v1.SharedMemoryChannel{withPlan("ns", "x", a)}, mirror.Plan{}},
		{"two nodes", []*v1.SharedMemoryChannel{withPlan("ns", "x", a, b)}, mirror.Plan{
			Peers:  []mirror.Peer{peerB},
			Shares: []mirror.Share{{Namespace: "ns", Channel: "x", Peers: []string{"node-b"}}},
		}},
		{"three nodes, shares sorted, peers once", []*v1.SharedMemoryChannel{
			withPlan("ns", "y", c, a), withPlan("ns", "x", a, b, c), withPlan("alpha", "z", b, c),
		}, mirror.Plan{
			Peers: []mirror.Peer{peerB, peerC},
			Shares: []mirror.Share{
				{Namespace: "ns", Channel: "x", Peers: []string{"node-b", "node-c"}},
				{Namespace: "ns", Channel: "y", Peers: []string{"node-c"}},
			},
		}},
		{"a moved peer takes the first channel's address", []*v1.SharedMemoryChannel{
			withPlan("ns", "y", a, [2]string{"node-b", "10.0.0.9:7470"}), withPlan("ns", "x", a, b),
		}, mirror.Plan{
			Peers: []mirror.Peer{peerB},
			Shares: []mirror.Share{
				{Namespace: "ns", Channel: "x", Peers: []string{"node-b"}},
				{Namespace: "ns", Channel: "y", Peers: []string{"node-b"}},
			},
		}},
		{"a peer listed twice, or nameless, counts once", []*v1.SharedMemoryChannel{withPlan("ns", "x", a, b, b, [2]string{"", "10.0.0.4:1"})}, mirror.Plan{
			Peers:  []mirror.Peer{peerB},
			Shares: []mirror.Share{{Namespace: "ns", Channel: "x", Peers: []string{"node-b"}}},
		}},
		{"a name the registry refuses is left out", []*v1.SharedMemoryChannel{withPlan("ns", ".hidden", a, b), withPlan("ns", "x", a, c)}, mirror.Plan{
			Peers:  []mirror.Peer{peerC},
			Shares: []mirror.Share{{Namespace: "ns", Channel: "x", Peers: []string{"node-c"}}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanFor("node-a", tc.chans)
			if err := got.Validate(); err != nil {
				t.Errorf("plan does not validate: %v", err)
			}
			if len(got.Peers) != len(tc.want.Peers) || len(got.Shares) != len(tc.want.Shares) ||
				len(got.Peers) > 0 && !reflect.DeepEqual(got.Peers, tc.want.Peers) ||
				len(got.Shares) > 0 && !reflect.DeepEqual(got.Shares, tc.want.Shares) {
				t.Errorf("PlanFor = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// plans records the plans applied to it.
type plans struct {
	mu  sync.Mutex
	got []mirror.Plan
}

func (p *plans) Apply(pl mirror.Plan) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, pl)
	return nil
}

// waitPlans waits until n plans were applied, the last with the given
// shares (namespace/channel: peers), and fails if more were.
func (p *plans) wait(t *testing.T, n int, shares map[string][]string) {
	t.Helper()
	wait.Eventually(t, timeout, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.got) < n {
			return fmt.Errorf("%d plans applied, want %d", len(p.got), n)
		}
		got := map[string][]string{}
		for _, s := range p.got[len(p.got)-1].Shares {
			got[s.Namespace+"/"+s.Channel] = s.Peers
		}
		if len(got) != len(shares) || len(got) > 0 && !reflect.DeepEqual(got, shares) {
			return fmt.Errorf("last plan shares %v, want %v", got, shares)
		}
		return nil
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.got) != n {
		t.Fatalf("%d plans applied, want %d: %+v", len(p.got), n, p.got)
	}
}

// TestReconcilerAppliesPlans: the reconciler applies the node's plan when
// a channel's status.mirror changes, and only when the plan changes.
func TestReconcilerAppliesPlans(t *testing.T) {
	m := &plans{}
	e := start(t, func(o *Options) { o.Mirror, o.MirrorDebounce = m, 20*time.Millisecond })
	ctx := context.Background()
	e.namespace(t, "team")
	api := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels("team")
	setStatus := func(name string, f func(*v1.SharedMemoryChannelStatus)) {
		t.Helper()
		smc, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f(&smc.Status)
		if _, err := api.UpdateStatus(ctx, smc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	plan := func(peers ...[2]string) func(*v1.SharedMemoryChannelStatus) {
		return func(st *v1.SharedMemoryChannelStatus) { st.Mirror = withPlan("", "", peers...).Status.Mirror }
	}
	e.channel(t, "team", "x", "nobody", "64Ki") // no pod: the node holds nothing, the plan still counts
	m.wait(t, 1, nil)                           // the channel's arrival: an empty plan
	setStatus("x", plan(a, b))
	m.wait(t, 2, map[string][]string{"team/x": {"node-b"}})
	// Status writes that leave the plan alone apply nothing.
	for i := 0; i < 3; i++ {
		setStatus("x", func(st *v1.SharedMemoryChannelStatus) { st.ObservedGeneration = int64(i + 1) })
	}
	e.channel(t, "team", "y", "nobody", "64Ki")
	setStatus("y", plan(b, c))    // without this node
	setStatus("x", plan(a, b, c)) // a third node
	m.wait(t, 3, map[string][]string{"team/x": {"node-b", "node-c"}})
	if err := api.Delete(ctx, "x", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	m.wait(t, 4, nil)
}
