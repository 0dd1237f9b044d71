package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/shimmy-dev/shimmy/k8s/controller"
	"github.com/shimmy-dev/shimmy/k8s/webhook"
	"github.com/shimmy-dev/shimmy/k8s/webhook/serving"
)

// controllerConfig turns the controller's command line into a
// controller.Config.
func controllerConfig(e *env, args []string) (controller.Config, error) {
	cfg := controller.DefaultConfig()
	fl := newFlagSet("controller", "shimmy controller [flags]",
		`Run the cluster controller (the "Shimmy master"): from the pods each
SharedMemoryChannel selects and the entries the nodes' agents write into its
status, keep the channel's Ready and Degraded conditions and its mirroring
plan (status.mirror) up to date. Replicas elect one leader with a Lease
(--lease-namespace/--lease-name); only the leader writes, the others wait to
take over. Serves /metrics, /healthz and /readyz on --metrics, until SIGINT
or SIGTERM. In a pod it uses the pod's ServiceAccount (deploy/rbac); elsewhere
--kubeconfig or $KUBECONFIG.

Every replica also serves the mutating admission webhook that wires pods to
the channels that select them (POST /mutate over TLS on --webhook-listen).
Its certificate is either mounted (--webhook-cert-dir: tls.crt, tls.key and
optionally ca.crt, e.g. a Secret volume) or, by default, provisioned by the
controller: a CA and a certificate for the Service --webhook-service in the
Secret --webhook-secret of --lease-namespace, shared by every replica and
restart; the leader makes and renews it and writes its CA into the caBundle
of the MutatingWebhookConfiguration --webhook-config. See
docs/kubernetes.md.`,
		"shimmy controller --kubeconfig ~/.kube/config --lease-namespace shimmy-system")
	kubeconfig := fl.String("kubeconfig", e.getenv("KUBECONFIG"), "kubeconfig file (default $KUBECONFIG; empty: the in-cluster ServiceAccount)")
	fl.StringVar(&cfg.LeaseNamespace, "lease-namespace", cfg.LeaseNamespace, "namespace of the leader-election Lease")
	fl.StringVar(&cfg.LeaseName, "lease-name", cfg.LeaseName, "name of the leader-election Lease")
	fl.StringVar(&cfg.Identity, "identity", "", "this replica's identity in the Lease (default hostname_pid)")
	fl.DurationVar(&cfg.LeaseDuration, "lease-duration", cfg.LeaseDuration, "how long others wait after the leader's last renewal before taking over")
	fl.DurationVar(&cfg.RenewDeadline, "renew-deadline", cfg.RenewDeadline, "how long the leader keeps trying to renew before it stops")
	fl.DurationVar(&cfg.RetryPeriod, "retry-period", cfg.RetryPeriod, "how often replicas try to acquire or renew the Lease")
	fl.StringVar(&cfg.MetricsAddr, "metrics", cfg.MetricsAddr, fmt.Sprintf("address of the /metrics and /healthz HTTP server (%q disables it)", controller.MetricsOff))
	fl.IntVar(&cfg.Workers, "workers", cfg.Workers, "channels reconciled at once")
	fl.DurationVar(&cfg.NodeReportTimeout, "node-report-timeout", cfg.NodeReportTimeout, "how long a node that needs a channel may go without reporting it before the channel is Degraded")
	webhookListen := fl.String("webhook-listen", serving.DefaultListen, fmt.Sprintf("address of the admission webhook's TLS server (%q disables it)", controller.MetricsOff))
	wh := serving.Options{}
	fl.StringVar(&wh.CertDir, "webhook-cert-dir", "", "directory of a mounted serving certificate (tls.crt, tls.key, optional ca.crt); empty: provision one in --webhook-secret")
	fl.StringVar(&wh.Secret, "webhook-secret", serving.DefaultSecret, "the Secret (in --lease-namespace) where the controller keeps the webhook's CA and certificate")
	fl.StringVar(&wh.Service, "webhook-service", serving.DefaultService, "the webhook's Service (in --lease-namespace): the certificate's DNS names")
	fl.StringVar(&wh.WebhookConfig, "webhook-config", serving.DefaultWebhookConfig, "the MutatingWebhookConfiguration whose caBundle the leader keeps")
	fl.StringVar(&wh.HostRoot, "webhook-host-root", webhook.DefaultRoot, "the agents' mount point on the nodes (their --mount): the hostPath the webhook gives pods, which see it at "+webhook.DefaultRoot)
	fl.DurationVar(&wh.Refresh, "webhook-refresh", serving.DefaultRefresh, "how often the certificate is read again (and the leader checks the Secret and caBundle)")
	logLevel := fl.String("log-level", "info", "log level: panic, fatal, error, warn, info, debug or trace")
	if _, err := parse(fl, e, args, 0, 0); err != nil {
		return cfg, err
	}
	level, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		return cfg, usagef("--log-level: %v", err)
	}
	if cfg.Workers < 1 {
		return cfg, usagef("--workers must be at least 1")
	}
	if !(cfg.LeaseDuration > cfg.RenewDeadline && cfg.RenewDeadline > cfg.RetryPeriod && cfg.RetryPeriod > 0) {
		return cfg, usagef("want --lease-duration > --renew-deadline > --retry-period > 0")
	}
	if *webhookListen != controller.MetricsOff && *webhookListen != "" {
		wh.Listen = *webhookListen
		cfg.Webhook = &wh
	}
	// An empty path falls back to the in-cluster configuration.
	if cfg.Kube, err = clientcmd.BuildConfigFromFlags("", *kubeconfig); err != nil {
		return cfg, fmt.Errorf("API server configuration: %w", err)
	}
	log := logrus.New()
	log.SetOutput(e.stderr)
	log.SetLevel(level)
	cfg.Log = log
	return cfg, nil
}

func runController(e *env, args []string) error {
	cfg, err := controllerConfig(e, args)
	if err != nil {
		return err
	}
	c, err := controller.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
