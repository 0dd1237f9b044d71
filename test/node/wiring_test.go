package node

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/internal/k8snode"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/mountpoint"
)

// messages is how many messages the wiring pod's publisher sends.
const messages = 500

// testHostAgent: the agent runs on the host; a pod gets its
// namespace's directory in the pod directory through a hostPath volume
// (mountPropagation HostToContainer) as docs/kubernetes.md shows, and
// three of its containers use one channel: one publishes with `echo >
// pub`, one subscribes through mmap (mmap-sub), one through `head sub`.
// Both subscribers must get every message, in order, bytes intact. Then
// the agent crashes (SIGKILL) while another pod publishes and subscribes,
// and a new agent takes over (checkAcrossRestart).
func testHostAgent(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, mnt, pods string) {
	bin, state := buildShimmy(t), testenv.ShmDir(t, "k8snode-state-")
	args := func() []string {
		return []string{"agent", "--mount", mnt, "--state-dir", state, "--pod-dir", pods,
			"--metrics", "127.0.0.1:" + strconv.Itoa(k8stest.FreePort(t))}
	}
	// After the agents (cleanups run last first): no dead mount left for
	// the next subtest's agent to find.
	t.Cleanup(func() { mountpoint.CleanStale(mnt) })
	crash := startCrashable(t, n.Dir, "agent", bin, args()...)
	wait.Eventually(t, time.Minute, func() error { return mounted(mnt) })

	for _, ch := range []string{"host", "restart"} {
		if err := os.MkdirAll(filepath.Join(mnt, "default", ch), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	waitBound(t, pods, "restart")
	checkWiring(t, c, n, mnt, pods, "host")
	var stop func() error
	checkAcrossRestart(t, c, n, pods, "restart", "restart-host", func() {
		crash()
		stop = k8stest.Serve(t, n.Dir, "agent-after-crash", bin, args()...)
	})
	if err := stop(); err != nil {
		t.Errorf("agent exited: %v", err)
	}
	checkUnmounted(t, mnt)
}

// checkWiring runs the wiring pod on the namespace "default"'s channel
// ch (it must exist, fresh), its volume from the pod directory pods, and
// checks what each container saw.
func checkWiring(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, mnt, pods, ch string) {
	t.Helper()
	cs := c.Clientset(t)
	dir := "/run/shimmy/default/" + ch
	pub := fmt.Sprintf(`until grep -q '^subscribers 2$' %[1]s/stats; do sleep 0.1; done
i=1; while [ $i -le %[2]d ]; do echo "msg $i" > %[1]s/pub; i=$((i+1)); done
echo published`, dir, messages)
	pod := wiringPod("wiring-"+ch, n.Name, filepath.Join(pods, "default"), dir, map[string]string{
		"mmap":  fmt.Sprintf("set -o pipefail; mmap-sub -n %d | md5sum", messages),
		"files": fmt.Sprintf("set -o pipefail; head -n %d %s/sub | md5sum", messages, dir),
		"pub":   pub,
	})
	create(t, cs, pod)
	waitPhase(t, cs, "default", pod.Name, corev1.PodSucceeded)

	for container, wants := range wantOutputs() {
		out := n.Logs(t, "default", pod.Name, container)
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("container %s printed %q, want %q in it", container, out, w)
			}
		}
	}
	stats, err := os.ReadFile(filepath.Join(mnt, "default", ch, "stats"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stats), fmt.Sprintf("messages %d\n", messages)) {
		t.Errorf("%s/stats on the host:\n%s\nwant messages %d", ch, stats, messages)
	}
	if err := cs.CoreV1().Pods("default").Delete(t.Context(), pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
}

// wantOutputs is what each container of a wiring pod prints when its
// subscribers got every message, in order, bytes intact.
func wantOutputs() map[string][]string {
	var want strings.Builder
	for i := 1; i <= messages; i++ {
		fmt.Fprintf(&want, "msg %d\n", i)
	}
	sum := md5.Sum([]byte(want.String()))
	wantSum := hex.EncodeToString(sum[:]) + "  -"
	return map[string][]string{
		"mmap":  {wantSum, fmt.Sprintf("received %d messages, lost 0", messages)},
		"files": {wantSum},
		"pub":   {"published"},
	}
}

// wiringPod is a pod whose containers (name -> sh script) share the
// hostPath volume hostDir (a namespace's directory in the pod directory),
// mounted with HostToContainer at /run/shimmy/default, with
// $SHIMMY_CHANNEL naming the channel; docs/kubernetes.md shows the same
// wiring in YAML.
func wiringPod(name, node, hostDir, channelDir string, scripts map[string]string) *corev1.Pod {
	pod := clientPod(name, node, "")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Volumes = []corev1.Volume{{
		Name: "channels",
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: hostDir, Type: ptr(corev1.HostPathDirectory),
		}},
	}}
	base := pod.Spec.Containers[0]
	pod.Spec.Containers = nil
	for _, cname := range slices.Sorted(maps.Keys(scripts)) {
		ct := *base.DeepCopy()
		ct.Name = cname
		ct.Command = []string{"sh", "-c", scripts[cname]}
		ct.Env = []corev1.EnvVar{{Name: "SHIMMY_CHANNEL", Value: channelDir}}
		ct.VolumeMounts = []corev1.VolumeMount{{
			Name: "channels", MountPath: "/run/shimmy/default",
			MountPropagation: ptr(corev1.MountPropagationHostToContainer),
		}}
		pod.Spec.Containers = append(pod.Spec.Containers, ct)
	}
	return pod
}

func ptr[T any](v T) *T { return &v }

// mounted reports nil once a Shimmy mount at mnt serves its root.
func mounted(mnt string) error {
	m, ok, err := mountpoint.Find(mnt)
	if err != nil {
		return err
	}
	if !ok || m.FSType != mountpoint.FSType {
		return fmt.Errorf("no shimmy mount at %s", mnt)
	}
	_, err = os.ReadDir(mnt)
	return err
}

// checkUnmounted fails the test if a Shimmy mount, live or dead, is
// still at mnt.
func checkUnmounted(t *testing.T, mnt string) {
	t.Helper()
	ms, err := mountpoint.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Point == mnt && m.FSType == mountpoint.FSType {
			t.Errorf("the agent is gone but its mount is still at %s", mnt)
		}
	}
}

// buildShimmy builds the node binary for the host.
func buildShimmy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shimmy")
	if err := testenv.Build(bin, "github.com/shimmy-dev/shimmy/cmd/shimmy"); err != nil {
		t.Fatal(err)
	}
	return bin
}
