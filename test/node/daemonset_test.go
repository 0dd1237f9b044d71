package node

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/internal/k8snode"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// testAgentDaemonSet: `kubectl apply -k deploy/` installs everything (the
// namespace, the CRD, RBAC, the agent's DaemonSet); the controllers create
// the agent's pod and the scheduler binds it; its FUSE mount,
// made in its container, reaches the host through Bidirectional
// propagation and the wiring pod through HostToContainer, and the pod's
// containers talk through mmap and the files as with an agent on the
// host. With the mirror component, the agent's init container makes the
// node's certificate and the agent reports its mirror address. Deleting
// the DaemonSet unmounts cleanly.
func testAgentDaemonSet(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, mnt, pods string) {
	state := testenv.ShmDir(t, "k8snode-state-")
	// The manifests as users apply them, but for the host paths (this
	// test's node, not the machine's /run/shimmy), the health port
	// (tests run in parallel on one host network) and what this node
	// lacks (testOverlay).
	// With the mirror component: its init container makes the node's
	// certificate from the CA in the Secret, the agent reports its
	// mirrorAddress.
	manifest := deployManifest(t, c, mnt, pods, state, "mirror")
	if _, err := c.Kubectl(manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	mirrorCASecret(t, c)
	t.Log("applied deploy/, waiting for the agent's rollout")
	if _, err := c.Kubectl("", "-n", "shimmy-system", "rollout", "status", "daemonset/shimmy-agent", "--timeout", PodTimeout.String()); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, time.Minute, func() error { return mounted(mnt) })
	t.Log("the agent's mount is on the host")
	waitController(t, c)

	for _, ch := range []string{"pod", "restart", "crash"} {
		if err := os.MkdirAll(filepath.Join(mnt, "default", ch), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	waitBound(t, pods, "restart")
	checkWiring(t, c, n, mnt, pods, "pod")
	checkWebhook(t, c, n, mnt, agentMirrorAddress(t, c, manifest))
	checkAcrossRestart(t, c, n, pods, "restart", "restart-daemonset", func() { restartAgentPod(t, c) })
	// A crash (SIGKILL, as the OOM killer ends it) leaves the agent's mount
	// dead on the host: the kubelet must still start the agent again.
	waitBound(t, pods, "crash")
	checkAcrossRestart(t, c, n, pods, "crash", "crash-daemonset", func() { crashAgentContainer(t, c, n) })
	if _, err := os.Stat(filepath.Join(state, "default", "pod", "ring")); err != nil {
		t.Errorf("the agent pod keeps its rings in the host's state directory %s: %v", state, err)
	}

	t.Log("deleting the agent's DaemonSet")
	if _, err := c.Kubectl("", "-n", "shimmy-system", "delete", "daemonset", "shimmy-agent"); err != nil {
		t.Fatal(err)
	}
	cs := c.Clientset(t)
	wait.Eventually(t, PodTimeout, func() error {
		pods, err := cs.CoreV1().Pods("shimmy-system").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=shimmy-agent"})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d agent pods left", len(pods.Items))
		}
		return nil
	})
	checkUnmounted(t, mnt)
}

// kustomize renders a kustomization (kubectl kustomize; a relative dir is
// the repository's),
// replacing each old string (which must occur) with its new one.
func kustomize(t *testing.T, c *k8stest.Cluster, dir string, oldnew ...string) string {
	t.Helper()
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(k8stest.RepoRoot(t), dir)
	}
	s, err := c.Kubectl("", "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(s, oldnew[i]) {
			t.Fatalf("kubectl kustomize %s has no %q to replace", dir, oldnew[i])
		}
		s = strings.ReplaceAll(s, oldnew[i], oldnew[i+1])
	}
	return s
}

// mirrorCASecret makes a mirror CA and puts it in the Secret the mirror
// component's init container reads, as docs/kubernetes.md says to.
func mirrorCASecret(t *testing.T, c *k8stest.Cluster) {
	t.Helper()
	ca, err := certs.NewCA(certs.Options{Name: "shimmy-test-mirror-ca"})
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "shimmy-mirror-ca", Namespace: "shimmy-system"},
		Data:       map[string][]byte{"ca.crt": ca.CertPEM, "ca.key": ca.KeyPEM},
	}
	if _, err := c.Clientset(t).CoreV1().Secrets("shimmy-system").Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// agentMirrorAddress is the mirrorAddress the agent's pod should report:
// its node's address and the mirror port of the rendered manifest.
func agentMirrorAddress(t *testing.T, c *k8stest.Cluster, manifest string) string {
	t.Helper()
	m := regexp.MustCompile(`--mirror-listen=:(\d+)`).FindStringSubmatch(manifest)
	if m == nil {
		t.Fatal("the manifest has no --mirror-listen")
	}
	pods, err := c.Clientset(t).CoreV1().Pods("shimmy-system").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=shimmy-agent"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.HostIP == "" {
		t.Fatalf("agent pods %v, %v: want one with a host IP", pods, err)
	}
	return net.JoinHostPort(pods.Items[0].Status.HostIP, m[1])
}
