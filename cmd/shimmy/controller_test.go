package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/k8s/controller"
	"github.com/shimmy-dev/shimmy/k8s/webhook/serving"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.9.8.7:6443"}}]
users: [{name: u, user: {token: secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`

func TestControllerConfig(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(testKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	envWith := func(vars map[string]string) *env {
		return &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(k string) string { return vars[k] }}
	}

	cfg, err := controllerConfig(envWith(nil), []string{"--kubeconfig", kubeconfig, "--lease-namespace", "ops", "--lease-name", "l",
		"--identity", "me", "--lease-duration", "30s", "--renew-deadline", "20s", "--retry-period", "1s", "--metrics", "off",
		"--workers", "5", "--node-report-timeout", "2m", "--log-level", "debug",
		"--webhook-listen", "127.0.0.1:8443", "--webhook-cert-dir", "/tls", "--webhook-secret", "s", "--webhook-service", "svc",
		"--webhook-config", "mwc", "--webhook-refresh", "5s", "--webhook-host-root", "/var/shimmy"})
	if err != nil {
		t.Fatal(err)
	}
	lg, _ := cfg.Log.(*logrus.Logger)
	if cfg.Kube == nil || cfg.Kube.Host != "https://10.9.8.7:6443" || cfg.Kube.BearerToken != "secret" ||
		cfg.LeaseNamespace != "ops" || cfg.LeaseName != "l" || cfg.Identity != "me" ||
		cfg.LeaseDuration != 30*time.Second || cfg.RenewDeadline != 20*time.Second || cfg.RetryPeriod != time.Second ||
		cfg.MetricsAddr != controller.MetricsOff || cfg.Workers != 5 || cfg.NodeReportTimeout != 2*time.Minute ||
		lg == nil || lg.GetLevel() != logrus.DebugLevel {
		t.Errorf("config %+v", cfg)
	}
	if w := cfg.Webhook; w == nil || w.Listen != "127.0.0.1:8443" || w.CertDir != "/tls" || w.Secret != "s" || w.Service != "svc" ||
		w.WebhookConfig != "mwc" || w.Refresh != 5*time.Second || w.HostRoot != "/var/shimmy" {
		t.Errorf("webhook config %+v", w)
	}
	off, err := controllerConfig(envWith(nil), []string{"--kubeconfig", kubeconfig, "--webhook-listen", "off"})
	if err != nil || off.Webhook != nil {
		t.Errorf("--webhook-listen off: webhook %+v, %v; want none", off.Webhook, err)
	}

	def, err := controllerConfig(envWith(map[string]string{"KUBECONFIG": kubeconfig}), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := controller.DefaultConfig()
	if def.Kube == nil || def.Kube.Host != "https://10.9.8.7:6443" || def.LeaseNamespace != want.LeaseNamespace || def.LeaseName != want.LeaseName ||
		def.LeaseDuration != want.LeaseDuration || def.MetricsAddr != want.MetricsAddr || def.Workers != want.Workers ||
		def.NodeReportTimeout != want.NodeReportTimeout || def.Identity != "" ||
		def.Webhook == nil || def.Webhook.Listen != serving.DefaultListen || def.Webhook.CertDir != "" || def.Webhook.Secret != serving.DefaultSecret {
		t.Errorf("defaults from $KUBECONFIG: %+v", def)
	}
	if _, err := controller.New(def); err != nil {
		t.Errorf("controller.New refuses the default configuration: %v", err)
	}

	for _, args := range [][]string{
		{"--kubeconfig", kubeconfig, "--workers", "0"},
		{"--kubeconfig", kubeconfig, "--renew-deadline", "20s"}, // not below the lease duration
		{"--kubeconfig", kubeconfig, "--log-level", "loud"},
		{"--kubeconfig", kubeconfig, "extra"},
	} {
		var ue usageError
		if _, err := controllerConfig(envWith(nil), args); !errors.As(err, &ue) {
			t.Errorf("controller %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
}

// TestControllerOutsideCluster: with neither --kubeconfig nor $KUBECONFIG
// and no in-cluster ServiceAccount, the controller says so and fails.
func TestControllerOutsideCluster(t *testing.T) {
	if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token"); err == nil {
		t.Skip("running in a pod: the in-cluster configuration exists")
	}
	code, _, errOut := runCmd(t, "", nil, "controller", "--metrics", "off")
	if code != exitFail || !strings.Contains(errOut, "API server configuration") {
		t.Errorf("shimmy controller outside a cluster: code %d, stderr %q", code, errOut)
	}
}
