package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/mirror"
	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
	"github.com/shimmy-dev/shimmy/rdma/tcp"
	"github.com/shimmy-dev/shimmy/registry"
)

// DefaultPlanPoll is how often the agent looks for a changed plan file.
const DefaultPlanPoll = time.Second

// MirrorConfig configures the mirror, which keeps channels in step with
// the agents of other hosts (docs/remote.md). The mirror runs when
// PlanFile is set, or, with Config.Kubernetes, when TLSDir is: the node
// reconciler then applies the plans the controller writes in the
// channels' status.mirror (docs/kubernetes.md), and PlanFile is refused.
type MirrorConfig struct {
	// Listen is the address the mirror accepts links on (host:port); ""
	// accepts none, and this agent only dials the peers of its plan.
	// Required with Kubernetes: only nodes that report an address take
	// part in the controller's plans.
	Listen string
	// Advertise is the address peers dial, as the node reports it in the
	// channels' status (mirrorAddress), with Kubernetes only; default
	// Listen (with port 0, the port the listener got), which must then
	// name a host, not a wildcard (0.0.0.0, ::, "").
	Advertise string
	// TLSDir is the node's TLS directory: ca.crt, node.crt and node.key
	// (shimmy certs node). The identity in node.crt is this agent's name
	// in its peers' plans; with Kubernetes it must be the node's name.
	// Required with the mirror.
	TLSDir string
	// PlanFile lists the peers and the channels shared with them
	// (mirror.LoadPlan). The agent reloads it when its content changes
	// (checked every PlanPoll) and on ReloadPlan (SIGHUP in the node
	// binary); an invalid new plan is logged and the previous one kept.
	PlanFile string
	// PlanPoll is how often the plan file is checked; default
	// DefaultPlanPoll.
	PlanPoll time.Duration
	// Timeout is how long a link may hear nothing from its peer before it
	// is closed and dialed again; default rdma.DefaultTimeout.
	Timeout time.Duration
}

// enabled reports whether the mirror runs (kube: under Kubernetes).
func (c MirrorConfig) enabled(kube bool) bool { return c.PlanFile != "" || kube && c.TLSDir != "" }

// check validates c at New: the TLS directory and the plan load, so that a
// wrong flag fails at start and not when the first peer dials. kube is
// the Kubernetes configuration, nil without.
func (c MirrorConfig) check(kube *KubernetesConfig) error {
	if kube != nil && c.PlanFile != "" {
		return fmt.Errorf("%w: a mirror plan file with Kubernetes: the plans then come from the channels' status.mirror", ErrConfig)
	}
	if !c.enabled(kube != nil) {
		if c.Listen != "" || c.TLSDir != "" || c.Advertise != "" {
			return fmt.Errorf("%w: mirror listen or advertised address, or TLS directory, without a plan file (or Kubernetes)", ErrConfig)
		}
		return nil
	}
	if c.TLSDir == "" {
		return fmt.Errorf("%w: the mirror needs a TLS directory (shimmy certs node --out DIR)", ErrConfig)
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("%w: mirror listen address %q: %v", ErrConfig, c.Listen, err)
		}
	}
	if err := c.checkAdvertise(kube != nil); err != nil {
		return err
	}
	if c.PlanPoll < 0 || c.Timeout < 0 {
		return fmt.Errorf("%w: negative mirror plan poll %v or timeout %v", ErrConfig, c.PlanPoll, c.Timeout)
	}
	node, err := certs.LoadNode(c.TLSDir)
	if err != nil {
		return fmt.Errorf("%w: mirror TLS directory: %w", ErrConfig, err)
	}
	if kube != nil && node.Identity() != kube.NodeName {
		return fmt.Errorf("%w: the mirror's certificate names %q, not this node (%q): under Kubernetes peers know each other by node name (shimmy certs node --name %s)",
			ErrConfig, node.Identity(), kube.NodeName, kube.NodeName)
	}
	if c.PlanFile == "" {
		return nil
	}
	if _, err := mirror.LoadPlan(c.PlanFile); err != nil {
		return fmt.Errorf("%w: mirror plan: %w", ErrConfig, err)
	}
	return nil
}

// checkAdvertise checks that, under Kubernetes, the node has an address
// its peers can dial.
func (c MirrorConfig) checkAdvertise(kube bool) error {
	switch {
	case !kube && c.Advertise != "":
		return fmt.Errorf("%w: a mirror advertised address is for Kubernetes (a plan file names each peer's address)", ErrConfig)
	case !kube:
		return nil
	case c.Listen == "":
		return fmt.Errorf("%w: under Kubernetes the mirror needs a listen address: the controller's plans list only nodes that report one", ErrConfig)
	case c.Advertise != "":
		host, port, err := net.SplitHostPort(c.Advertise)
		if err != nil || wildcard(host) || port == "0" || port == "" {
			return fmt.Errorf("%w: mirror advertised address %q: want host:port, a host peers can dial and a port", ErrConfig, c.Advertise)
		}
		return nil
	}
	if host, _, _ := net.SplitHostPort(c.Listen); wildcard(host) {
		return fmt.Errorf("%w: the mirror listens on all addresses (%s): give the address peers dial (advertised address)", ErrConfig, c.Listen)
	}
	return nil
}

// wildcard reports whether host names no host: "", 0.0.0.0 or ::.
func wildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// advertised is the address peers dial: Advertise, else Listen with the
// port the listener got.
func (c MirrorConfig) advertised(ln net.Addr) string {
	if c.Advertise != "" || ln == nil {
		return c.Advertise
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	_, port, _ := net.SplitHostPort(ln.String())
	return net.JoinHostPort(host, port)
}

// mirrorPart is the running mirror and the plan file it follows (none
// under Kubernetes: the node reconciler applies the plans).
type mirrorPart struct {
	cfg    MirrorConfig
	log    logrus.FieldLogger
	m      *mirror.Mirror
	auth   atomic.Pointer[mirror.Mirror] // m, for the transport's accept goroutines, once set
	tr     rdma.Transport
	reload chan struct{}

	mu   sync.Mutex
	plan []byte // the content of the plan applied last
}

// newMirror builds the transport and the mirror over reg and applies the
// plan file.
func newMirror(cfg MirrorConfig, reg *registry.Registry, log logrus.FieldLogger) (*mirrorPart, error) {
	if cfg.PlanPoll == 0 {
		cfg.PlanPoll = DefaultPlanPoll
	}
	p := &mirrorPart{cfg: cfg, log: log.WithField("component", "mirror"), reload: make(chan struct{}, 1)}
	node, err := certs.LoadNode(cfg.TLSDir)
	if err != nil {
		return nil, err
	}
	// The transport exists before the mirror whose plan says which peers
	// it accepts: Authorize asks the mirror once it is there.
	tr, err := tcp.New(rdma.Options{
		Certificate: node.Pair.TLS(),
		CA:          node.CA,
		Timeout:     cfg.Timeout,
		Authorize: func(peer string) error {
			// mirror.New listens at once: a peer may knock before m is set.
			m := p.auth.Load()
			if m == nil {
				return errors.New("mirror not started")
			}
			return m.Authorize(peer)
		},
		OnReject: func(remote string, err error) {
			p.log.WithFields(logrus.Fields{"remote": remote}).WithError(err).Warn("refused a peer")
		},
		Log: log,
	})
	if err != nil {
		return nil, err
	}
	m, err := mirror.New(mirror.Options{Registry: reg, Transport: tr, Self: node.Identity(), Listen: cfg.Listen, Log: log})
	if err != nil {
		tr.Close()
		return nil, err
	}
	p.m, p.tr = m, tr
	p.auth.Store(m)
	if cfg.PlanFile != "" {
		if err := p.apply(); err != nil {
			tr.Close()
			return nil, err
		}
	}
	p.log.WithFields(logrus.Fields{"self": node.Identity(), "listen": cfg.Listen, "plan": cfg.PlanFile}).Info("mirror configured")
	return p, nil
}

// apply loads the plan file and applies it if its content changed.
func (p *mirrorPart) apply() error {
	b, err := os.ReadFile(p.cfg.PlanFile)
	if err != nil {
		return fmt.Errorf("mirror plan: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plan != nil && bytes.Equal(b, p.plan) {
		return nil
	}
	plan, err := mirror.ParsePlan(b)
	if err == nil {
		err = p.m.Apply(plan)
	}
	if err != nil {
		return fmt.Errorf("mirror plan %s: %w", p.cfg.PlanFile, err)
	}
	p.plan = b
	p.log.WithFields(logrus.Fields{"peers": len(plan.Peers), "shares": len(plan.Shares)}).Info("mirror plan applied")
	return nil
}

// run runs the mirror and follows the plan file until ctx is done.
func (p *mirrorPart) run(ctx context.Context) error {
	defer p.tr.Close()
	if p.cfg.PlanFile == "" {
		return p.m.Run(ctx)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.m.Run(ctx) }()
	tick := time.NewTicker(p.cfg.PlanPoll)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case <-tick.C:
		case <-p.reload:
		}
		if err := p.apply(); err != nil {
			p.log.WithError(err).Error("plan not applied; the previous plan stays")
		}
	}
}

// ReloadPlan makes a running agent re-read its mirror plan file now (the
// node binary calls it on SIGHUP). It does nothing without a plan file.
func (a *Agent) ReloadPlan() {
	if p := a.mirror.Load(); p != nil {
		select {
		case p.reload <- struct{}{}:
		default:
		}
	}
}

// LinkStats returns the state of each mirror link (one per peer of the
// plan), sorted by peer; nil without a mirror.
func (a *Agent) LinkStats() []mirror.LinkStats {
	if p := a.mirror.Load(); p != nil {
		return p.m.Stats()
	}
	return nil
}
