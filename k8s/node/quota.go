package node

import (
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/registry"
)

// QuotaAnnotation on a Namespace sets the quota of its directory on every
// node: the lines of a namespace's .quota file ("max_channels 16",
// "max_bytes 256M", "max_member_slots 1024"), separated by newlines, commas
// or semicolons. Keys left out take the cluster default (--default-quota).
const QuotaAnnotation = "shimmy.io/quota"

// ParseQuota reads a QuotaAnnotation value over base. Errors wrap
// registry.ErrInvalidConfig.
func ParseQuota(value string, base registry.Quota) (registry.Quota, error) {
	text := strings.NewReplacer(",", "\n", ";", "\n").Replace(value)
	q, err := chanfile.ParseQuota(text, base)
	if err == nil && (q.Channels < 0 || q.Bytes < 0 || q.MemberSlots < 0) {
		err = fmt.Errorf("%w: negative quota in %q", registry.ErrInvalidConfig, value)
	}
	return q, err
}

// wantQuota is the quota the cluster asks for namespace name: its
// annotation over the default, or the default when the Namespace object
// has none (or is not known yet).
func (r *Reconciler) wantQuota(name string) (registry.Quota, error) {
	ns, err := r.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return r.quota, nil
	}
	if err != nil {
		return registry.Quota{}, err
	}
	v, ok := ns.Annotations[QuotaAnnotation]
	if !ok {
		return r.quota, nil
	}
	q, err := ParseQuota(v, r.quota)
	if err != nil {
		return registry.Quota{}, fmt.Errorf("namespace %s: annotation %s: %w", name, QuotaAnnotation, err)
	}
	return q, nil
}

// syncQuota gives the node's directory of namespace name the quota the
// cluster asks for; a namespace the node does not have is left alone (it
// gets its quota when a channel creates it). A bad annotation keeps the
// quota the namespace has and is not retried: the next change of the
// Namespace object comes with an event.
func (r *Reconciler) syncQuota(name string) error {
	ns, err := r.o.Registry.Namespace(name)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	changed, err := r.applyQuota(ns)
	if changed {
		// A channel the old quota refused may fit now: look again at
		// once, not when its backoff ends.
		r.enqueueChannels(name)
	}
	return err
}

// applyQuota sets ns's quota to the one the cluster asks for and reports
// whether it changed.
func (r *Reconciler) applyQuota(ns *registry.Namespace) (bool, error) {
	q, err := r.wantQuota(ns.Name)
	if errors.Is(err, registry.ErrInvalidConfig) {
		r.log.WithError(err).WithField("ns", ns.Name).Warn("quota annotation refused; the namespace keeps its quota")
		return false, nil
	}
	if err != nil || ns.Quota() == q {
		return false, err
	}
	return true, ns.SetQuota(q)
}
