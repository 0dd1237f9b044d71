// Package k8snode runs a real Kubernetes node for tests: containerd (from
// Debian, with its own root, state and socket) and a kubelet built from the
// tool module hack/k8s-bins, registered with a k8stest cluster, with the
// settings this kind of machine needs (/work/shared/KUBERNETES-NODE.md in
// the project's notes; docs/kubernetes.md). Pods run with hostNetwork: the
// node has no CNI plugin. Everything lives in one directory that is
// unmounted and removed at cleanup, with every container killed first.
package k8snode

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// ReadyTimeout bounds the node's start: containerd, the kubelet's
// registration and its first Ready status.
const ReadyTimeout = 3 * time.Minute

// Options configures a node.
type Options struct {
	// Images are docker-archive tars imported into containerd's k8s.io
	// namespace before the kubelet starts (hack/images writes them).
	Images []string
	// SandboxImage is the pods' sandbox ("pause") image; it must be among
	// Images, as nothing is pulled. Its default command must keep running.
	SandboxImage string
}

// Node is a running kubelet and containerd.
type Node struct {
	Name string // the Node object's name
	// Dir holds everything of the node: containerd's root and state, the
	// kubelet's root, logs, and the directories SharedDir makes.
	Dir string
	// Address is containerd's socket, for ctr --address.
	Address string
}

// tools are what the node runs besides the kubelet, from Debian's
// containerd, runc and busybox-static (.ci/run installs them).
var tools = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"}

// Need skips the test, saying why, when the machine cannot run a node:
// not root, or containerd, runc or busybox (for the images) not installed.
func Need(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a Kubernetes node needs root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("a Kubernetes node needs %s: apt-get install containerd runc (.ci/run installs them)", tool)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("the node's images need busybox: apt-get install busybox-static (.ci/run installs it)")
	}
}

// Start runs containerd and a kubelet registered with c until the test
// ends, and waits for the node to be Ready.
func Start(t testing.TB, c *k8stest.Cluster, opts Options) *Node {
	t.Helper()
	Need(t)
	bin := k8stest.Binaries(t)
	// Not t.TempDir: containerd's socket path must stay short (108 bytes),
	// and the directory is removed only after its mounts are gone.
	dir, err := os.MkdirTemp("", "k8snode-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(t, dir) })
	n := &Node{Name: "node-" + randomHex(t, 4), Dir: dir, Address: filepath.Join(dir, "containerd.sock")}
	for _, d := range []string{"containerd", "cni/conf", "cni/bin", "kubelet", "logs", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	write(t, filepath.Join(dir, "containerd.toml"), containerdConfig(dir, opts.SandboxImage))
	write(t, filepath.Join(dir, "cni/conf/10-hostnetwork.conflist"), cniConfig)
	k8stest.Serve(t, dir, "containerd", "containerd", "--config", filepath.Join(dir, "containerd.toml"))
	// Registered after containerd's own cleanup, so it runs before it:
	// kill the containers while containerd still answers.
	t.Cleanup(func() { n.killContainers(t) })
	wait.Eventually(t, ReadyTimeout, func() error {
		_, err := n.Ctr("version")
		return err
	})
	for _, img := range opts.Images {
		if out, err := n.Ctr("-n", "k8s.io", "images", "import", img); err != nil {
			t.Fatalf("import %s: %v: %s", img, err, out)
		}
	}

	write(t, filepath.Join(dir, "kubelet.yaml"), kubeletConfig(dir, n.Address, k8stest.FreePort(t), k8stest.FreePort(t)))
	k8stest.Serve(t, dir, "kubelet", filepath.Join(bin, "kubelet"),
		"--config", filepath.Join(dir, "kubelet.yaml"),
		"--kubeconfig", c.Kubeconfig,
		"--root-dir", filepath.Join(dir, "kubelet"),
		"--cert-dir", filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override", n.Name,
		"--v", "0")
	n.waitReady(t, c)
	return n
}

// Ctr runs ctr against the node's containerd and returns its combined
// output.
func (n *Node) Ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", n.Address}, args...)...).CombinedOutput()
	return string(out), err
}

// Logs returns what a container of a pod printed (stdout and stderr, in
// order), from the kubelet's log files: the latest run of the container.
func (n *Node) Logs(t testing.TB, namespace, pod, container string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(n.Dir, "logs", namespace+"_"+pod+"_*", container, "*.log"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no log of %s/%s container %s: %v", namespace, pod, container, err)
	}
	sort.Strings(files) // 0.log, 1.log, ...: restarts
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	return criLog(string(b))
}

// criLog returns the text of CRI log lines ("<time> <stream> <P|F>
// <text>"): P marks a partial line that the next one continues.
func criLog(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 4 {
			continue
		}
		b.WriteString(f[3])
		if f[2] != "P" {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// SharedDir makes the directory name under the node's directory a shared
// mount (bound onto itself, MS_SHARED), as a hostPath volume with
// mountPropagation HostToContainer or Bidirectional needs, and returns
// its path. It is unmounted at cleanup with the rest of the node.
func (n *Node) SharedDir(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join(n.Dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", d, err)
	}
	if err := unix.Mount("", d, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatalf("make %s shared: %v", d, err)
	}
	return d
}

// waitReady waits for the kubelet to register the node and report it
// Ready.
func (n *Node) waitReady(t testing.TB, c *k8stest.Cluster) {
	t.Helper()
	cs := c.Clientset(t)
	wait.Eventually(t, ReadyTimeout, func() error {
		node, err := cs.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
			if cond.Type == corev1.NodeReady {
				return fmt.Errorf("node %s not ready: %s", n.Name, cond.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", n.Name)
	})
}

// killContainers kills and deletes every task and container of the node,
// so that containerd's shims exit and their rootfs mounts go.
func (n *Node) killContainers(t testing.TB) {
	t.Helper()
	out, err := n.Ctr("-n", "k8s.io", "tasks", "ls", "-q")
	if err != nil {
		t.Logf("node teardown: ctr tasks ls: %v: %s", err, out)
		return
	}
	for _, id := range strings.Fields(out) {
		n.Ctr("-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id)
	}
	for _, id := range strings.Fields(out) {
		// A task is deleted once its process is gone.
		if err := wait.Until(30*time.Second, func() error {
			if out, err := n.Ctr("-n", "k8s.io", "tasks", "delete", id); err != nil && !strings.Contains(out, "not found") {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}); err != nil {
			t.Logf("node teardown: delete task %s: %v", id, err)
		}
	}
	if out, err := n.Ctr("-n", "k8s.io", "containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			n.Ctr("-n", "k8s.io", "containers", "rm", id)
		}
	}
}

// removeAll unmounts everything below dir (deepest first: the kubelet's
// bind of its root, volumes, containerd's rootfs mounts, SharedDir) and
// removes it. A mount that stays is a failure: the node leaked it.
func removeAll(t testing.TB, dir string) {
	t.Helper()
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Errorf("node teardown: %v", err)
		return
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			t.Errorf("node teardown: unmount %s: %v", m.Mountpoint, err)
		}
	}
	if left, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(left) > 0 {
		t.Errorf("node teardown: %d mounts left below %s, the first at %s", len(left), dir, left[0].Mountpoint)
	}
	for _, p := range processesOf(dir) {
		t.Errorf("node teardown: process left running: %s", p)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("node teardown: %v", err)
	}
}

// processesOf returns the command lines of the processes whose command
// line names dir (containerd's shims name its socket).
func processesOf(dir string) []string {
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var found []string
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		found = append(found, filepath.Base(filepath.Dir(p))+": "+strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "))
	}
	return found
}

// containerdConfig is containerd's configuration: everything under dir, the
// CRI plugin's settings for this kernel (restrict_oom_score_adj: no
// CAP_SYS_RESOURCE), runc with cgroupfs, a local sandbox image.
func containerdConfig(dir, sandbox string) string {
	q := strconv.Quote
	return `version = 2
root = ` + q(filepath.Join(dir, "containerd", "root")) + `
state = ` + q(filepath.Join(dir, "containerd", "state")) + `

[grpc]
  address = ` + q(filepath.Join(dir, "containerd.sock")) + `

[ttrpc]
  address = ` + q(filepath.Join(dir, "containerd-ttrpc.sock")) + `

[plugins."io.containerd.internal.v1.opt"]
  path = ` + q(filepath.Join(dir, "containerd", "opt")) + `

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ` + q(sandbox) + `
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ` + q(filepath.Join(dir, "cni", "bin")) + `
    conf_dir = ` + q(filepath.Join(dir, "cni", "conf")) + `
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = ` + q(filepath.Join(dir, "containerd", "runc")) + `
`
}

// cniConfig makes containerd report its network ready, so that the node
// becomes Ready, without a CNI plugin: pods must use hostNetwork (one
// that does not fails at sandbox creation, as the loopback binary is
// not installed).
const cniConfig = `{"cniVersion": "0.4.0", "name": "hostnetwork-only", "plugins": [{"type": "loopback"}]}
`

// kubeletConfig is the KubeletConfiguration this machine needs (cgroup v1
// hybrid, cgroupfs, no per-QoS cgroups, swap on), with its servers on
// free loopback ports and its files under dir. Nobody can authenticate to
// its API (no client CA): the API server cannot reach it, as the kubelet
// refuses a loopback node IP, so kubectl logs and exec do not work; read
// containers' output with Node.Logs. Eviction only below 1 % free:
// the default thresholds (nodefs 10 %, imagefs 15 %) measure the build
// machine's shared disk, and a test pod evicted for DiskPressure there
// says nothing about Shimmy.
func kubeletConfig(dir, socket string, port, healthzPort int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
podLogsDir: %s
volumePluginDir: %s
resolvConf: ""
makeIPTablesUtilChains: false
syncFrequency: 5s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 2s
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
  imagefs.inodesFree: 1%%
`, socket, port, healthzPort, filepath.Join(dir, "logs"), filepath.Join(dir, "volume-plugins"))
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// The project's images, as hack/images names them.
const (
	ShimmyImage = "docker.io/library/shimmy:dev"
	ClientImage = "docker.io/library/shimmy-client:dev"
)

var images struct {
	once  sync.Once
	paths []string
	err   error
}

// Images builds the project's images (hack/images: static binaries, into
// .cache/images at the repository's root) once per test binary and returns
// the tars' paths.
func Images(t testing.TB) []string {
	t.Helper()
	images.once.Do(func() {
		root := k8stest.RepoRoot(t)
		cmd := exec.Command("go", "run", "./hack/images", "-out", filepath.Join(root, ".cache", "images"))
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			images.err = fmt.Errorf("hack/images: %w\n%s", err, stderr.Bytes())
			return
		}
		images.paths = strings.Fields(string(out))
	})
	if images.err != nil {
		t.Fatal(images.err)
	}
	return images.paths
}

// Exec runs argv in a running container (its ID from the pod's status,
// with or without the "containerd://" prefix), as `kubectl exec` does,
// and returns its combined output: the API server cannot reach this
// kubelet, so ctr runs it.
func (n *Node) Exec(t testing.TB, containerID string, argv ...string) (string, error) {
	t.Helper()
	id := strings.TrimPrefix(containerID, "containerd://")
	args := append([]string{"-n", "k8s.io", "tasks", "exec", "--exec-id", "exec-" + randomHex(t, 4), id}, argv...)
	return n.Ctr(args...)
}
