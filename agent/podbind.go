package agent

import (
	"errors"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/mountpoint"
	"github.com/shimmy-dev/shimmy/registry"
)

// DefaultPodDir is the pod directory of an agent run with --kubernetes
// (Config.PodDir), the host path the admission webhook gives pods.
const DefaultPodDir = mountpoint.DefaultPodDir

// podBinds keeps Config.PodDir in step with the registry's namespaces:
// one bind of <mount>/<ns> at <pod dir>/<ns> from this agent's mount,
// which replaces the layers earlier agents left (mountpoint.PodBinds).
type podBinds struct {
	reg *registry.Registry
	log logrus.FieldLogger

	mu sync.Mutex // one change of the pod directory at a time
	pb mountpoint.PodBinds
}

// startPodBinds binds every namespace and then each one created, and
// removes the layers of each one removed, until the returned cancel.
func startPodBinds(reg *registry.Registry, pb mountpoint.PodBinds, log logrus.FieldLogger) (cancel func()) {
	p := &podBinds{reg: reg, pb: pb, log: log.WithFields(logrus.Fields{"component": "agent", "pod_dir": pb.Dir})}
	cancel = reg.Subscribe(0, p.onEvent) // first, so that no namespace is missed
	p.sync()
	return cancel
}

func (p *podBinds) onEvent(e registry.Event) {
	switch e.Kind {
	case registry.NamespaceCreated:
		p.mu.Lock()
		p.bind(e.Namespace)
		p.mu.Unlock()
	case registry.NamespaceRemoved:
		p.mu.Lock()
		p.remove(e.Namespace)
		p.mu.Unlock()
	case registry.Overflow:
		p.sync()
	}
}

// sync binds every namespace and removes the directories of namespaces
// that no longer exist (their state directory is gone).
func (p *podBinds) sync() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ns := range p.reg.Namespaces() {
		p.bind(ns.Name)
	}
	dirs, err := p.pb.Namespaces()
	if err != nil {
		p.log.WithError(err).Error("list the pod directory")
		return
	}
	for _, d := range dirs {
		if _, err := p.reg.Namespace(d); err != nil {
			p.remove(d)
		}
	}
}

func (p *podBinds) bind(ns string) {
	lg := p.log.WithField("ns", ns)
	n, err := p.pb.Bind(ns)
	if errors.Is(err, mountpoint.ErrLayersKept) {
		lg.WithError(err).WithField("layers", n).Warn("namespace bound in the pod directory on top of dead layers, which stay until the namespace is removed")
		return
	}
	if err != nil {
		lg.WithError(err).Error("pods cannot reach the namespace through the pod directory")
		return
	}
	lg.WithField("layers", n).Debug("namespace bound in the pod directory")
}

func (p *podBinds) remove(ns string) {
	if err := p.pb.Remove(ns); err != nil {
		p.log.WithField("ns", ns).WithError(err).Error("remove a namespace from the pod directory")
	}
}
