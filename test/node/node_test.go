// Package node runs Shimmy on a real Kubernetes node: etcd, kube-apiserver,
// the controllers and scheduler (internal/k8stest), containerd and a
// kubelet (internal/k8snode), images built from static binaries
// (hack/images). It skips, saying why, only on a machine without root or
// without containerd and runc. The node is torn down with no mount and no
// process left (k8snode checks at cleanup).
package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shimmy-dev/shimmy/internal/k8snode"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// PodTimeout bounds a pod's start or run: generous, the machines are
// shared.
const PodTimeout = 3 * time.Minute

// TestNode brings one node up (the control plane with its controllers and
// scheduler, containerd, a kubelet) and runs its subtests on it in turn.
func TestNode(t *testing.T) {
	k8snode.Need(t)
	imgs := k8snode.Images(t)
	// ServiceAccounts: the agent and the controller of deploy/ reach the
	// API server with their pods' tokens.
	c := k8stest.StartWith(t, k8stest.Options{ServiceAccounts: true})
	c.StartControllers(t)
	n := k8snode.Start(t, c, k8snode.Options{Images: imgs, SandboxImage: k8snode.ClientImage})
	// The mount inside a shared directory, as /run/shimmy is in /run: the
	// agent's DaemonSet mounts the parent (deploy/agent/daemonset.yaml).
	mnt, pods := filepath.Join(n.SharedDir(t, "run"), "shimmy"), n.SharedDir(t, "shimmy-pods")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("RunsPods", func(t *testing.T) { testRunsPods(t, c, n) })
	t.Run("HostAgent", func(t *testing.T) { testHostAgent(t, c, n, mnt, pods) })
	t.Run("AgentDaemonSet", func(t *testing.T) { testAgentDaemonSet(t, c, n, mnt, pods) })
	t.Run("Pipeline", func(t *testing.T) { testPipeline(t, c, n, mnt, pods) })
}

// testRunsPods: a pod bound to the node runs the client image's busybox
// and its output comes back through the API server (kubectl logs).
func testRunsPods(t *testing.T, c *k8stest.Cluster, n *k8snode.Node) {
	cs := c.Clientset(t)
	pod := clientPod("hello", n.Name, "echo hello from $(hostname); ls /bin/mmap-sub /bin/mmap-pub")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	create(t, cs, pod)
	waitPhase(t, cs, "default", "hello", corev1.PodSucceeded)
	out := n.Logs(t, "default", "hello", "main")
	for _, want := range []string{"hello from ", "/bin/mmap-sub", "/bin/mmap-pub"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl logs hello = %q, want %q in it", out, want)
		}
	}
}

// clientPod is a hostNetwork pod of the client image on node running
// script in sh.
func clientPod(name, node, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:    node,
			HostNetwork: true,
			Containers: []corev1.Container{{
				Name:            "main",
				Image:           k8snode.ClientImage,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"sh", "-c", script},
			}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

func create(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) {
	t.Helper()
	if _, err := cs.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPhase waits for a pod to reach phase; a pod that fails instead
// fails the test at once.
func waitPhase(t *testing.T, cs kubernetes.Interface, ns, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	wait.Eventually(t, PodTimeout, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		if p.Status.Phase == phase {
			return nil
		}
		if p.Status.Phase == corev1.PodFailed {
			t.Fatalf("pod %s/%s failed: %s", ns, name, podStatus(p))
		}
		return fmt.Errorf("pod %s/%s is %s, want %s: %s", ns, name, p.Status.Phase, phase, podStatus(p))
	})
	return pod
}

// podStatus says why a pod is where it is: its containers' states.
func podStatus(p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", p.Status.Reason, p.Status.Message)
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			fmt.Fprintf(&b, "; %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			fmt.Fprintf(&b, "; %s terminated: %s (exit %d) %s", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message)
		case cs.State.Running != nil:
			fmt.Fprintf(&b, "; %s running", cs.Name)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			fmt.Fprintf(&b, "; %s: %s", c.Type, c.Message)
		}
	}
	return b.String()
}
