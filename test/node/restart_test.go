package node

import (
	"fmt"
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

	"github.com/shimmy-dev/shimmy/internal/k8snode"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// restartMessages is how many messages the restart pod publishes.
const restartMessages = 600

// restartScripts are the restart pod's containers: "pub" publishes "msg
// 1".."msg N" and then "end" with `echo > pub`, one every 10 ms, trying a
// message again until its open and write succeed (while no agent runs
// they fail: the write of the message in flight when the agent stopped may
// have reached the ring, so it may come twice); "mmap" subscribes through
// the ring (mmap-sub), which no restart touches; "files" follows sub with
// a shell loop and opens it again when its descriptor dies with the agent.
func restartScripts(dir string) map[string]string {
	return map[string]string{
		"pub": fmt.Sprintf(`until grep -q '^subscribers 2$' %[1]s/stats; do sleep 0.1; done
i=1; while [ $i -le %[2]d ]; do
  until echo "msg $i" 2>/dev/null >%[1]s/pub; do sleep 0.05; done
  i=$((i+1)); sleep 0.01
done
until echo end 2>/dev/null >%[1]s/pub; do sleep 0.05; done
echo published; sleep 3600`, dir, restartMessages),
		"mmap": "mmap-sub",
		// Not cat: busybox's uses sendfile, to which sub answers end of file.
		"files": fmt.Sprintf(`while true; do
  while IFS= read -r line; do echo "$line"; done <%s/sub
  echo reopen; sleep 0.05
done`, dir),
	}
}

// checkAcrossRestart runs the restart pod on the channel ch of
// namespace default (it must exist, fresh) through the pod directory
// pods, calls restart once the files subscriber has received 100
// messages, and checks what the subscribers got: through mmap every
// message in order, through the files every message but those published
// between its descriptor's death and its reopen, in order, and the
// messages after the restart.
func checkAcrossRestart(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, pods, ch, name string, restart func()) {
	t.Helper()
	cs := c.Clientset(t)
	dir := "/run/shimmy/default/" + ch
	pod := wiringPod(name, n.Name, filepath.Join(pods, "default"), dir, restartScripts(dir))
	create(t, cs, pod)
	t.Cleanup(func() { cs.CoreV1().Pods("default").Delete(t.Context(), pod.Name, metav1.DeleteOptions{}) })
	waitPhase(t, cs, "default", pod.Name, corev1.PodRunning)
	logs := func(container string) string { return n.Logs(t, "default", pod.Name, container) }
	wait.Eventually(t, PodTimeout, func() error {
		if got := len(numbered(logs("files"))); got < 100 {
			return fmt.Errorf("the files subscriber has %d messages", got)
		}
		return nil
	})
	restart()
	wait.Eventually(t, PodTimeout, func() error {
		for _, ct := range []string{"mmap", "files"} {
			if !strings.Contains(logs(ct), "\nend\n") {
				return fmt.Errorf("container %s has not received the end yet", ct)
			}
		}
		return nil
	})

	// Only the message in flight when the agent stopped may come twice.
	mm, dups := dedupe(numbered(logs("mmap")))
	if len(mm) != restartMessages || mm[0] != 1 || mm[len(mm)-1] != restartMessages || gaps(mm) != 0 || dups > 1 {
		t.Errorf("mmap subscriber: %d messages from %v to %v, %d gaps, %d repeated; want %d in order, at most one repeated",
			len(mm), first(mm), last(mm), gaps(mm), dups, restartMessages)
	}
	files := logs("files")
	fm, fdups := dedupe(numbered(files))
	lost := restartMessages - len(fm)
	t.Logf("files subscriber: %d messages, %d lost while it reopened, %d repeated, %d reopens", len(fm), lost, fdups, strings.Count(files, "reopen\n"))
	if len(fm) < 100 || fm[0] != 1 || fm[len(fm)-1] != restartMessages || gaps(fm) > 1 || fdups > 1 || !strings.Contains(files, "reopen") {
		t.Errorf("files subscriber: %d messages from %v to %v, %d gaps, %d repeated: want messages from 1 to %d in order, one gap at most (the reopen)",
			len(fm), first(fm), last(fm), gaps(fm), fdups, restartMessages)
	}
	if !strings.Contains(logs("pub"), "published") {
		t.Errorf("the publisher did not finish: %q", logs("pub"))
	}
}

// numbered returns the numbers of the "msg N" lines of a log, in order.
func numbered(log string) []int {
	var out []int
	for _, line := range strings.Split(log, "\n") {
		if s, ok := strings.CutPrefix(line, "msg "); ok {
			if i, err := strconv.Atoi(s); err == nil {
				out = append(out, i)
			}
		}
	}
	return out
}

// dedupe drops a number equal to the one before it and counts them.
func dedupe(ms []int) (out []int, dups int) {
	for i, m := range ms {
		if i > 0 && m == ms[i-1] {
			dups++
			continue
		}
		out = append(out, m)
	}
	return out, dups
}

// gaps counts the places where a sequence does not go up by one (a jump
// forward, or any step back).
func gaps(ms []int) int {
	n := 0
	for i := 1; i < len(ms); i++ {
		if ms[i] != ms[i-1]+1 {
			n++
		}
	}
	return n
}

func first(ms []int) any {
	if len(ms) == 0 {
		return "none"
	}
	return ms[0]
}

func last(ms []int) any {
	if len(ms) == 0 {
		return "none"
	}
	return ms[len(ms)-1]
}

// waitBound waits until the pod directory pods shows namespace default's
// channel ch of the live agent.
func waitBound(t *testing.T, pods, ch string) {
	t.Helper()
	wait.Eventually(t, time.Minute, func() error {
		_, err := os.Stat(filepath.Join(pods, "default", ch, "stats"))
		return err
	})
}

// startCrashable runs an agent (bin with args) that the returned crash
// kills with SIGKILL, as a crash ends it; its output goes to
// dir/<name>.log.
func startCrashable(t *testing.T, dir, name, bin string, args ...string) (crash func()) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	crash = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
		})
	}
	t.Cleanup(crash)
	return crash
}

// restartAgentPod deletes the agent's pod (its preStop stops the agent
// cleanly) and waits until the DaemonSet's new pod is ready.
func restartAgentPod(t *testing.T, c *k8stest.Cluster) {
	t.Helper()
	cs := c.Clientset(t)
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=shimmy-agent"}
	old, err := cs.CoreV1().Pods("shimmy-system").List(t.Context(), sel)
	if err != nil || len(old.Items) != 1 {
		t.Fatalf("agent pods: %v, %v; want one", old, err)
	}
	t.Logf("deleting the agent's pod %s", old.Items[0].Name)
	if err := cs.CoreV1().Pods("shimmy-system").Delete(t.Context(), old.Items[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, PodTimeout, func() error {
		pods, err := cs.CoreV1().Pods("shimmy-system").List(t.Context(), sel)
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.UID != old.Items[0].UID && p.DeletionTimestamp == nil && ready(&p) {
				return nil
			}
		}
		return fmt.Errorf("no new ready agent pod among %d", len(pods.Items))
	})
}

// crashAgentContainer kills the agent's container with SIGKILL, as the
// kernel's OOM killer ends it, and waits until the kubelet has started it
// again in the same pod and it is ready: its mount at /run/shimmy died
// with it, and the new container must start over that dead mount.
func crashAgentContainer(t *testing.T, c *k8stest.Cluster, n *k8snode.Node) {
	t.Helper()
	cs := c.Clientset(t)
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=shimmy-agent"}
	pods, err := cs.CoreV1().Pods("shimmy-system").List(t.Context(), sel)
	if err != nil || len(pods.Items) != 1 || len(pods.Items[0].Status.ContainerStatuses) != 1 {
		t.Fatalf("agent pods: %v, %v; want one with one container", pods, err)
	}
	pod, st := pods.Items[0], pods.Items[0].Status.ContainerStatuses[0]
	t.Logf("killing the agent's container %s (pod %s) with SIGKILL", st.ContainerID, pod.Name)
	if out, err := n.Ctr("-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", strings.TrimPrefix(st.ContainerID, "containerd://")); err != nil {
		t.Fatalf("ctr tasks kill: %v: %s", err, out)
	}
	wait.Eventually(t, PodTimeout, func() error {
		p, err := cs.CoreV1().Pods("shimmy-system").Get(t.Context(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) != 1 {
			return fmt.Errorf("pod %s has no container status", pod.Name)
		}
		cur := p.Status.ContainerStatuses[0]
		switch {
		case cur.RestartCount <= st.RestartCount:
			return fmt.Errorf("the agent's container has not restarted yet (%s)", podStatus(p))
		case !ready(p):
			return fmt.Errorf("the restarted agent's container is not ready: %s", podStatus(p))
		}
		return nil
	})
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
