package node

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned/fake"
	"github.com/shimmy-dev/shimmy/registry"
)

// TestStatusEntries: each node's agent applies its own entry of
// status.nodes, and removing it leaves the other nodes' entries alone.
func TestStatusEntries(t *testing.T) {
	c := k8stest.Start(t)
	c.Apply(t, "deploy/crd")
	cs, err := versioned.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	smc := &v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ch"},
		Spec:       v1.SharedMemoryChannelSpec{Selector: &metav1.LabelSelector{}},
	}
	if _, err := cs.ShimmyV1alpha1().SharedMemoryChannels("default").Create(ctx, smc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	key := cache.ObjectName{Namespace: "default", Name: "ch"}
	writer := func(node string) *statusWriter {
		return newStatusWriter(node, node+":7000", cs, nil, testenv.QuietLog(), 0)
	}
	a, b := writer("node-a"), writer("node-b")
	entry := func(w *statusWriter, members int32, s v1.NodeState) *v1.NodeStatus {
		return &v1.NodeStatus{Name: w.node, Members: members, ObservedGeneration: 1, State: s, MirrorAddress: w.mirror}
	}
	nodes := func() map[string]v1.NodeStatus {
		t.Helper()
		got, err := cs.ShimmyV1alpha1().SharedMemoryChannels("default").Get(ctx, "ch", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]v1.NodeStatus{}
		for _, n := range got.Status.Nodes {
			m[n.Name] = n
		}
		if t.Failed() {
			t.Logf("managed fields: %+v", got.ManagedFields)
		}
		return m
	}
	for _, step := range []struct {
		name string
		w    *statusWriter
		e    *v1.NodeStatus
		want map[string]v1.NodeStatus
	}{
		{"a ready", a, entry(a, 0, v1.NodeReady), map[string]v1.NodeStatus{"node-a": *entry(a, 0, v1.NodeReady)}},
		{"b ready", b, entry(b, 2, v1.NodeReady), map[string]v1.NodeStatus{"node-a": *entry(a, 0, v1.NodeReady), "node-b": *entry(b, 2, v1.NodeReady)}},
		{"a members", a, entry(a, 3, v1.NodeReady), map[string]v1.NodeStatus{"node-a": *entry(a, 3, v1.NodeReady), "node-b": *entry(b, 2, v1.NodeReady)}},
		{"a removed", a, nil, map[string]v1.NodeStatus{"node-b": *entry(b, 2, v1.NodeReady)}},
		{"b removed", b, nil, map[string]v1.NodeStatus{}},
		{"b back", b, entry(b, 1, v1.NodeNeedsIdle), map[string]v1.NodeStatus{"node-b": *entry(b, 1, v1.NodeNeedsIdle)}},
		{"a removed again", a, nil, map[string]v1.NodeStatus{"node-b": *entry(b, 1, v1.NodeNeedsIdle)}},
		{"a back", a, entry(a, 1, v1.NodeBroken), map[string]v1.NodeStatus{"node-a": *entry(a, 1, v1.NodeBroken), "node-b": *entry(b, 1, v1.NodeNeedsIdle)}},
	} {
		if err := step.w.apply(ctx, key, step.e); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got := nodes()
		if len(got) != len(step.want) {
			t.Errorf("%s: nodes %+v, want %+v", step.name, got, step.want)
		}
		for k, v := range step.want {
			if got[k] != v {
				t.Errorf("%s: nodes %+v, want %+v", step.name, got, step.want)
			}
		}
		if t.Failed() {
			nodes()
			t.FailNow()
		}
	}
}

// channels is a registry in tmpfs with the given channels in namespace
// team.
func channels(t *testing.T, names ...string) *registry.Registry {
	t.Helper()
	reg, err := registry.New(registry.Options{StateDir: testenv.ShmDir(t, "node-status-test"), Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	ns, err := reg.CreateNamespace("team", registry.Attr{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := ns.CreateChannel(name, registry.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// countPatches is a fake clientset that records the node entries applied.
func countPatches(t *testing.T) (*fake.Clientset, func() []*v1.NodeStatus) {
	cs := fake.NewSimpleClientset()
	var mu sync.Mutex
	var applied []*v1.NodeStatus
	cs.PrependReactor("patch", "sharedmemorychannels", func(a k8stesting.Action) (bool, runtime.Object, error) {
		var body applyStatus
		if err := json.Unmarshal(a.(k8stesting.PatchAction).GetPatch(), &body); err != nil {
			t.Error(err)
		}
		mu.Lock()
		defer mu.Unlock()
		var e *v1.NodeStatus
		if len(body.Status.Nodes) == 1 {
			e = &body.Status.Nodes[0]
		}
		applied = append(applied, e)
		return true, &v1.SharedMemoryChannel{}, nil
	})
	return cs, func() []*v1.NodeStatus {
		mu.Lock()
		defer mu.Unlock()
		return append([]*v1.NodeStatus(nil), applied...)
	}
}

// TestStatusCoalesced: a channel's entry is written once per change, not
// once per request, and no more often than the gap allows however fast
// its members come and go.
func TestStatusCoalesced(t *testing.T) {
	reg := channels(t, "ch")
	ch, err := reg.Channel("team", "ch")
	if err != nil {
		t.Fatal(err)
	}
	cs, applied := countPatches(t)
	const gap = 100 * time.Millisecond
	w := newStatusWriter("node-a", "", cs, reg, testenv.QuietLog(), gap)
	key := cache.ObjectName{Namespace: "team", Name: "ch"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, gap) }()
	t.Cleanup(func() { cancel(); <-done })

	waitWrites := func(n int) []*v1.NodeStatus {
		t.Helper()
		var got []*v1.NodeStatus
		wait.Eventually(t, 10*time.Second, func() error {
			if got = applied(); len(got) < n {
				return fmt.Errorf("%d writes, want %d", len(got), n)
			}
			return nil
		})
		return got
	}
	// The same outcome asked for many times, and refreshes that find
	// nothing new, make one write; the next change makes the second.
	for i := 0; i < 100; i++ {
		w.set(key, outcome{generation: 1, state: v1.NodeReady})
		w.refresh()
	}
	waitWrites(1)
	for i := 0; i < 100; i++ {
		w.refresh()
	}
	w.set(key, outcome{generation: 2, state: v1.NodeNeedsIdle, message: "m"})
	got := waitWrites(2)
	want := []v1.NodeStatus{
		{Name: "node-a", ObservedGeneration: 1, State: v1.NodeReady},
		{Name: "node-a", ObservedGeneration: 2, State: v1.NodeNeedsIdle, Message: "m"},
	}
	if len(got) != 2 || got[0] == nil || *got[0] != want[0] || got[1] == nil || *got[1] != want[1] {
		t.Fatalf("writes %v, want %+v", got, want)
	}

	// Members churn: writes follow at most one per gap, and the last one
	// has the final count.
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	start := time.Now()
	for i := 0; i < 300; i++ {
		p, err := h.NewPublisher(channel.PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.refresh()
		p.Close()
	}
	keep, err := h.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	wait.Eventually(t, 10*time.Second, func() error {
		got := applied()
		if last := got[len(got)-1]; last == nil || last.Members != 1 {
			return fmt.Errorf("last write %+v, want 1 member", last)
		}
		return nil
	})
	elapsed := time.Since(start)
	if n, most := len(applied())-2, int(elapsed/gap)+1; n > most {
		t.Errorf("%d writes in %v with a gap of %v: at most %d expected", n, elapsed, gap, most)
	}

	// The channel leaves the node: its entry is removed, once.
	w.drop(key)
	got = waitWrites(len(applied()) + 1)
	if got[len(got)-1] != nil {
		t.Errorf("last write %+v, want the removal", got[len(got)-1])
	}
}

// TestStatusNotRewritten: after a restart, an entry the API server
// already has is not written again; one that differs is.
func TestStatusNotRewritten(t *testing.T) {
	reg := channels(t, "same", "changed")
	cs, applied := countPatches(t)
	w := newStatusWriter("node-a", "", cs, reg, testenv.QuietLog(), time.Millisecond)
	stored := v1.NodeStatus{Name: "node-a", ObservedGeneration: 4, State: v1.NodeReady}
	w.stored = func(cache.ObjectName) *v1.NodeStatus { e := stored; return &e }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })

	w.set(cache.ObjectName{Namespace: "team", Name: "same"}, outcome{generation: 4, state: v1.NodeReady})
	w.set(cache.ObjectName{Namespace: "team", Name: "changed"}, outcome{generation: 5, state: v1.NodeReady})
	wait.Eventually(t, 10*time.Second, func() error {
		if n := len(applied()); n < 1 {
			return fmt.Errorf("%d writes", n)
		}
		return nil
	})
	// The queue is worked in order: "same" was looked at first.
	if got := applied(); len(got) != 1 || got[0] == nil || got[0].ObservedGeneration != 5 {
		t.Errorf("writes %+v, want only the changed entry's", got)
	}
}
