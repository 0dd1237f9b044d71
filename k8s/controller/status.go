package controller

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
)

// controllerStatus is the part of a channel's status the controller owns
// (field manager FieldManager); status.nodes belongs to the agents.
type controllerStatus struct {
	ObservedGeneration int64              `json:"observedGeneration"`
	Conditions         []metav1.Condition `json:"conditions"`
	Mirror             *v1.MirrorPlan     `json:"mirror,omitempty"`
}

// need is a node that runs a live pod the channel selects, since the
// earliest time such a pod was bound to it.
type needs map[string]time.Time

// faultReasons maps the node states that degrade a channel to their
// condition reasons, most severe first.
var faultReasons = []struct {
	state  v1.NodeState
	reason string
}{
	{v1.NodeBroken, v1.ReasonBroken},
	{v1.NodeRejected, v1.ReasonRejected},
	{v1.NodeNeedsIdle, v1.ReasonNeedsIdle},
}

// compute returns the controller's status of smc given the nodes that need
// it, and how long to wait before computing it again (0: only on the next
// change): a node that needs the channel and has not reported it yet
// degrades the channel once timeout has passed.
func compute(smc *v1.SharedMemoryChannel, need needs, now time.Time, timeout time.Duration) (controllerStatus, time.Duration) {
	gen := smc.Generation
	entries := make(map[string]v1.NodeStatus, len(smc.Status.Nodes))
	for _, e := range smc.Status.Nodes {
		entries[e.Name] = e
	}

	var pending, silent []string
	var recheck time.Duration
	for _, node := range sortedKeys(need) {
		e, ok := entries[node]
		switch {
		case ok && e.State == v1.NodeReady && e.ObservedGeneration == gen:
		case !ok && now.Sub(need[node]) >= timeout:
			silent = append(silent, node)
			pending = append(pending, node)
		default:
			pending = append(pending, node)
			if left := timeout - now.Sub(need[node]); !ok && (recheck == 0 || left < recheck) {
				recheck = left
			}
		}
	}

	// Faults: any node's report counts, needed or not (a node keeps a
	// channel in use after its pods went).
	var faults []string
	degradedReason := ""
	for _, f := range faultReasons {
		for _, e := range smc.Status.Nodes {
			if e.State != f.state {
				continue
			}
			if degradedReason == "" {
				degradedReason = f.reason
			}
			msg := fmt.Sprintf("%s: %s", e.Name, f.state)
			if e.Message != "" {
				msg += " (" + e.Message + ")"
			}
			faults = append(faults, msg)
		}
	}
	if len(silent) > 0 {
		if degradedReason == "" {
			degradedReason = v1.ReasonNotReported
		}
		faults = append(faults, fmt.Sprintf("%s: no report for %v", strings.Join(silent, ", "), timeout))
	}

	ready := metav1.Condition{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1.ReasonReconciled}
	switch {
	case len(pending) == 0 && len(need) == 0:
		ready.Message = "no node needs the channel: no running pod selects it"
	case len(pending) == 0:
		ready.Message = fmt.Sprintf("ready on %s", strings.Join(sortedKeys(need), ", "))
	default:
		ready.Status, ready.Reason = metav1.ConditionFalse, v1.ReasonPending
		if degradedReason != "" {
			ready.Reason = degradedReason
		}
		ready.Message = fmt.Sprintf("not ready at generation %d on %s", gen, strings.Join(pending, ", "))
	}
	degraded := metav1.Condition{Type: v1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: ready.Reason, Message: "no node reports a fault"}
	if degradedReason != "" {
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, degradedReason, strings.Join(faults, "; ")
	}

	// The conditions keep their transition times unless their status
	// changes (meta.SetStatusCondition).
	conds := append([]metav1.Condition(nil), smc.Status.Conditions...)
	for _, c := range []metav1.Condition{ready, degraded} {
		c.ObservedGeneration = gen
		c.LastTransitionTime = metav1.NewTime(now)
		meta.SetStatusCondition(&conds, c)
	}
	st := controllerStatus{
		ObservedGeneration: gen,
		Conditions:         []metav1.Condition{*meta.FindStatusCondition(conds, v1.ConditionReady), *meta.FindStatusCondition(conds, v1.ConditionDegraded)},
		Mirror:             mirrorPlan(smc, need, entries),
	}
	return st, recheck
}

// mirrorPlan lists the nodes whose agents must link with each other: those
// that need the channel, hold it (Ready or NeedsIdle) and report a mirror
// address. Nil unless mirroring is on and two nodes or more take part.
func mirrorPlan(smc *v1.SharedMemoryChannel, need needs, entries map[string]v1.NodeStatus) *v1.MirrorPlan {
	if smc.Spec.Mirror != nil && !*smc.Spec.Mirror {
		return nil
	}
	var peers []v1.MirrorPeer
	for _, node := range sortedKeys(need) {
		e, ok := entries[node]
		if ok && (e.State == v1.NodeReady || e.State == v1.NodeNeedsIdle) && e.MirrorAddress != "" {
			peers = append(peers, v1.MirrorPeer{Name: node, Address: e.MirrorAddress})
		}
	}
	if len(peers) < 2 {
		return nil
	}
	return &v1.MirrorPlan{Peers: peers}
}

// current is the controller's part of smc's status as stored.
func current(smc *v1.SharedMemoryChannel) controllerStatus {
	st := controllerStatus{ObservedGeneration: smc.Status.ObservedGeneration, Mirror: smc.Status.Mirror}
	for _, t := range []string{v1.ConditionReady, v1.ConditionDegraded} {
		if c := meta.FindStatusCondition(smc.Status.Conditions, t); c != nil {
			st.Conditions = append(st.Conditions, *c)
		}
	}
	return st
}

func sortedKeys(m needs) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
