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
	dir         string
}

// Start runs etcd and kube-apiserver until the test ends. RBAC is on (the
// admin is in system:masters); the ServiceAccount admission plugin is off,
// as in envtest, so pods need no token.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin := Binaries(t)
	dir := t.TempDir()
	c := &Cluster{dir: dir, KubectlPath: filepath.Join(bin, "kubectl")}

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
	port := freePort(t)
	c.run(t, "kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(port),
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--disable-admission-plugins", "ServiceAccount",
		"--service-account-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--allow-privileged=true",
		"--v", "0")

	c.Config = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", port),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, // a self-signed certificate made at start
	}
	c.writeKubeconfig(t)
	c.waitReady(t)
	return c
}

// run starts a server whose output goes to a log file in the cluster's
// directory, shown when the test fails; it is stopped at cleanup.
func (c *Cluster) run(t testing.TB, name, path string, args ...string) {
	t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
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
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s log (tail):\n%s", name, tail(b, 4000))
			}
		}
	})
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
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: c.Config.Host, InsecureSkipTLSVerify: true}
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
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// freePort asks the kernel for a free port. Another process may take it
// before the server binds it; the server then fails to start and the test
// says so, which is rare enough on a test machine.
func freePort(t testing.TB) int {
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
