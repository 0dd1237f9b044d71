// Package agent is the node daemon's composition root: it builds the
// registry (which recovers the channels kept in the state directory), mounts
// the front end it is given (Config.FrontEnd: the FUSE tree of package fs in
// the node binary), runs the reaper (dead members, the heartbeat in every
// ring), the mirror (channels kept in step with other hosts, by a plan file
// or by the Kubernetes controller's plans) and the metrics server under
// one errgroup, and has one shutdown path (unmount, or detach and abort
// the connection, via package mountpoint). With Config.PodDir it keeps the
// pods' view of the namespaces (podbind.go).
// It does not import fs: the binary that links the FUSE adapter hands it in.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/metricsserver"
	"github.com/shimmy-dev/shimmy/mountpoint"
	"github.com/shimmy-dev/shimmy/registry"
)

// ErrConfig is wrapped by every configuration error of New.
var ErrConfig = errors.New("agent: invalid configuration")

// Defaults.
const (
	DefaultMountPoint   = mountpoint.Default
	DefaultStateDir     = "/dev/shm/shimmy"
	DefaultMetricsAddr  = "127.0.0.1:9477"
	DefaultReapInterval = 100 * time.Millisecond
	// MetricsOff as MetricsAddr disables the metrics server (as "" does).
	MetricsOff = metricsserver.Off
)

// FrontEnd serves reg's tree at mountPoint and returns once the kernel has
// the mount: wait returns when the connection ends (unmounted, or aborted
// by the agent's shutdown), passthrough reports whether ring files are
// mapped through the mount as the shared memory itself. fs.FrontEnd is the
// node binary's.
type FrontEnd func(mountPoint string, reg *registry.Registry, log logrus.FieldLogger) (wait func(), passthrough bool, err error)

// Config configures an Agent.
type Config struct {
	// FrontEnd serves the channels at MountPoint (required; in the node
	// binary fs.FrontEnd, which takes the mount options such as
	// allow_other).
	FrontEnd   FrontEnd
	MountPoint string // default "/run/shimmy"
	// StateDir holds every ring (a POSIX shm file) and the metadata of
	// namespaces and channels; default "/dev/shm/shimmy". It must be on
	// tmpfs: it survives an agent crash or restart (not a reboot), which
	// is how a new agent recovers every channel without loss.
	StateDir     string
	MetricsAddr  string             // default "127.0.0.1:9477"; "" or "off" disables; /metrics and /healthz
	Defaults     channel.Config     // configuration of new channels (zero fields: channel defaults)
	Quota        *registry.Quota    // quota of new namespaces; nil: registry.DefaultQuota (docs/limits.md)
	Log          logrus.FieldLogger // nil: logrus.StandardLogger(); each part adds its component field
	ReapInterval time.Duration      // default 100ms: reaping and agent heartbeat period
	Mirror       MirrorConfig       // channels kept in step with other hosts; off without a plan file or Kubernetes
	// Kubernetes, if set, runs the node reconciler (KubernetesConfig).
	Kubernetes *KubernetesConfig
	// CPUProfile, if set, is a file Run writes a CPU profile of the
	// agent's whole run to (runtime/pprof): where a mirror's time goes.
	CPUProfile string
	// PodDir, if set, is kept as the pods' view of the namespaces: a
	// bind of <MountPoint>/<ns> at <PodDir>/<ns> for each, which a new
	// agent covers with its own so that running pods see it
	// (mountpoint.PodBinds; DefaultPodDir with --kubernetes). Unset: none.
	PodDir string
}

// DefaultConfig returns the configuration of a node agent.
func DefaultConfig() Config {
	return Config{
		MountPoint:   DefaultMountPoint,
		StateDir:     DefaultStateDir,
		MetricsAddr:  DefaultMetricsAddr,
		ReapInterval: DefaultReapInterval,
	}
}

// Agent is a node agent. Create it with New, start it with Run.
type Agent struct {
	cfg   Config
	log   logrus.FieldLogger
	reg   *registry.Registry
	ready chan struct{}
	done  chan struct{}

	mounted     atomic.Bool
	passthrough atomic.Bool
	running     atomic.Bool
	metricsAddr atomic.Value // string: the address the metrics server listens on
	mirror      atomic.Pointer[mirrorPart]
}

// New validates cfg; it does not mount yet.
func New(cfg Config) (*Agent, error) {
	if cfg.MountPoint == "" {
		cfg.MountPoint = DefaultMountPoint
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = DefaultReapInterval
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if metricsserver.Disabled(cfg.MetricsAddr) {
		cfg.MetricsAddr = ""
	}
	switch {
	case cfg.FrontEnd == nil:
		return nil, fmt.Errorf("%w: no front end (set Config.FrontEnd, e.g. to fs.FrontEnd(fs.MountOptions{}))", ErrConfig)
	case !filepath.IsAbs(cfg.MountPoint):
		return nil, fmt.Errorf("%w: mount point %q is not an absolute path", ErrConfig, cfg.MountPoint)
	case !filepath.IsAbs(cfg.StateDir):
		return nil, fmt.Errorf("%w: state directory %q is not an absolute path", ErrConfig, cfg.StateDir)
	case isWithin(cfg.StateDir, cfg.MountPoint) || isWithin(cfg.MountPoint, cfg.StateDir):
		return nil, fmt.Errorf("%w: state directory %q and mount point %q overlap", ErrConfig, cfg.StateDir, cfg.MountPoint)
	case cfg.PodDir != "" && !filepath.IsAbs(cfg.PodDir):
		return nil, fmt.Errorf("%w: pod directory %q is not an absolute path", ErrConfig, cfg.PodDir)
	case cfg.PodDir != "" && (overlap(cfg.PodDir, cfg.MountPoint) || overlap(cfg.PodDir, cfg.StateDir)):
		return nil, fmt.Errorf("%w: pod directory %q overlaps the mount point or the state directory", ErrConfig, cfg.PodDir)
	case cfg.ReapInterval < 0 || cfg.ReapInterval > time.Minute:
		return nil, fmt.Errorf("%w: reap interval %v (want up to 1m)", ErrConfig, cfg.ReapInterval)
	}
	if cfg.Kubernetes != nil {
		if err := cfg.Kubernetes.validate(); err != nil {
			return nil, err
		}
	}
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("%w: metrics address %q: %v", ErrConfig, cfg.MetricsAddr, err)
		}
	}
	def := cfg.Defaults
	def.Epoch = 0
	if err := def.WithDefaults().Validate(); err != nil {
		return nil, fmt.Errorf("%w: default channel configuration: %w", ErrConfig, err)
	}
	if lease := def.WithDefaults().Lease; cfg.ReapInterval >= lease {
		return nil, fmt.Errorf("%w: reap interval %v must be shorter than the channel lease %v", ErrConfig, cfg.ReapInterval, lease)
	}
	if err := cfg.Mirror.check(cfg.Kubernetes); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, log: cfg.Log, ready: make(chan struct{}), done: make(chan struct{})}, nil
}

func overlap(a, b string) bool { return isWithin(a, b) || isWithin(b, a) }

func isWithin(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && (rel == "." || !strings.HasPrefix(rel, ".."))
}

// Config returns the validated configuration.
func (a *Agent) Config() Config { return a.cfg }

// Ready is closed once the filesystem is mounted and served.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Done is closed when Run has returned.
func (a *Agent) Done() <-chan struct{} { return a.done }

// Registry returns the node's registry once Ready is closed (nil before):
// in-process parts and measurements reach the channels through it.
func (a *Agent) Registry() *registry.Registry {
	select {
	case <-a.ready:
		return a.reg
	default:
		return nil
	}
}

// Passthrough reports whether ring files are served by FUSE passthrough
// (valid after Ready).
func (a *Agent) Passthrough() bool { return a.passthrough.Load() }

// MetricsAddr returns the address the metrics server listens on (after
// Ready; "" if disabled). Useful with a ":0" port.
func (a *Agent) MetricsAddr() string {
	s, _ := a.metricsAddr.Load().(string)
	return s
}

// Run clears a stale mount at the mount point, recovers the channels of
// the state directory, mounts, and serves until ctx is done; then it
// unmounts and returns nil. An Agent runs once.
//
// Its parts (the front end's server, the reaper, the metrics server, the
// Kubernetes node reconciler) run under one errgroup: when any of them
// ends, for an error or because the mount went away, the others are
// stopped and the one shutdown path runs
// (unmount, or detach and abort the FUSE connection, then unmap the
// rings). Run returns the first part's error.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	defer close(a.done)
	lg := a.log.WithField("component", "agent")
	if err := checkPrivilege(); err != nil {
		return err
	}
	if a.cfg.CPUProfile != "" {
		stop, err := startCPUProfile(a.cfg.CPUProfile)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer stop()
	}
	if err := mountpoint.CleanStale(a.cfg.MountPoint); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	pods := mountpoint.PodBinds{Dir: a.cfg.PodDir, Source: a.cfg.MountPoint}
	if pods.Dir != "" {
		if err := pods.Prepare(); err != nil {
			return fmt.Errorf("agent: pod directory: %w", err)
		}
	}
	reg, err := registry.New(registry.Options{StateDir: a.cfg.StateDir, Defaults: a.cfg.Defaults, Quota: a.cfg.Quota, Log: a.log})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.reg = reg
	if err := reg.Recover(); err != nil {
		reg.Close()
		return fmt.Errorf("agent: recover channels: %w", err)
	}
	reg.Reap() // heartbeat at once, so clients see a live agent
	if a.cfg.Mirror.enabled(a.cfg.Kubernetes != nil) {
		mp, err := newMirror(a.cfg.Mirror, reg, a.log)
		if err != nil {
			reg.Close()
			return fmt.Errorf("agent: mirror: %w", err)
		}
		a.mirror.Store(mp)
	}
	var kube func(context.Context) error
	if a.cfg.Kubernetes != nil {
		if kube, err = a.kubernetesPart(reg, a.mirror.Load()); err != nil {
			if mp := a.mirror.Load(); mp != nil {
				mp.tr.Close()
			}
			reg.Close()
			return fmt.Errorf("agent: %w", err)
		}
	}

	var metrics net.Listener
	if a.cfg.MetricsAddr != "" {
		if metrics, err = net.Listen("tcp", a.cfg.MetricsAddr); err != nil {
			reg.Close()
			return fmt.Errorf("agent: metrics listener: %w", err)
		}
		a.metricsAddr.Store(metrics.Addr().String())
	}
	wait, pt, err := a.cfg.FrontEnd(a.cfg.MountPoint, reg, a.log)
	if err != nil {
		if metrics != nil {
			metrics.Close()
		}
		reg.Close()
		return fmt.Errorf("agent: %w", err)
	}
	dev, err := mountpoint.Device(a.cfg.MountPoint)
	if err != nil {
		lg.WithError(err).Warn("stat of the new mount")
	}
	served := make(chan struct{})
	go func() {
		wait()
		close(served)
	}()
	unbind := func() {}
	if pods.Dir != "" && dev != 0 {
		pods.Dev = dev
		unbind = startPodBinds(reg, pods, a.log) // stops the binding; the binds stay: see unmount
	}
	a.passthrough.Store(pt)
	a.mounted.Store(true)
	lg.WithFields(logrus.Fields{"mount": a.cfg.MountPoint, "state": a.cfg.StateDir, "passthrough": pt,
		"channels": len(reg.Channels()), "metrics": a.MetricsAddr()}).Info("agent serving")
	close(a.ready)

	g, gctx := errgroup.WithContext(ctx)
	gctx, stop := context.WithCancel(gctx)
	defer stop()
	part := func(name string, run func(context.Context) error) {
		g.Go(func() error {
			defer stop() // any part ending stops the others
			if err := run(gctx); err != nil {
				return fmt.Errorf("agent: %s: %w", name, err)
			}
			return nil
		})
	}
	part("reaper", func(ctx context.Context) error { return reg.RunReaper(ctx, a.cfg.ReapInterval) })
	part("fuse", func(ctx context.Context) error {
		select {
		case <-ctx.Done():
		case <-served:
			lg.Warn("FUSE connection ended (unmounted from outside?)")
		}
		return nil
	})
	if mp := a.mirror.Load(); mp != nil {
		part("mirror", mp.run)
	}
	if metrics != nil {
		part("metrics", func(ctx context.Context) error { return a.serveMetrics(ctx, metrics) })
	}
	if kube != nil {
		part("kubernetes", kube)
	}
	err = g.Wait()

	a.mounted.Store(false)
	unbind()
	if !a.unmount(served, dev, pods.Dev != 0) {
		// Requests may still come for open files: leave the rings mapped.
		return errors.Join(err, fmt.Errorf("agent: FUSE connection at %s did not end; rings left mapped", a.cfg.MountPoint))
	}
	reg.Close()
	lg.Info("agent stopped")
	return err
}

// Start runs Run in the background, for a program or a test that embeds
// an agent. It returns once the agent serves (Ready), or with Run's error if
// Run ends first, or with ctx's error if ctx ends first (Run is then
// stopped): ctx bounds the wait only. stop cancels Run, waits for it and
// returns its error; it may be called more than once.
func (a *Agent) Start(ctx context.Context) (stop func() error, err error) {
	rctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(rctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-errc })
		return runErr
	}
	select {
	case <-a.ready:
		return stop, nil
	case err := <-errc:
		cancel()
		if err == nil {
			err = errors.New("agent: Run ended before serving")
		}
		return nil, err
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), stop())
	}
}

// serveMetrics serves /metrics and /healthz on ln until ctx is done.
func (a *Agent) serveMetrics(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}

// unmount takes the mount down (mountpoint.Teardown: with files still
// open, detached and its FUSE connection aborted, so that no request can
// reach the rings after the registry unmaps them) and waits for the serve
// loops to end. It reports false if they did not; the caller must then
// keep the rings mapped.
//
// Binds of the mount outlive the unmount and keep the connection: the pod
// directory's (bound), which stay so that the next agent covers them and
// running pods see its mount, and pods' volumes of the mount itself. The
// connection is then aborted, as a crash would end it.
func (a *Agent) unmount(served <-chan struct{}, dev uint64, bound bool) bool {
	lg := a.log.WithFields(logrus.Fields{"component": "agent", "op": "unmount"})
	res, err := mountpoint.Teardown(a.cfg.MountPoint, dev)
	switch {
	case res == mountpoint.Detached:
		lg.WithError(err).Warn("cannot abort the FUSE connection; open files keep it until they close")
	case err != nil:
		lg.WithError(err).Error("detach mount")
	case res == mountpoint.Aborted:
		lg.Info("files were still open: mount detached and connection aborted")
	}
	if res == mountpoint.Unmounted && dev != 0 && (bound || !closedWithin(served, time.Second)) {
		if err := mountpoint.AbortFUSE(dev); err != nil {
			lg.WithError(err).Warn("the mount is still bound elsewhere and its connection cannot be aborted")
		} else {
			lg.Debug("the mount is still bound elsewhere (pod directory, pods): connection aborted")
		}
	}
	return closedWithin(served, 5*time.Second)
}

// closedWithin reports whether c is closed within d.
func closedWithin(c <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c:
		return true
	case <-t.C:
		return false
	}
}
