package controller

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
)

const gen = 3

func entry(node string, state v1.NodeState, generation int64, addr string) v1.NodeStatus {
	return v1.NodeStatus{Name: node, State: state, ObservedGeneration: generation, MirrorAddress: addr, Message: "msg-" + node}
}

func TestCompute(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	timeout := time.Minute
	recent, old := now.Add(-10*time.Second), now.Add(-2*time.Minute)
	off := false
	for _, tc := range []struct {
		name     string
		need     needs
		nodes    []v1.NodeStatus
		mirror   *bool
		ready    metav1.ConditionStatus
		reason   string // of Ready; Degraded's when it is True
		degraded metav1.ConditionStatus
		dreason  string
		dmsg     []string // substrings of Degraded's message
		peers    []v1.MirrorPeer
		recheck  time.Duration
	}{
		{name: "no pods", ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled},
		{name: "one node ready", need: needs{"a": old}, nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000")},
			ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled},
		{name: "two nodes ready: a plan", need: needs{"b": old, "a": old},
			nodes: []v1.NodeStatus{entry("b", v1.NodeReady, gen, "10.0.0.2:7000"), entry("a", v1.NodeReady, gen, "10.0.0.1:7000")},
			ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled,
			peers: []v1.MirrorPeer{{Name: "a", Address: "10.0.0.1:7000"}, {Name: "b", Address: "10.0.0.2:7000"}}},
		{name: "mirror off: no plan", need: needs{"a": old, "b": old}, mirror: &off,
			nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000"), entry("b", v1.NodeReady, gen, "10.0.0.2:7000")},
			ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled},
		{name: "old generation is pending", need: needs{"a": old, "b": old},
			nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000"), entry("b", v1.NodeReady, gen-1, "10.0.0.2:7000")},
			ready: "False", reason: v1.ReasonPending, degraded: "False", dreason: v1.ReasonPending,
			peers: []v1.MirrorPeer{{Name: "a", Address: "10.0.0.1:7000"}, {Name: "b", Address: "10.0.0.2:7000"}}},
		{name: "no report yet, within the timeout", need: needs{"a": old, "b": recent},
			nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000")},
			ready: "False", reason: v1.ReasonPending, degraded: "False", dreason: v1.ReasonPending, recheck: 50 * time.Second},
		{name: "no report past the timeout", need: needs{"a": old, "b": old},
			nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000")},
			ready: "False", reason: v1.ReasonNotReported, degraded: "True", dreason: v1.ReasonNotReported, dmsg: []string{"b: no report for 1m0s"}},
		{name: "needs idle", need: needs{"a": old, "b": old},
			nodes: []v1.NodeStatus{entry("a", v1.NodeNeedsIdle, gen, "10.0.0.1:7000"), entry("b", v1.NodeReady, gen, "10.0.0.2:7000")},
			ready: "False", reason: v1.ReasonNeedsIdle, degraded: "True", dreason: v1.ReasonNeedsIdle, dmsg: []string{"a: NeedsIdle (msg-a)"},
			peers: []v1.MirrorPeer{{Name: "a", Address: "10.0.0.1:7000"}, {Name: "b", Address: "10.0.0.2:7000"}}},
		{name: "broken outranks rejected; both named", need: needs{"a": old, "b": old, "c": old},
			nodes: []v1.NodeStatus{entry("a", v1.NodeRejected, gen, ""), entry("b", v1.NodeBroken, gen, "10.0.0.2:7000"), entry("c", v1.NodeReady, gen, "10.0.0.3:7000")},
			ready: "False", reason: v1.ReasonBroken, degraded: "True", dreason: v1.ReasonBroken, dmsg: []string{"b: Broken (msg-b)", "a: Rejected (msg-a)"}},
		{name: "a fault on a node that no longer needs it", need: needs{"a": old},
			nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000"), entry("z", v1.NodeBroken, gen, "")},
			ready: "True", reason: v1.ReasonReconciled, degraded: "True", dreason: v1.ReasonBroken, dmsg: []string{"z: Broken"}},
		{name: "only nodes with an address are peers", need: needs{"a": old, "b": old, "c": old},
			nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000"), entry("b", v1.NodeReady, gen, ""), entry("c", v1.NodeReady, gen, "10.0.0.3:7000")},
			ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled,
			peers: []v1.MirrorPeer{{Name: "a", Address: "10.0.0.1:7000"}, {Name: "c", Address: "10.0.0.3:7000"}}},
		{name: "a node that does not need it is no peer", need: needs{"a": old},
			nodes: []v1.NodeStatus{entry("a", v1.NodeReady, gen, "10.0.0.1:7000"), entry("b", v1.NodeReady, gen, "10.0.0.2:7000")},
			ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			smc := &v1.SharedMemoryChannel{
				ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "n", Generation: gen},
				Spec:       v1.SharedMemoryChannelSpec{Mirror: tc.mirror},
				Status:     v1.SharedMemoryChannelStatus{Nodes: tc.nodes},
			}
			st, recheck := compute(smc, tc.need, now, timeout)
			if st.ObservedGeneration != gen {
				t.Errorf("observedGeneration %d, want %d", st.ObservedGeneration, gen)
			}
			ready := meta.FindStatusCondition(st.Conditions, v1.ConditionReady)
			degraded := meta.FindStatusCondition(st.Conditions, v1.ConditionDegraded)
			if ready == nil || degraded == nil || len(st.Conditions) != 2 {
				t.Fatalf("conditions %+v, want Ready and Degraded", st.Conditions)
			}
			if ready.Status != tc.ready || ready.Reason != tc.reason || ready.ObservedGeneration != gen {
				t.Errorf("Ready = %s/%s (gen %d) %q, want %s/%s", ready.Status, ready.Reason, ready.ObservedGeneration, ready.Message, tc.ready, tc.reason)
			}
			if degraded.Status != tc.degraded || degraded.Reason != tc.dreason {
				t.Errorf("Degraded = %s/%s %q, want %s/%s", degraded.Status, degraded.Reason, degraded.Message, tc.degraded, tc.dreason)
			}
			for _, m := range tc.dmsg {
				if !strings.Contains(degraded.Message, m) {
					t.Errorf("Degraded message %q does not say %q", degraded.Message, m)
				}
			}
			var peers []v1.MirrorPeer
			if st.Mirror != nil {
				peers = st.Mirror.Peers
			}
			if !reflect.DeepEqual(peers, tc.peers) {
				t.Errorf("mirror peers %+v, want %+v", peers, tc.peers)
			}
			if recheck != tc.recheck {
				t.Errorf("recheck after %v, want %v", recheck, tc.recheck)
			}
		})
	}
}

// TestComputeKeepsTransitionTimes: a condition whose status does not
// change keeps its lastTransitionTime, so that an unchanged status is not
// written again.
func TestComputeKeepsTransitionTimes(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	smc := &v1.SharedMemoryChannel{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
	first, _ := compute(smc, nil, t0, time.Minute)
	smc.Status.ObservedGeneration, smc.Status.Conditions, smc.Status.Mirror = first.ObservedGeneration, first.Conditions, first.Mirror
	again, _ := compute(smc, nil, t0.Add(time.Hour), time.Minute)
	if !reflect.DeepEqual(again, current(smc)) {
		t.Errorf("recomputed %+v, stored %+v: an unchanged status would be written again", again, current(smc))
	}
	smc.Status.Nodes = []v1.NodeStatus{entry("a", v1.NodeBroken, 1, "")}
	changed, _ := compute(smc, nil, t0.Add(time.Hour), time.Minute)
	d := meta.FindStatusCondition(changed.Conditions, v1.ConditionDegraded)
	if d.Status != metav1.ConditionTrue || !d.LastTransitionTime.Time.Equal(t0.Add(time.Hour)) {
		t.Errorf("Degraded %s since %v, want True since %v", d.Status, d.LastTransitionTime, t0.Add(time.Hour))
	}
}
