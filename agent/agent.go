// Package agent is the node daemon: it recovers the channels kept in its
// state directory, mounts the FUSE tree of package fs, reaps dead members
// and beats its heartbeat in every ring, and serves metrics.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/fs"
	"github.com/shimmy-dev/shimmy/mountpoint"
	"github.com/shimmy-dev/shimmy/registry"
)

// ErrConfig is wrapped by every configuration error of New.
var ErrConfig = errors.New("agent: invalid configuration")

// Defaults.
const (
	DefaultMountPoint   = "/run/shimmy"
	DefaultStateDir     = "/dev/shm/shimmy"
	DefaultMetricsAddr  = "127.0.0.1:9477"
	DefaultReapInterval = 100 * time.Millisecond
	// MetricsOff as MetricsAddr disables the metrics server (as "" does).
	MetricsOff = "off"
)

// Config configures an Agent.
type Config struct {
	MountPoint string // default "/run/shimmy"
	// StateDir holds every ring (a POSIX shm file) and the metadata of
	// namespaces and channels; default "/dev/shm/shimmy". It must be on
	// tmpfs: it survives an agent crash or restart (not a reboot), which
	// is how a new agent recovers every channel without loss.
	StateDir     string
	MetricsAddr  string         // default "127.0.0.1:9477"; "" or "off" disables; /metrics and /healthz
	Defaults     channel.Config // configuration of new channels (zero fields: channel defaults)
	AllowOther   bool           // mount with allow_other,default_permissions (DefaultConfig: true)
	Log          *logrus.Logger // nil: logrus.StandardLogger()
	ReapInterval time.Duration  // default 100ms: reaping and agent heartbeat period
	Debug        bool           // log every FUSE request
}

// DefaultConfig returns the configuration of a node agent.
func DefaultConfig() Config {
	return Config{
		MountPoint:   DefaultMountPoint,
		StateDir:     DefaultStateDir,
		MetricsAddr:  DefaultMetricsAddr,
		AllowOther:   true,
		ReapInterval: DefaultReapInterval,
	}
}

// Agent is a node agent. Create it with New, start it with Run.
type Agent struct {
	cfg   Config
	log   *logrus.Logger
	reg   *registry.Registry
	ready chan struct{}

	mounted     atomic.Bool
	passthrough atomic.Bool
	running     atomic.Bool
	metricsAddr atomic.Value // string: the address the metrics server listens on
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
	if cfg.MetricsAddr == MetricsOff {
		cfg.MetricsAddr = ""
	}
	switch {
	case !filepath.IsAbs(cfg.MountPoint):
		return nil, fmt.Errorf("%w: mount point %q is not an absolute path", ErrConfig, cfg.MountPoint)
	case !filepath.IsAbs(cfg.StateDir):
		return nil, fmt.Errorf("%w: state directory %q is not an absolute path", ErrConfig, cfg.StateDir)
	case isWithin(cfg.StateDir, cfg.MountPoint) || isWithin(cfg.MountPoint, cfg.StateDir):
		return nil, fmt.Errorf("%w: state directory %q and mount point %q overlap", ErrConfig, cfg.StateDir, cfg.MountPoint)
	case cfg.ReapInterval < 0 || cfg.ReapInterval > time.Minute:
		return nil, fmt.Errorf("%w: reap interval %v (want up to 1m)", ErrConfig, cfg.ReapInterval)
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
	return &Agent{cfg: cfg, log: cfg.Log, ready: make(chan struct{})}, nil
}

func isWithin(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && (rel == "." || !strings.HasPrefix(rel, ".."))
}

// Config returns the validated configuration.
func (a *Agent) Config() Config { return a.cfg }

// Ready is closed once the filesystem is mounted and served.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

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
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	lg := a.log.WithField("op", "run")
	if err := mountpoint.CleanStale(a.cfg.MountPoint); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	reg, err := registry.New(registry.Options{StateDir: a.cfg.StateDir, Defaults: a.cfg.Defaults, Log: a.log})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.reg = reg
	closeReg := true
	defer func() {
		if closeReg {
			reg.Close()
		}
	}()
	if err := reg.Recover(); err != nil {
		return fmt.Errorf("agent: recover channels: %w", err)
	}
	reg.Reap() // heartbeat at once, so clients see a live agent

	var metrics *http.Server
	if a.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("agent: metrics listener: %w", err)
		}
		a.metricsAddr.Store(ln.Addr().String())
		metrics = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metrics.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.WithField("op", "metrics").WithError(err).Error("metrics server stopped")
			}
		}()
		defer metrics.Close()
	}

	server, pt, err := fs.Mount(a.cfg.MountPoint, reg, fs.MountOptions{AllowOther: a.cfg.AllowOther, Debug: a.cfg.Debug, Log: a.log})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.passthrough.Store(pt)
	var st unix.Stat_t
	if err := unix.Stat(a.cfg.MountPoint, &st); err != nil {
		lg.WithError(err).Warn("stat of the new mount")
	}
	a.mounted.Store(true)
	lg.WithFields(logrus.Fields{"mount": a.cfg.MountPoint, "state": a.cfg.StateDir, "passthrough": pt,
		"channels": len(reg.Channels()), "metrics": a.MetricsAddr()}).Info("agent serving")
	close(a.ready)

	reapCtx, stopReap := context.WithCancel(ctx)
	defer stopReap()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.reapLoop(reapCtx)
	}()
	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()
	select {
	case <-ctx.Done():
	case <-served:
		lg.Warn("FUSE connection ended (unmounted from outside?)")
	}
	stopReap()
	wg.Wait()
	a.mounted.Store(false)
	if !a.unmount(server, st.Dev) {
		// Requests may still come for open files: leave the rings mapped.
		closeReg = false
		return fmt.Errorf("agent: FUSE connection at %s did not end; rings left mapped", a.cfg.MountPoint)
	}
	lg.Info("agent stopped")
	return nil
}

func (a *Agent) reapLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.reg.Reap()
		}
	}
}

// unmount takes the mount down. With files still open it detaches the
// mount and aborts the FUSE connection, so those files fail with ENOTCONN
// and no request can reach the rings after the registry closes them. It
// reports false if the connection could not be ended; the caller must then
// keep the rings mapped.
func (a *Agent) unmount(server *fuse.Server, dev uint64) bool {
	lg := a.log.WithField("op", "unmount")
	if err := unix.Unmount(a.cfg.MountPoint, 0); err == nil {
		return waitServed(server, 5*time.Second)
	}
	if err := unix.Unmount(a.cfg.MountPoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		lg.WithError(err).Error("detach mount")
	}
	if err := abortConnection(dev); err != nil {
		lg.WithError(err).Warn("cannot abort the FUSE connection; open files keep it until they close")
	} else {
		lg.Info("files were still open: mount detached and connection aborted")
	}
	return waitServed(server, 5*time.Second)
}

// waitServed waits for the serve loops to end.
func waitServed(server *fuse.Server, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

const fusectl = "/sys/fs/fuse/connections"

// abortConnection writes to the connection's abort file in fusectl
// (mounting fusectl if needed). The connection id is the minor number of
// the mount's device.
func abortConnection(dev uint64) error {
	abort := filepath.Join(fusectl, fmt.Sprint(unix.Minor(dev)), "abort")
	if _, err := os.Stat(abort); err != nil {
		if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount fusectl: %w", err)
		}
	}
	return os.WriteFile(abort, []byte("1"), 0)
}
