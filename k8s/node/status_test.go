package node

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
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
