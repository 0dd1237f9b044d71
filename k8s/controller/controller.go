package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/webhook/serving"
)

// Defaults of Config.
const (
	DefaultLeaseNamespace = "shimmy-system"
	DefaultLeaseName      = "shimmy-controller"
	DefaultLeaseDuration  = 15 * time.Second
	DefaultRenewDeadline  = 10 * time.Second
	DefaultRetryPeriod    = 2 * time.Second
	DefaultMetricsAddr    = ":9478"
	DefaultWorkers        = 2
	// MetricsOff as MetricsAddr disables the metrics server (as "" does).
	MetricsOff = "off"
)

// ErrConfig marks an invalid Config.
var ErrConfig = errors.New("controller: invalid configuration")

// ErrLostLeadership: the replica could not renew its lease while running
// and stopped writing; its process should exit and be restarted, to stand
// for election again with fresh caches.
var ErrLostLeadership = errors.New("controller: lost leadership")

// Config configures a Controller.
type Config struct {
	Kube *rest.Config // the API server and the controller's identity (required)
	// The Lease that elects the one replica that writes: a replica that
	// does not hold it only waits.
	LeaseNamespace, LeaseName string
	// Identity of this replica in the Lease; default hostname_pid.
	Identity string
	// Leader election timing (client-go leaderelection): a leader that
	// cannot renew within RenewDeadline stops; others take over once
	// LeaseDuration has passed since the last renewal (at once when the
	// leader steps down cleanly).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// MetricsAddr serves /metrics and /healthz; "" or "off" disables.
	MetricsAddr       string
	Workers           int
	NodeReportTimeout time.Duration // see DefaultNodeReportTimeout
	// Webhook, if set, serves the pod-wiring admission webhook from every
	// replica (package k8s/webhook/serving); its Kube and Shimmy clients
	// and Log are the controller's, its Namespace defaults to
	// LeaseNamespace. The leader keeps its certificate and caBundle.
	Webhook *serving.Options
	Log     logrus.FieldLogger
}

// DefaultConfig is a Config with every default but Kube.
func DefaultConfig() Config {
	return Config{
		LeaseNamespace: DefaultLeaseNamespace, LeaseName: DefaultLeaseName,
		LeaseDuration: DefaultLeaseDuration, RenewDeadline: DefaultRenewDeadline, RetryPeriod: DefaultRetryPeriod,
		MetricsAddr: DefaultMetricsAddr, Workers: DefaultWorkers, NodeReportTimeout: DefaultNodeReportTimeout,
	}
}

// Controller runs a Reconciler while it holds the Lease.
type Controller struct {
	cfg     Config
	log     logrus.FieldLogger
	kube    kubernetes.Interface
	rec     *Reconciler
	metrics *metrics
	webhook *serving.Server // nil: not served
	addr    atomic.Value    // string: the metrics server's address
}

// New checks cfg and builds a Controller; Run (once) runs it.
func New(cfg Config) (*Controller, error) {
	d := DefaultConfig()
	if cfg.Kube == nil {
		return nil, fmt.Errorf("%w: no API server configuration", ErrConfig)
	}
	if cfg.LeaseNamespace == "" || cfg.LeaseName == "" {
		return nil, fmt.Errorf("%w: lease namespace and name are required", ErrConfig)
	}
	if cfg.Identity == "" {
		host, _ := os.Hostname()
		cfg.Identity = fmt.Sprintf("%s_%d", host, os.Getpid())
	}
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.LeaseDuration, d.LeaseDuration}, {&cfg.RenewDeadline, d.RenewDeadline}, {&cfg.RetryPeriod, d.RetryPeriod}} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	// client-go's own rule, checked here so that New refuses what Run would.
	if cfg.LeaseDuration <= cfg.RenewDeadline || float64(cfg.RenewDeadline) <= leaderelection.JitterFactor*float64(cfg.RetryPeriod) {
		return nil, fmt.Errorf("%w: want lease duration > renew deadline > %.1f × retry period", ErrConfig, leaderelection.JitterFactor)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = d.Workers
	}
	if cfg.MetricsAddr == MetricsOff {
		cfg.MetricsAddr = ""
	}
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("%w: metrics address %q: %v", ErrConfig, cfg.MetricsAddr, err)
		}
	}
	var log logrus.FieldLogger = logrus.StandardLogger()
	if cfg.Log != nil {
		log = cfg.Log
	}
	kcfg := rest.CopyConfig(cfg.Kube)
	kcfg.UserAgent = "shimmy-controller"
	kube, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	shimmy, err := versioned.NewForConfig(kcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c := &Controller{cfg: cfg, log: log.WithFields(logrus.Fields{"component": "k8s-controller", "identity": cfg.Identity}), kube: kube, metrics: newMetrics()}
	if cfg.Webhook != nil {
		o := *cfg.Webhook
		o.Kube, o.Shimmy, o.Log = kube, shimmy, log
		if o.Namespace == "" {
			o.Namespace = cfg.LeaseNamespace
		}
		if c.webhook, err = serving.New(o); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	c.rec, err = NewReconciler(Options{Kube: kube, Shimmy: shimmy, Log: log, NodeReportTimeout: cfg.NodeReportTimeout, OnWrite: c.metrics.writes.Inc})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// MetricsAddr returns the address the metrics server listens on once Run
// has started it ("" before, or when disabled).
func (c *Controller) MetricsAddr() string {
	addr, _ := c.addr.Load().(string)
	return addr
}

// Run stands for election and reconciles while leading, until ctx ends
// (nil) or leadership is lost (ErrLostLeadership). On ctx's end a leader
// stops its workers first and then releases the Lease, so that no write of
// this replica follows the next leader's first.
func (c *Controller) Run(ctx context.Context) error {
	watchdog := leaderelection.NewLeaderHealthzAdaptor(c.cfg.RenewDeadline)
	if c.webhook != nil {
		// Every replica serves, leader or not.
		ln, err := c.webhook.Listen()
		if err != nil {
			return fmt.Errorf("controller: %w", err)
		}
		wctx, stopWebhook := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := c.webhook.Serve(wctx, ln); err != nil {
				c.log.WithError(err).Error("webhook server stopped")
			}
		}()
		defer func() { stopWebhook(); <-done }()
	}
	if c.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", c.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("controller: metrics: %w", err)
		}
		c.addr.Store(ln.Addr().String())
		srv := &http.Server{Handler: c.metrics.handler(watchdog, c.ready), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}

	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events(c.cfg.LeaseNamespace)})
	lock := &resourcelock.LeaseLock{
		LeaseMeta: metav1.ObjectMeta{Namespace: c.cfg.LeaseNamespace, Name: c.cfg.LeaseName},
		Client:    c.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{
			Identity:      c.cfg.Identity,
			EventRecorder: events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: FieldManager}),
		},
	}

	// The election outlives ctx until the workers have stopped. le.Run
	// starts OnStartedLeading in a goroutine of its own, which may run
	// late: once stopping is set it returns at once.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	var (
		mu       sync.Mutex
		stopping bool
		running  sync.WaitGroup
	)
	begin := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if !stopping {
			running.Add(1)
		}
		return !stopping
	}
	stopWorkers := func() {
		mu.Lock()
		stopping = true
		mu.Unlock()
		running.Wait()
	}
	defer context.AfterFunc(ctx, func() { stopWorkers(); stopElection() })()
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            c.cfg.LeaseName,
		LeaseDuration:   c.cfg.LeaseDuration,
		RenewDeadline:   c.cfg.RenewDeadline,
		RetryPeriod:     c.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		WatchDog:        watchdog,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				if begin() {
					defer running.Done()
					c.lead(ctx, lctx)
				}
			},
			OnStoppedLeading: func() { c.metrics.leader.Set(0) },
			OnNewLeader: func(id string) {
				c.log.WithField("leader", id).Info("leader elected")
			},
		},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	watchdog.SetLeaderElection(le)
	c.log.WithFields(logrus.Fields{"lease": c.cfg.LeaseNamespace + "/" + c.cfg.LeaseName, "metrics": c.MetricsAddr()}).Info("controller standing for election")
	le.Run(electCtx)
	stopWorkers()
	if ctx.Err() == nil {
		return ErrLostLeadership
	}
	return nil
}

// WebhookAddr returns the address the webhook listens on once Run has
// started it ("" before, or when not served).
func (c *Controller) WebhookAddr() string {
	if c.webhook == nil {
		return ""
	}
	return c.webhook.Addr()
}

// ready is nil when this replica can answer the webhook (always, when it
// serves none): what the readiness probe asks, so that the Service sends
// AdmissionReviews only to replicas that have a certificate and a synced
// view of the channels.
func (c *Controller) ready() error {
	if c.webhook == nil {
		return nil
	}
	return c.webhook.Ready()
}

// lead runs the reconciler, and the webhook's certificate upkeep, until
// ctx ends or leadership (lctx) is lost.
func (c *Controller) lead(ctx, lctx context.Context) {
	c.metrics.leader.Set(1)
	c.log.Info("leading: reconciling")
	rctx, cancel := context.WithCancel(lctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	if c.webhook != nil {
		done := make(chan struct{})
		go func() { defer close(done); c.webhook.Lead(rctx) }()
		defer func() { cancel(); <-done }()
	}
	if err := c.rec.Run(rctx, c.cfg.Workers); err != nil && ctx.Err() == nil && lctx.Err() == nil {
		c.log.WithError(err).Error("reconciler stopped")
	}
	c.metrics.leader.Set(0)
}

type metrics struct {
	leader prometheus.Gauge
	writes prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shimmy_controller_leader", Help: "1 while this replica holds the Lease and reconciles."}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{Name: "shimmy_controller_status_writes_total", Help: "Channel status writes (server-side apply) by this replica."}),
	}
}

// handler serves /metrics from a private registry, /healthz, which
// fails when this replica leads but has not renewed the Lease for longer
// than the lease duration plus the renew deadline (a stuck leader), and
// /readyz, which fails while ready does (the webhook cannot answer).
func (m *metrics) handler(watchdog *leaderelection.HealthzAdaptor, ready func() error) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.leader, m.writes, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := watchdog.Check(r); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	})
	return mux
}
