package node

import (
	"reflect"
	"sort"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/mirror"
	"github.com/shimmy-dev/shimmy/registry"
)

// Mirror is what the reconciler drives: the node's mirror
// (*mirror.Mirror), whose Apply takes a whole plan and returns at once.
type Mirror interface {
	Apply(mirror.Plan) error
}

// DefaultMirrorDebounce is how long the reconciler gathers changes of the
// channels' plans before it applies the node's plan.
const DefaultMirrorDebounce = 200 * time.Millisecond

// planKey is the queue's key of the node's mirror plan: no channel or
// namespace has an empty name.
var planKey = cache.ObjectName{}

// PlanFor is node's mirror plan according to the channels' status.mirror
// (the controller's plans): every channel whose plan lists node is shared
// with the other nodes it lists, and those are the peers, named by their
// node names (a node's certificate carries its node name: the peers'
// identities are their names). A peer listed with different addresses by
// different channels (while the controller catches up with an agent that
// moved) takes the address of the first such channel in namespace/name
// order. Channels whose names the registry cannot take are left out.
func PlanFor(node string, chans []*v1.SharedMemoryChannel) mirror.Plan {
	sorted := append([]*v1.SharedMemoryChannel(nil), chans...)
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	plan := mirror.Plan{Peers: []mirror.Peer{}, Shares: []mirror.Share{}}
	addrs := map[string]string{}
	for _, smc := range sorted {
		mp := smc.Status.Mirror
		if mp == nil || !listed(mp, node) || registry.CheckName(smc.Namespace) != nil || registry.CheckName(smc.Name) != nil {
			continue
		}
		share := mirror.Share{Namespace: smc.Namespace, Channel: smc.Name}
		for _, p := range mp.Peers {
			if p.Name == node || p.Name == "" || contains(share.Peers, p.Name) {
				continue
			}
			share.Peers = append(share.Peers, p.Name)
			if _, ok := addrs[p.Name]; !ok {
				addrs[p.Name] = p.Address
			}
		}
		if len(share.Peers) > 0 {
			sort.Strings(share.Peers)
			plan.Shares = append(plan.Shares, share)
		}
	}
	for name, addr := range addrs {
		plan.Peers = append(plan.Peers, mirror.Peer{Name: name, Addr: addr})
	}
	sort.Slice(plan.Peers, func(i, j int) bool { return plan.Peers[i].Name < plan.Peers[j].Name })
	return plan
}

func listed(mp *v1.MirrorPlan, node string) bool {
	for _, p := range mp.Peers {
		if p.Name == node {
			return true
		}
	}
	return false
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// enqueuePlan asks for the node's plan to be worked out again, after the
// debounce: changes that come together are applied together.
func (r *Reconciler) enqueuePlan() {
	if r.o.Mirror != nil {
		r.queue.AddAfter(planKey, r.o.MirrorDebounce)
	}
}

// mirrorChanged reports whether an update of a channel may change the
// node's plan: status.mirror changed.
func mirrorChanged(old, cur any) bool {
	a, ok1 := old.(*v1.SharedMemoryChannel)
	b, ok2 := cur.(*v1.SharedMemoryChannel)
	return !ok1 || !ok2 || !reflect.DeepEqual(a.Status.Mirror, b.Status.Mirror)
}

// syncMirror applies the node's plan if it differs from the one applied
// last. Apply only records the plan (the mirror's own goroutines open and
// close the links), so no worker waits for a link.
func (r *Reconciler) syncMirror() error {
	chans, err := r.channels.List(labels.Everything())
	if err != nil {
		return err
	}
	plan := PlanFor(r.o.Node, chans)
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if r.applied != nil && reflect.DeepEqual(*r.applied, plan) {
		return nil
	}
	if err := r.o.Mirror.Apply(plan); err != nil {
		// Not retried: only a new plan from the controller can fix it.
		r.log.WithError(err).Error("mirror plan refused")
		return nil
	}
	r.applied = &plan
	r.log.WithFields(logrus.Fields{"peers": len(plan.Peers), "shares": len(plan.Shares)}).Info("mirror plan applied")
	return nil
}
