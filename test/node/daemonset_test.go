package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/internal/k8snode"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// testAgentDaemonSet: `kubectl apply -k deploy/` installs everything (the
// namespace, the CRD, RBAC, the agent's DaemonSet); the controllers create
// the agent's pod and the scheduler binds it; its FUSE mount,
// made in its container, reaches the host through Bidirectional
// propagation and the wiring pod through HostToContainer, and the pod's
// containers talk through mmap and the files as with an agent on the
// host. Deleting the DaemonSet unmounts cleanly.
func testAgentDaemonSet(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, mnt, pods string) {
	state := testenv.ShmDir(t, "k8snode-state-")
	// The manifests as users apply them, but for the host paths (this
	// test's node, not the machine's /run/shimmy), the health port
	// (tests run in parallel on one host network) and what this node
	// lacks (testOverlay).
	manifest := deployManifest(t, c, mnt, pods, state)
	if _, err := c.Kubectl(manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
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
	checkWebhook(t, c, n, mnt)
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
