package node

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/shimmy-dev/shimmy/internal/k8snode"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/k8s/webhook"
)

// The pipeline's namespace and the frames of its runs: enough that every
// worker takes some, few enough for a shared machine.
const (
	visionNS = "vision"
	frames   = 2000
)

// testPipeline: `kubectl apply -k deploy/` (the agent as a DaemonSet, the
// controller with its webhook) and `kubectl apply -k examples/pipeline/`,
// whose manifests wire no volume: the webhook gives each pod its
// channels. Then, with counts and checksums the sink reports from its pod:
//
//   - a run started by the busybox console (`echo run ... > pub`) has
//     every frame processed exactly once, by all three workers, intact,
//     and the console reads the sink's report through the control
//     channel's sub file;
//   - a pod of another namespace sees nothing of this one;
//   - the agent's pod is deleted while a run goes on; the DaemonSet makes
//     a new one and no frame is lost; the console's files work again;
//   - the same run at full speed in pods and as host processes (host.sh),
//     logged side by side;
//   - everything deleted, no channel and no mount is left.
func testPipeline(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, mnt, pods string) {
	installShimmy(t, c, mnt, pods)
	cs := c.Clientset(t)
	p := &pipeline{t: t, c: c, n: n, cs: cs, dir: filepath.Join(mnt, visionNS)}
	p.apply()
	p.waitAttached()

	t.Log("run 1: the console starts it through the control channel's pub file")
	r1 := p.run(1, frames, 0)
	p.checkExactlyOnce(r1, frames)
	p.checkConsoleSaw(r1)

	checkOtherNamespace(t, c, n)

	t.Log("run 2: the agent's pod is deleted while it goes on")
	p.agentRestartDuring(2, 6000, 300)

	t.Log("run 3: after the agent's restart, the console's files work again")
	r3 := p.run(3, frames, 0)
	p.checkExactlyOnce(r3, frames)
	p.checkConsoleSaw(r3)

	p.compareWithHost(4, 5000, 2, mnt)
	p.delete()
}

// pipeline is the applied example.
type pipeline struct {
	t   *testing.T
	c   *k8stest.Cluster
	n   *k8snode.Node
	cs  kubernetes.Interface
	dir string // the namespace's directory on the host
}

// apply applies examples/pipeline as it is, but for hostNetwork (this node
// has no CNI plugin), and waits for its Deployments to be available.
func (p *pipeline) apply() {
	t := p.t
	manifest := overlayPods(t, kustomize(t, p.c, "examples/pipeline"), func(spec *corev1.PodSpec) {
		spec.HostNetwork = true
	})
	if _, err := p.c.Kubectl(manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Log("applied examples/pipeline, waiting for its rollout")
	if _, err := p.c.Kubectl("", "-n", visionNS, "wait", "--for=condition=Available", "deployment", "--all", "--timeout", PodTimeout.String()); err != nil {
		t.Fatal(err)
	}
	// The manifests name no volume: each pod has the webhook's.
	for _, app := range []string{"camera", "worker", "sink", "console"} {
		pod := p.pod(app)
		if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == webhook.VolumeName }) {
			t.Errorf("pod %s has no volume %s: the webhook did not wire it", pod.Name, webhook.VolumeName)
		}
	}
}

// waitAttached waits until every program has mapped its channels: the
// camera and the sink see only what comes after they subscribed.
func (p *pipeline) waitAttached() {
	wait.Eventually(p.t, PodTimeout, func() error {
		for ch, want := range map[string]string{
			"frames":  "subscribers 3\n", // the workers' readers
			"results": "subscribers 1\n", // the sink
			"control": "subscribers 2\n", // the camera, the console's cat
		} {
			b, err := os.ReadFile(filepath.Join(p.dir, ch, "stats"))
			if err != nil {
				return err
			}
			if !strings.Contains(string(b), want) {
				return fmt.Errorf("%s/stats:\n%s\nwant %q", ch, b, want)
			}
		}
		return nil
	})
}

// pod returns the running pod of the Deployment app.
func (p *pipeline) pod(app string) *corev1.Pod {
	p.t.Helper()
	var pod *corev1.Pod
	wait.Eventually(p.t, PodTimeout, func() error {
		pods, err := p.cs.CoreV1().Pods(visionNS).List(p.t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		for i := range pods.Items {
			if q := &pods.Items[i]; q.Status.Phase == corev1.PodRunning && q.DeletionTimestamp == nil {
				pod = q
				return nil
			}
		}
		return fmt.Errorf("no running %s pod", app)
	})
	return pod
}

// run has the console publish "run <id> <frames> <fps>" on the control
// channel with echo, and returns the sink's report of the run.
func (p *pipeline) run(id, frames int, fps float64) report {
	p.send(id, frames, fps)
	return p.report(id, time.Duration(float64(frames)/max(fps, 100)*float64(time.Second))+PodTimeout)
}

func (p *pipeline) send(id, frames int, fps float64) {
	p.t.Helper()
	console := p.pod("console")
	cmd := fmt.Sprintf("run %d %d %g", id, frames, fps)
	out, err := p.n.Exec(p.t, console.Status.ContainerStatuses[0].ContainerID,
		"sh", "-c", `echo "$0" > "$SHIMMY_CHANNEL_CONTROL/pub"`, cmd)
	if err != nil {
		p.t.Fatalf("console: echo %s > pub: %v: %s", cmd, err, out)
	}
}

// report waits for the sink's report of run id (its log) and parses it.
func (p *pipeline) report(id int, timeout time.Duration) report {
	p.t.Helper()
	sink := p.pod("sink")
	var r report
	wait.Eventually(p.t, timeout, func() error {
		var err error
		r, err = findReport(p.n.Logs(p.t, visionNS, sink.Name, "sink"), id)
		return err
	})
	p.t.Logf("sink: %s", r.line)
	return r
}

// report is the sink's report line of a run: its key=value fields.
type report struct {
	line   string
	fields map[string]string
}

func findReport(log string, id int) (report, error) {
	prefix := fmt.Sprintf("report run=%d ", id)
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		r := report{line: line, fields: map[string]string{}}
		for _, kv := range strings.Fields(line)[1:] {
			k, v, _ := strings.Cut(kv, "=")
			r.fields[k] = v
		}
		return r, nil
	}
	return report{}, fmt.Errorf("no %q line in the sink's log yet", prefix)
}

func (r report) int(t *testing.T, key string) int {
	t.Helper()
	v, err := strconv.Atoi(r.fields[key])
	if err != nil {
		t.Fatalf("report %q: %s: %v", r.line, key, err)
	}
	return v
}

// checkExactlyOnce: every frame of the run reached the sink once, intact,
// and all three workers took a share.
func (p *pipeline) checkExactlyOnce(r report, frames int) {
	t := p.t
	t.Helper()
	for key, want := range map[string]int{
		"frames": frames, "received": frames, "duplicates": 0, "missing": 0, "checksum_failures": 0, "workers": 3,
	} {
		if got := r.int(t, key); got != want {
			t.Errorf("%s = %d, want %d (%s)", key, got, want, r.line)
		}
	}
}

// checkConsoleSaw: the console, reading the control channel's sub file
// with cat, printed the sink's report.
func (p *pipeline) checkConsoleSaw(r report) {
	p.t.Helper()
	console := p.pod("console")
	wait.Eventually(p.t, time.Minute, func() error {
		if out := p.n.Logs(p.t, visionNS, console.Name, "console"); !strings.Contains(out, r.line+"\n") {
			return fmt.Errorf("the console printed:\n%s\nwant the sink's %q", out, r.line)
		}
		return nil
	})
}

// agentRestartDuring runs a paced run and deletes the agent's pod once the
// camera is publishing; the DaemonSet makes a new one before the run
// ends, and the run loses nothing: the programs' mappings hold the rings'
// memory, not the mount.
func (p *pipeline) agentRestartDuring(id, frames int, fps float64) {
	t := p.t
	p.send(id, frames, fps)
	camera := p.pod("camera")
	wait.Eventually(t, time.Minute, func() error {
		if out := p.n.Logs(t, visionNS, camera.Name, "camera"); !strings.Contains(out, fmt.Sprintf("run %d: ", id)) {
			return fmt.Errorf("the camera has not started run %d:\n%s", id, out)
		}
		return nil
	})
	restartAgentPod(t, p.c)
	t.Log("the DaemonSet's new agent pod is ready")
	sink := p.pod("sink")
	if r, err := findReport(p.n.Logs(t, visionNS, sink.Name, "sink"), id); err == nil {
		t.Fatalf("run %d ended before the new agent was ready (%s): the restart was not during the run", id, r.line)
	}
	r := p.report(id, time.Duration(float64(frames)/fps*float64(time.Second))+PodTimeout)
	p.checkExactlyOnce(r, frames)
}

// compareWithHost runs the same full-speed run in the pods and as host
// processes (examples/pipeline/host.sh against the same agent), rounds
// times in turn, and logs the reports: the numbers of docs/kubernetes.md.
// Every run must be exact; their speed is not asserted.
func (p *pipeline) compareWithHost(firstID, frames, rounds int, mnt string) {
	t := p.t
	var lines []string
	for i := 0; i < rounds; i++ {
		pods := p.run(firstID+i, frames, 0)
		p.checkExactlyOnce(pods, frames)
		cmd := exec.Command("sh", filepath.Join(k8stest.RepoRoot(t), "examples", "pipeline", "host.sh"), strconv.Itoa(frames), "0", "3")
		cmd.Env = append(os.Environ(), "MOUNT="+mnt, "NS=vision-host")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("host.sh: %v\n%s", err, out)
		}
		host, err := findReport(string(out), 1)
		if err != nil {
			t.Fatalf("host.sh: %v\n%s", err, out)
		}
		lines = append(lines, "in pods:        "+pods.line, "host processes: "+host.line)
	}
	t.Logf("%d frames of 100 KiB, 3 workers, full speed:\n  %s", frames, strings.Join(lines, "\n  "))
}

// delete deletes the example and waits for its pods and, once idle, its
// channels to go from the node.
func (p *pipeline) delete() {
	t := p.t
	if _, err := p.c.Kubectl(kustomize(t, p.c, "examples/pipeline"), "delete", "-f", "-", "--wait=true", "--timeout", PodTimeout.String()); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, PodTimeout, func() error {
		ents, err := os.ReadDir(p.dir)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				return fmt.Errorf("channel %s left in %s", e.Name(), p.dir)
			}
		}
		return nil
	})
}

// checkOtherNamespace: a pod of another namespace, wired to a channel of
// its own, sees that channel and nothing of the pipeline's namespace: not
// in its variables, its mounts or its directory listings.
func checkOtherNamespace(t *testing.T, c *k8stest.Cluster, n *k8snode.Node) {
	ns := "other"
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: shimmy.io/v1alpha1
kind: SharedMemoryChannel
metadata: {name: notes, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: nosy}}
`, ns)
	if _, err := c.Kubectl(manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kubectl("", "delete", "namespace", ns, "--wait=false") })
	script := `echo "env: $(env | grep SHIMMY | sort | tr '\n' ' ')"
echo "ls: $(ls /run/shimmy | tr '\n' ' ')"
echo "mounts: $(grep shimmy /proc/self/mountinfo | cut -d' ' -f4,5 | tr '\n' ' ')"
test -e /run/shimmy/vision && echo "/run/shimmy/vision exists"
find / -xdev -name frames 2>/dev/null
echo hello > "$SHIMMY_CHANNEL/pub" && echo published`
	pod := clientPod("nosy", n.Name, script)
	pod.Namespace = ns
	pod.Labels = map[string]string{"app": "nosy"}
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	waitWebhookSees(t, c, n, ns, "nosy")
	create(t, c.Clientset(t), pod)
	waitPhase(t, c.Clientset(t), ns, pod.Name, corev1.PodSucceeded)
	out := n.Logs(t, ns, pod.Name, "main")
	t.Logf("a pod of namespace %s:\n%s", ns, out)
	for _, want := range []string{"SHIMMY_CHANNEL=/run/shimmy/other/notes", "ls: other \n", "published"} {
		if !strings.Contains(out, want) {
			t.Errorf("the pod of namespace %s printed:\n%s\nwant %q in it", ns, out, want)
		}
	}
	if strings.Contains(out, visionNS) || strings.Contains(out, "frames") {
		t.Errorf("the pod of namespace %s sees the pipeline's namespace:\n%s", ns, out)
	}
}

// overlayPods applies change to the pod template of every Deployment of
// a rendered manifest and returns the manifest.
func overlayPods(t *testing.T, manifest string, change func(*corev1.PodSpec)) string {
	t.Helper()
	docs := strings.Split(manifest, "\n---\n")
	for i, doc := range docs {
		if !strings.Contains(doc, "kind: Deployment\n") {
			continue
		}
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatal(err)
		}
		change(&d.Spec.Template.Spec)
		b, err := yaml.Marshal(&d)
		if err != nil {
			t.Fatal(err)
		}
		docs[i] = string(b)
	}
	return strings.Join(docs, "\n---\n")
}

// installShimmy installs deploy/ (with the test overlay) and removes it
// at the end of the test, checking that the agent's mount went with it.
func installShimmy(t *testing.T, c *k8stest.Cluster, mnt, pods string) {
	manifest := deployManifest(t, c, mnt, pods, testenv.ShmDir(t, "k8snode-state-"))
	if _, err := c.Kubectl(manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := c.Kubectl(manifest, "delete", "-f", "-", "--wait=true", "--timeout", PodTimeout.String()); err != nil {
			t.Error(err)
		}
		checkUnmounted(t, mnt)
	})
	if _, err := c.Kubectl("", "-n", "shimmy-system", "rollout", "status", "daemonset/shimmy-agent", "--timeout", PodTimeout.String()); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, time.Minute, func() error { return mounted(mnt) })
	waitController(t, c)
}
