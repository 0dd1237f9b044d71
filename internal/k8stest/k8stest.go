// Package k8stest runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver built from the tool module hack/k8s-bins, on free local
// ports, with their data in t.TempDir() and stopped in t.Cleanup. A cold
// cache is built (hack/k8s-bins/build.sh, Go module proxy only) rather than
// skipped, so that a fresh clone tests what a warm one does.
package k8stest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// StartTimeout bounds etcd's and the API server's start-up: generous, the
// machines are shared.
const StartTimeout = 3 * time.Minute

// RepoRoot returns the repository's root: the directory of the main
// module's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside the shimmy module")
	}
	return filepath.Dir(gomod)
}

var bins struct {
	once sync.Once
	dir  string
	err  error
}

// Binaries returns the directory holding kube-apiserver, etcd and kubectl,
// running hack/k8s-bins/build.sh once per test binary (it returns at once
// when its cache is warm, and builds otherwise: minutes, not a skip).
func Binaries(t testing.TB) string {
	t.Helper()
	bins.once.Do(func() {
		var stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(RepoRoot(t), "hack", "k8s-bins", "build.sh"))
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			bins.err = fmt.Errorf("hack/k8s-bins/build.sh: %w\n%s", err, stderr.Bytes())
			return
		}
		bins.dir = strings.TrimSpace(string(out))
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.dir
}

// Cluster is a running control plane.
type Cluster struct {
	// Config authenticates as the admin user (system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file with the same identity,
	// for kubectl.
	Kubeconfig string
	// KubectlPath is the kubectl binary built with the server.
	KubectlPath string
	// Port is the API server's, on 127.0.0.1 (pods of the host's network
	// reach it there: KUBERNETES_SERVICE_HOST and _PORT).
	Port int
	// CAFile verifies the API server's certificate, which names
	// 127.0.0.1, the host's addresses and kubernetes.default.svc.
	CAFile string
	dir    string
	opts   Options
}

// Options configure a control plane: what real clusters have beyond the
// API server alone.
type Options struct {
	// ServiceAccounts turns the ServiceAccount admission plugin on, as
	// real clusters have it: a pod runs as a ServiceAccount (its
	// namespace's "default" unless it names one) and gets its token, the
	// cluster's CA and the namespace in
	// /var/run/secrets/kubernetes.io/serviceaccount, so that in-cluster
	// clients work. The "default" ServiceAccounts and the kube-root-ca.crt
	// ConfigMaps come from kube-controller-manager: call StartControllers.
	// Off (as in envtest), pods need neither.
	ServiceAccounts bool
}

// Start runs etcd and kube-apiserver until the test ends. RBAC is on (the
// admin is in system:masters); the ServiceAccount admission plugin is off,
// as in envtest, so pods need no token. The API server reaches webhook
// and aggregated API Services through their endpoints (there is no
// kube-proxy for cluster IPs).
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	bin := Binaries(t)
	dir := t.TempDir()
	c := &Cluster{dir: dir, KubectlPath: filepath.Join(bin, "kubectl"), opts: opts}

	etcdURL := "http://" + freeAddr(t)
	peerURL := "http://" + freeAddr(t)
	c.run(t, "etcd", filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")

	token := randomHex(t)
	write(t, filepath.Join(dir, "tokens.csv"), token+",admin,admin,system:masters\n")
	writeServiceAccountKey(t, filepath.Join(dir, "sa.key"))
	ca := c.writeServingCert(t)
	admission := []string{"--disable-admission-plugins", "ServiceAccount"}
	if opts.ServiceAccounts {
		admission = []string{"--enable-admission-plugins", "ServiceAccount"}
	}
	c.Port = FreePort(t)
	c.run(t, "kube-apiserver", filepath.Join(bin, "kube-apiserver"), append(admission,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(c.Port),
		"--tls-cert-file", filepath.Join(dir, "apiserver.crt"), "--tls-private-key-file", filepath.Join(dir, "apiserver.key"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-cluster-ip-range", serviceRange,
		"--enable-aggregator-routing=true",
		"--allow-privileged=true",
		"--v", "0")...)

	c.Config = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", c.Port),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
	}
	c.writeKubeconfig(t)
	c.waitReady(t)
	return c
}

// serviceRange is the cluster IP range; the API server's own Service,
// kubernetes.default, takes its first address.
const serviceRange = "10.0.0.0/24"

// writeServingCert makes a CA and the API server's certificate for every
// name a client of the test uses, and returns the CA's PEM.
func (c *Cluster) writeServingCert(t testing.TB) []byte {
	t.Helper()
	ca, err := certs.NewCA(certs.Options{Name: "k8stest-ca"})
	if err != nil {
		t.Fatal(err)
	}
	ips := append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1)}, hostIPs(t)...)
	srv, err := ca.Issue(certs.Options{Name: "kubernetes", IPs: ips,
		DNS: []string{"localhost", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}})
	if err != nil {
		t.Fatal(err)
	}
	c.CAFile = filepath.Join(c.dir, "ca.crt")
	write(t, c.CAFile, string(ca.CertPEM))
	write(t, filepath.Join(c.dir, "apiserver.crt"), string(srv.CertPEM))
	write(t, filepath.Join(c.dir, "apiserver.key"), string(srv.KeyPEM))
	return ca.CertPEM
}

// HostIP returns an address of this host that is not a loopback one:
// Endpoints and EndpointSlices refuse loopback addresses, and the kubelet
// reports such an address as a hostNetwork pod's IP.
func HostIP(t testing.TB) net.IP {
	t.Helper()
	ips := hostIPs(t)
	if len(ips) == 0 {
		t.Fatal("this host has no IPv4 address but loopback ones")
	}
	return ips[0]
}

func hostIPs(t testing.TB) []net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			ips = append(ips, n.IP.To4())
		}
	}
	return ips
}

// run starts a server whose log is in the cluster's directory.
func (c *Cluster) run(t testing.TB, name, path string, args ...string) {
	t.Helper()
	Serve(t, c.dir, name, path, args...)
}

// Serve starts a server whose output goes to dir/<name>.log, shown when
// the test fails. It is interrupted (killed after 20 s) by the returned
// stop, which returns how it exited, or at cleanup.
func Serve(t testing.TB, dir, name, path string, args ...string) (stop func() error) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed by its timeout runs no cleanup: the kernel
	// stops the servers with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); logf.Close(); close(done) }()
	var once sync.Once
	stop = func() error {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
		return waitErr
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s log (tail):\n%s", name, tail(b, 4000))
			}
		}
	})
	return stop
}

// waitReady polls /readyz, then the default service account's namespace,
// which RBAC bootstrapping creates last of what tests rely on.
func (c *Cluster) waitReady(t testing.TB) {
	t.Helper()
	rc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	cs := c.Clientset(t)
	wait.Eventually(t, StartTimeout, func() error {
		resp, err := rc.Get(c.Config.Host + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		_, err = cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
		return err
	})
}

// Clientset returns a client of the built-in resources.
func (c *Cluster) Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Kubectl runs kubectl against the cluster with stdin as its input and
// returns its combined output; its error carries the output too.
func (c *Cluster) Kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(c.KubectlPath, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (c *Cluster) writeKubeconfig(t testing.TB) {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.Config.BearerToken}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "test"
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t))
}

// FreePort asks the kernel for a free port. Another process may take it
// before the server binds it; the server then fails to start and the test
// says so, which is rare enough on a test machine.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeServiceAccountKey(t testing.TB, path string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Apply runs `kubectl apply -f` on paths relative to the repository's root
// (the manifests of deploy/ that users apply) and waits for every CRD
// among them to be established.
func (c *Cluster) Apply(t testing.TB, paths ...string) {
	t.Helper()
	root := RepoRoot(t)
	for _, p := range paths {
		if _, err := c.Kubectl("", "apply", "-f", filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Kubectl("", "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatal(err)
	}
}

// StartControllers runs kube-controller-manager (its default controllers:
// DaemonSets, Deployments, EndpointSlices, garbage collection, node
// lifecycle, ServiceAccounts and the kube-root-ca.crt ConfigMaps, ...) and
// kube-scheduler against the cluster until the test ends, for tests whose
// workloads need them; Start alone runs neither.
func (c *Cluster) StartControllers(t testing.TB) {
	t.Helper()
	bin := Binaries(t)
	c.run(t, "kube-controller-manager", filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig", c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(FreePort(t)),
		"--service-account-private-key-file", filepath.Join(c.dir, "sa.key"),
		"--root-ca-file", c.CAFile,
		"--use-service-account-credentials=false",
		"--v", "0")
	c.run(t, "kube-scheduler", filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig", c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(FreePort(t)),
		"--v", "0")
	if c.opts.ServiceAccounts {
		c.WaitServiceAccount(t, "default")
	}
}

// WaitServiceAccount waits until kube-controller-manager has made what a
// pod of namespace ns needs when the cluster has ServiceAccounts
// (Options.ServiceAccounts): the "default" ServiceAccount (without it the
// API server refuses the pod) and the kube-root-ca.crt ConfigMap (without
// it the kubelet cannot give the pod its token volume).
func (c *Cluster) WaitServiceAccount(t testing.TB, ns string) {
	t.Helper()
	cs := c.Clientset(t)
	wait.Eventually(t, StartTimeout, func() error {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), "kube-root-ca.crt", metav1.GetOptions{})
		return err
	})
}

// Go runs a component's Run(ctx) in a goroutine until stop is called or
// the test ends; stop cancels its context and returns what Run returned
// (the same on every call). At cleanup an error is reported.
func Go(t testing.TB, run func(ctx context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("run ended with: %v", err)
		}
	})
	return stop
}

// BindPod creates a pod labelled app=<app> bound to nodeName: no scheduler
// or kubelet runs, so it stays Pending, bound, as a scheduled pod is.
func BindPod(t testing.TB, kube kubernetes.Interface, ns, name, app, nodeName string) {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if _, err := kube.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
