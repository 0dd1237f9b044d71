package k8s

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/test/internal/member"
)

// shimmyBinary builds cmd/shimmy into a directory removed when the test
// ends.
func shimmyBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shimmy")
	if err := testenv.Build(bin, "github.com/shimmy-dev/shimmy/cmd/shimmy"); err != nil {
		t.Fatal(err)
	}
	return bin
}

// mirrorNode is a real `shimmy agent --kubernetes` process: its own mount,
// state directory and node certificate, its mirror on loopback.
type mirrorNode struct {
	name, mount, metrics string
}

// run runs the shimmy binary to completion and returns its output.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("shimmy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startMirrorNode runs an agent for node name with the TLS directory tls;
// mirror are its --mirror-listen (and --mirror-advertise) flags.
func startMirrorNode(t *testing.T, c *k8stest.Cluster, bin, dir, name, tls string, mirror ...string) *mirrorNode {
	t.Helper()
	n := &mirrorNode{name: name, mount: filepath.Join(dir, name, "mnt"), metrics: "127.0.0.1:" + strconv.Itoa(k8stest.FreePort(t))}
	if err := os.MkdirAll(n.mount, 0o755); err != nil {
		t.Fatal(err)
	}
	pods := filepath.Join(dir, name, "pods") // not the machine's /run/shimmy-pods
	testenv.UnmountBelowAtCleanup(t, pods)   // the binds the agent keeps when it stops
	args := append([]string{"agent", "--mount", n.mount, "--state-dir", testenv.ShmDir(t, "kmirror-"+name+"-"),
		"--metrics", n.metrics, "--kubernetes", "--kubeconfig", c.Kubeconfig, "--node-name", name,
		"--pod-dir", pods,
		"--mirror-tls-dir", tls, "--mirror-timeout", "2s"}, mirror...)
	k8stest.Serve(t, dir, "agent-"+name, bin, args...)
	return n
}

func (n *mirrorNode) ring(ns, ch string) string { return filepath.Join(n.mount, ns, ch, "ring") }

// links is the node's `shimmy stat --links` output.
func (n *mirrorNode) links(t *testing.T, bin string) string {
	t.Helper()
	return run(t, bin, "stat", "--links", "--metrics", n.metrics)
}

// received subscribes to the ring at path (through the mount) from its
// oldest message and checks that messages start..start+count-1 of size
// bytes arrive, once each, in order, intact; wait returns the error.
func received(t *testing.T, path string, start, count, size int) (wait func() error) {
	t.Helper()
	ring, err := channel.MapFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := ring.NewSubscriber(channel.SubscriberOptions{From: channel.StartOldest})
	if err != nil {
		ring.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
	done := make(chan error, 1)
	go func() {
		var sum uint64
		var buf []byte
		for i := start; i < start+count; i++ {
			if buf, err = sub.Next(ctx, buf); err != nil {
				done <- fmt.Errorf("after %d of %d messages: %w", i-start, count, err)
				return
			}
			if seq, intact := member.Seq(buf); seq != i || !intact || len(buf) != size {
				done <- fmt.Errorf("message %d: got seq %d, intact %v, %d bytes", i, seq, intact, len(buf))
				return
			}
			sum = member.Fold(sum, buf)
		}
		if want := member.Fnv(start, count, size); sum != want {
			done <- fmt.Errorf("checksum %#x, want %#x", sum, want)
			return
		}
		done <- nil
	}()
	return func() error {
		defer ring.Close()
		defer sub.Close()
		defer cancel()
		return <-done
	}
}

// publish publishes messages start..start+count-1 of size bytes into the
// ring at path (through the mount).
func publish(t *testing.T, path string, start, count, size int) {
	t.Helper()
	ring, err := channel.MapFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	pub, err := ring.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for i := start; i < start+count; i++ {
		if err := pub.Publish(ctx, member.Message(i, size)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// TestMirrorFromController: two real agents with --kubernetes (nodes
// node-a and node-b, each its own mount and state directory, certificates
// from shimmy certs) and a real `shimmy controller`. A channel needed on
// both nodes gets a two-node plan in its status; the agents follow it and
// link over loopback with mutual TLS, and messages published on node-a's
// mount arrive on node-b's, counted and checksummed, in order. When
// node-b no longer needs the channel, the plan drops it, the agents drop
// the share and node-b's channel goes; when it needs it again, messages
// flow again.
func TestMirrorFromController(t *testing.T) {
	testenv.NeedFUSE(t)
	bin := shimmyBinary(t)
	c := k8stest.Start(t)
	c.Apply(t, "deploy/namespace.yaml", crdDir)
	dir := t.TempDir()
	run(t, bin, "certs", "ca", "--out", filepath.Join(dir, "ca"))
	tls := map[string]string{}
	for _, name := range []string{"node-a", "node-b"} {
		tls[name] = filepath.Join(dir, name+"-tls")
		run(t, bin, "certs", "node", "--name", name, "--ca-dir", filepath.Join(dir, "ca"), "--out", tls[name])
	}
	k8stest.Serve(t, dir, "controller", bin, "controller", "--kubeconfig", c.Kubeconfig, "--metrics", "off", "--identity", "test",
		"--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "200ms")
	// node-a listens on one address and reports it; node-b listens on
	// every address and reports the one given (another loopback address),
	// which node-a dials (its name sorts first).
	bPort := strconv.Itoa(k8stest.FreePort(t))
	a := startMirrorNode(t, c, bin, dir, "node-a", tls["node-a"], "--mirror-listen", "127.0.0.1:0")
	b := startMirrorNode(t, c, bin, dir, "node-b", tls["node-b"], "--mirror-listen", ":"+bPort, "--mirror-advertise", "127.0.0.2:"+bPort)

	ctx := context.Background()
	kube := c.Clientset(t)
	cs, err := versioned.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	e := &nodeEnv{kube: kube, shimmy: cs}
	e.namespace(t, "team", "")
	capacity := resource.MustParse("4Mi")
	smc := &v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "chat"},
		Spec: v1.SharedMemoryChannelSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "chat"}},
			Type:     v1.TypePubSub, Overflow: v1.OverflowBlock, Capacity: &capacity,
		},
	}
	if _, err := cs.ShimmyV1alpha1().SharedMemoryChannels("team").Create(ctx, smc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	k8stest.BindPod(t, kube, "team", "a1", "chat", "node-a")
	k8stest.BindPod(t, kube, "team", "b1", "chat", "node-b")

	// The plan lists both nodes, each at the address its agent reports.
	plan := func(want ...string) {
		t.Helper()
		wait.Eventually(t, timeout, func() error {
			got, err := cs.ShimmyV1alpha1().SharedMemoryChannels("team").Get(ctx, "chat", metav1.GetOptions{})
			if err != nil {
				return err
			}
			var names []string
			if mp := got.Status.Mirror; mp != nil {
				for _, p := range mp.Peers {
					names = append(names, p.Name)
					if p.Name == "node-b" && p.Address != "127.0.0.2:"+bPort ||
						p.Name == "node-a" && (!strings.HasPrefix(p.Address, "127.0.0.1:") || strings.HasSuffix(p.Address, ":0")) {
						return fmt.Errorf("peer %s at %q", p.Name, p.Address)
					}
				}
			}
			if fmt.Sprint(names) != fmt.Sprint(want) {
				return fmt.Errorf("status.mirror lists %v, want %v (nodes %+v)", names, want, got.Status.Nodes)
			}
			return nil
		})
	}
	plan("node-a", "node-b")
	linked := func(n *mirrorNode, peer string) {
		t.Helper()
		wait.Eventually(t, timeout, func() error {
			out := n.links(t, bin)
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) > 1 && f[0] == peer && f[1] == "up" {
					return nil
				}
			}
			return fmt.Errorf("%s's links:\n%s", n.name, out)
		})
	}
	linked(a, "node-b")
	linked(b, "node-a")

	// Published on node-a's mount, received on node-b's: every message,
	// once, in order, intact.
	const n, size = 5000, 100
	got := received(t, b.ring("team", "chat"), 0, n, size)
	publish(t, a.ring("team", "chat"), 0, n, size)
	if err := got(); err != nil {
		t.Fatalf("node-b: %v", err)
	}
	t.Logf("%d messages of %d bytes from node-a's mount arrived on node-b's", n, size)

	// node-b no longer needs the channel: the plan drops to nothing (one
	// node is left), the agents drop the share, their link goes, and
	// node-b's channel, idle once the mirror left it, is removed.
	if err := kube.CoreV1().Pods("team").Delete(ctx, "b1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	plan()
	for _, node := range []*mirrorNode{a, b} {
		wait.Eventually(t, timeout, func() error {
			if out := node.links(t, bin); !strings.Contains(out, "no mirror links") {
				return fmt.Errorf("%s still has links:\n%s", node.name, out)
			}
			return nil
		})
	}
	waitGone(t, filepath.Dir(b.ring("team", "chat")))
	if _, err := os.Stat(a.ring("team", "chat")); err != nil {
		t.Fatalf("node-a's channel: %v", err)
	}

	// Needed on node-b again: the share comes back, and what node-a
	// publishes from then on reaches node-b's new channel.
	k8stest.BindPod(t, kube, "team", "b2", "chat", "node-b")
	plan("node-a", "node-b")
	linked(a, "node-b")
	wait.Eventually(t, timeout, func() error {
		_, err := os.Stat(b.ring("team", "chat"))
		return err
	})
	got = received(t, b.ring("team", "chat"), n, n, size)
	publish(t, a.ring("team", "chat"), n, n, size)
	if err := got(); err != nil {
		t.Fatalf("node-b, after the share came back: %v", err)
	}
}
