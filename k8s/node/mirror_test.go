package node

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
