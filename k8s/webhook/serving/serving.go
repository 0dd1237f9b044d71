// Package serving serves the pod-wiring webhook (k8s/webhook) over TLS, as
// every replica of `shimmy controller` does. The serving certificate is
// either mounted (a directory with tls.crt, tls.key and optionally ca.crt,
// as a Secret volume or cert-manager gives) or provisioned by the
// controller: a CA and a certificate for the Service's DNS names kept in a
// Secret, so that replicas and restarts share them. Every replica reads
// the certificate and serves; the leader alone (Lead) writes the Secret
// and keeps the caBundle of the MutatingWebhookConfiguration in step.
package serving

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/client/informers/externalversions"
	"github.com/shimmy-dev/shimmy/k8s/webhook"
)

// Defaults of Options.
const (
	DefaultListen        = ":9443"
	DefaultSecret        = "shimmy-webhook-tls"
	DefaultService       = "shimmy-controller"
	DefaultWebhookConfig = "shimmy-controller"
	DefaultRefresh       = 30 * time.Second
	DefaultValidity      = 365 * 24 * time.Hour
	// Path is where the API server posts AdmissionReviews (the
	// MutatingWebhookConfiguration's clientConfig.service.path).
	Path = "/mutate"
)

// ErrNotReady: no certificate loaded yet, or the channel cache not synced.
var ErrNotReady = errors.New("webhook: not ready")

// Options configure a Server.
type Options struct {
	Kube   kubernetes.Interface // Secrets, the MutatingWebhookConfiguration
	Shimmy versioned.Interface  // SharedMemoryChannels, cluster-wide
	Listen string               // the TLS address; default DefaultListen
	// CertDir, if set, holds the mounted certificate (tls.crt, tls.key;
	// ca.crt, if present, is what the leader writes into the caBundle).
	// Empty: the controller provisions it in Namespace/Secret.
	CertDir string
	// Namespace of the Secret and the Service (the controller's own).
	Namespace string
	Secret    string // default DefaultSecret
	// Service names the webhook's Service: the certificate is made for
	// <Service>.<Namespace>.svc and its shorter and longer forms.
	Service string // default DefaultService
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle the
	// leader keeps; default DefaultWebhookConfig. With a mounted
	// certificate and no ca.crt it is left alone.
	WebhookConfig string
	// HostRoot is the agents' mount point on the nodes, which pods get as
	// hostPath volumes; default webhook.DefaultRoot (pods see it there).
	HostRoot string
	// Refresh is how often the certificate is read again (and, by the
	// leader, the Secret and caBundle checked); default DefaultRefresh.
	Refresh time.Duration
	// Validity of a provisioned serving certificate (its CA: ten times
	// that); renewed once a third is left. Default DefaultValidity.
	Validity time.Duration
	Log      logrus.FieldLogger
}

// Server serves the webhook.
type Server struct {
	opts    Options
	log     logrus.FieldLogger
	handler *webhook.Handler
	factory externalversions.SharedInformerFactory
	synced  cache.InformerSynced
	current atomic.Pointer[material]
	addr    atomic.Value // string, once listening
}

// New checks opts and builds a Server; Serve runs it.
func New(opts Options) (*Server, error) {
	if opts.Kube == nil || opts.Shimmy == nil || opts.Namespace == "" {
		return nil, errors.New("webhook serving: Kube, Shimmy and Namespace are required")
	}
	for _, f := range []struct {
		v   *string
		def string
	}{
		{&opts.Listen, DefaultListen}, {&opts.Secret, DefaultSecret}, {&opts.Service, DefaultService}, {&opts.WebhookConfig, DefaultWebhookConfig},
	} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.Validity <= 0 {
		opts.Validity = DefaultValidity
	}
	var log logrus.FieldLogger = logrus.StandardLogger()
	if opts.Log != nil {
		log = opts.Log
	}
	s := &Server{opts: opts, log: log.WithField("component", "webhook-server")}
	s.factory = externalversions.NewSharedInformerFactory(opts.Shimmy, 0)
	inf := s.factory.Shimmy().V1alpha1().SharedMemoryChannels()
	s.synced = inf.Informer().HasSynced
	lister := inf.Lister()
	h, err := webhook.New(webhook.Options{Log: log, HostRoot: opts.HostRoot, Channels: func(ns string) ([]*v1.SharedMemoryChannel, error) {
		if !s.synced() {
			return nil, fmt.Errorf("%w: channel cache not synced", ErrNotReady)
		}
		return lister.SharedMemoryChannels(ns).List(labels.Everything())
	}, Live: s.liveChannels})
	if err != nil {
		return nil, err
	}
	s.handler = h
	return s, nil
}

// Listen opens the TLS listener (before the election, so that a taken
// port fails the start).
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("webhook: listen: %w", err)
	}
	s.addr.Store(ln.Addr().String())
	return tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.certificate}), nil
}

// Addr is the listener's address once Listen has returned.
func (s *Server) Addr() string {
	a, _ := s.addr.Load().(string)
	return a
}

// Serve answers AdmissionReviews on ln until ctx ends: it watches the
// channels and reads the certificate every Refresh (every second until the
// first one is there).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.factory.Start(ctx.Done())
	defer s.factory.Shutdown()
	go s.reload(ctx)
	mux := http.NewServeMux()
	mux.Handle(Path, s.handler)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	s.log.WithFields(logrus.Fields{"listen": s.Addr(), "path": Path}).Info("serving the webhook")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}

// Ready is nil once the server has a certificate and the channels synced.
func (s *Server) Ready() error {
	if s.current.Load() == nil {
		return fmt.Errorf("%w: no serving certificate yet", ErrNotReady)
	}
	if !s.synced() {
		return fmt.Errorf("%w: channel cache not synced", ErrNotReady)
	}
	return nil
}

func (s *Server) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m := s.current.Load()
	if m == nil {
		return nil, fmt.Errorf("%w: no serving certificate yet", ErrNotReady)
	}
	return &m.cert, nil
}

// reload reads the certificate until ctx ends.
func (s *Server) reload(ctx context.Context) {
	for {
		period := s.opts.Refresh
		if err := s.load(ctx); err != nil {
			s.log.WithError(err).Debug("no webhook certificate yet")
		}
		if s.current.Load() == nil {
			period = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
	}
}

// load reads the mounted directory or the Secret and swaps the
// certificate in when it changed.
func (s *Server) load(ctx context.Context) error {
	var m *material
	var err error
	if s.opts.CertDir != "" {
		m, err = loadDir(s.opts.CertDir)
	} else {
		sec, gerr := s.opts.Kube.CoreV1().Secrets(s.opts.Namespace).Get(ctx, s.opts.Secret, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("get secret %s/%s: %w", s.opts.Namespace, s.opts.Secret, gerr)
		}
		m, err = fromSecret(sec)
	}
	if err != nil {
		return err
	}
	s.store(m)
	return nil
}

func (s *Server) store(m *material) {
	if old := s.current.Load(); old != nil && old.cert.Leaf.Equal(m.cert.Leaf) {
		return
	}
	s.current.Store(m)
	s.log.WithFields(logrus.Fields{"subject": m.cert.Leaf.Subject.CommonName, "notAfter": m.cert.Leaf.NotAfter}).Info("loaded the webhook's serving certificate")
}

// Lead does the leader's part until ctx ends: every Refresh, make or
// renew the Secret (unless the certificate is mounted) and set the
// caBundle of the MutatingWebhookConfiguration to its CA.
func (s *Server) Lead(ctx context.Context) {
	for {
		if err := s.lead(ctx); err != nil && ctx.Err() == nil {
			s.log.WithError(err).Warn("webhook certificate upkeep failed; retrying")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.opts.Refresh):
		}
	}
}

func (s *Server) lead(ctx context.Context) error {
	if s.opts.CertDir == "" {
		sec, err := s.provision(ctx)
		if err != nil {
			return err
		}
		m, err := fromSecret(sec)
		if err != nil {
			return err
		}
		s.store(m) // serve it now, not a Refresh later
	} else if err := s.load(ctx); err != nil {
		return err
	}
	m := s.current.Load()
	if m == nil || len(m.ca) == 0 {
		return nil // a mounted certificate without ca.crt: the caBundle is the operator's
	}
	return s.patchCABundle(ctx, m.ca)
}

// jsonOp is one JSON patch (RFC 6902) operation.
type jsonOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func (s *Server) jsonPatch(ctx context.Context, ops []jsonOp) error {
	b, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	_, err = s.opts.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, s.opts.WebhookConfig, types.JSONPatchType, b, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("patch MutatingWebhookConfiguration %s: %w", s.opts.WebhookConfig, err)
	}
	return nil
}

// liveTimeout bounds the live list of a pod's admission (the API server
// gives the whole call a few seconds).
const liveTimeout = 2 * time.Second

// liveChannels lists ns's channels from the API server (a consistent
// read, which recent API servers serve from their cache).
func (s *Server) liveChannels(ns string) ([]*v1.SharedMemoryChannel, error) {
	ctx, cancel := context.WithTimeout(context.Background(), liveTimeout)
	defer cancel()
	l, err := s.opts.Shimmy.ShimmyV1alpha1().SharedMemoryChannels(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]*v1.SharedMemoryChannel, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out, nil
}
