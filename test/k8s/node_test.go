package k8s

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/fs"
	"github.com/shimmy-dev/shimmy/internal/agenttest"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/node"
)

const (
	thisNode = "node-a"
	timeout  = 60 * time.Second
)

// nodeEnv is a control plane with the CRD and a real agent (FUSE mount,
// state directory in tmpfs) that runs with --kubernetes as thisNode.
type nodeEnv struct {
	cfg    agent.Config
	stop   func() error
	kube   kubernetes.Interface
	shimmy versioned.Interface
}

func startNode(t *testing.T) *nodeEnv {
	c := k8stest.Start(t)
	c.Apply(t, crdDir)
	cs, err := versioned.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := agenttest.Config(t, fs.FrontEnd(fs.MountOptions{AllowOther: true}))
	cfg.Kubernetes = &agent.KubernetesConfig{Kubeconfig: c.Kubeconfig, NodeName: thisNode, StatusInterval: 200 * time.Millisecond}
	e := &nodeEnv{cfg: cfg, kube: c.Clientset(t), shimmy: cs}
	_, e.stop = agenttest.Start(t, cfg)
	return e
}

// stopAgent stops the agent; startAgent starts another on the same mount
// point and state directory, as a DaemonSet's new pod does.
func (e *nodeEnv) stopAgent(t *testing.T) {
	t.Helper()
	if err := e.stop(); err != nil {
		t.Fatalf("agent stop: %v", err)
	}
}

func (e *nodeEnv) startAgent(t *testing.T) { _, e.stop = agenttest.Start(t, e.cfg) }

func (e *nodeEnv) dir(ns, name string) string { return filepath.Join(e.cfg.MountPoint, ns, name) }

func (e *nodeEnv) namespace(t *testing.T, name, quota string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if quota != "" {
		ns.Annotations = map[string]string{node.QuotaAnnotation: quota}
	}
	if _, err := e.kube.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// pod binds a pod labelled app=<app> to nodeName.
func (e *nodeEnv) pod(t *testing.T, ns, name, app, nodeName string) {
	t.Helper()
	k8stest.BindPod(t, e.kube, ns, name, app, nodeName)
}

func (e *nodeEnv) channel(t *testing.T, ns, name, app, capacity string) {
	t.Helper()
	q := resource.MustParse(capacity)
	slots := int32(16)
	smc := &v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.SharedMemoryChannelSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Type:     v1.TypePubSub, Overflow: v1.OverflowBlock, Capacity: &q, MemberSlots: &slots,
		},
	}
	if _, err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels(ns).Create(context.Background(), smc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// annotate sets a namespace's quota annotation.
func (e *nodeEnv) annotate(t *testing.T, name, quota string) {
	t.Helper()
	api := e.kube.CoreV1().Namespaces()
	ns, err := api.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Annotations == nil {
		ns.Annotations = map[string]string{}
	}
	ns.Annotations[node.QuotaAnnotation] = quota
	if _, err := api.Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setCapacity changes a channel's spec and returns its new generation.
func (e *nodeEnv) setCapacity(t *testing.T, ns, name, capacity string) int64 {
	t.Helper()
	api := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels(ns)
	smc, err := api.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := resource.MustParse(capacity)
	smc.Spec.Capacity = &q
	if smc, err = api.Update(context.Background(), smc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return smc.Generation
}

// entry waits until this node's status entry of ns/name satisfies ok
// (with nil: until there is none) and returns it.
func (e *nodeEnv) entry(t *testing.T, ns, name string, ok func(*v1.NodeStatus) error) *v1.NodeStatus {
	t.Helper()
	var got *v1.NodeStatus
	wait.Eventually(t, timeout, func() error {
		smc, err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got = nil
		for i := range smc.Status.Nodes {
			if n := &smc.Status.Nodes[i]; n.Name == thisNode {
				got = n
			} else {
				return fmt.Errorf("status has an entry of node %q: %+v", n.Name, smc.Status.Nodes)
			}
		}
		if ok == nil {
			if got != nil {
				return fmt.Errorf("status still has %+v", *got)
			}
			return nil
		}
		if got == nil {
			return errors.New("no status entry for this node")
		}
		if err := ok(got); err != nil {
			return fmt.Errorf("status entry %+v: %w", *got, err)
		}
		return nil
	})
	return got
}

func state(s v1.NodeState, generation int64, members int32) func(*v1.NodeStatus) error {
	return func(n *v1.NodeStatus) error {
		if n.State != s || n.ObservedGeneration != generation || n.Members != members {
			return fmt.Errorf("want state %s, generation %d, %d members", s, generation, members)
		}
		if (s == v1.NodeReady) != (n.Message == "") {
			return fmt.Errorf("message %q with state %s", n.Message, n.State)
		}
		return nil
	}
}

// keys reads a file of "key value" lines (config, stats, .quota).
func keys(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		m[k] = v
	}
	return m, sc.Err()
}

// waitKeys waits until the file at path has the given values.
func waitKeys(t *testing.T, path string, want map[string]string) map[string]string {
	t.Helper()
	var got map[string]string
	wait.Eventually(t, timeout, func() error {
		var err error
		if got, err = keys(path); err != nil {
			return err
		}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s: %s is %q, want %q", path, k, got[k], v)
			}
		}
		return nil
	})
	return got
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	wait.Eventually(t, timeout, func() error {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s still there (%v)", path, err)
		}
		return nil
	})
}

// flow is an mmap publisher and subscriber on one ring, attached through
// the mount as a pod's process is: the publisher sends numbered messages
// until stopped, the subscriber checks that each arrives once, in order.
type flow struct {
	ring      *channel.Ring
	sent, got atomic.Uint64
	stop      chan struct{}
	cancel    context.CancelFunc // ends the subscriber
	pubDone   chan error
	subDone   chan error
	finished  bool
}

func startFlow(t *testing.T, dir string) *flow {
	t.Helper()
	ring, err := channel.MapFile(filepath.Join(dir, "ring"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := ring.NewSubscriber(channel.SubscriberOptions{From: channel.StartOldest})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ring.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*timeout)
	f := &flow{ring: ring, stop: make(chan struct{}), cancel: cancel, pubDone: make(chan error, 1), subDone: make(chan error, 1)}
	// Each side closes its member before it reports: the cleanup unmaps
	// the ring once both have.
	go func() {
		msg := make([]byte, 8)
		for i := uint64(0); ; i++ {
			select {
			case <-f.stop:
				pub.Close()
				f.pubDone <- nil
				return
			default:
			}
			binary.LittleEndian.PutUint64(msg, i)
			if err := pub.Publish(ctx, msg); err != nil {
				pub.Close()
				f.pubDone <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			f.sent.Add(1)
			// A steady trickle, so that messages flow while the agent
			// restarts rather than all before it.
			time.Sleep(200 * time.Microsecond)
		}
	}()
	go func() {
		var buf []byte
		for want := uint64(0); ; want++ {
			var err error
			if buf, err = sub.Next(ctx, buf); err != nil {
				if ctx.Err() != nil {
					err = nil // ended by finish
				}
				sub.Close()
				f.subDone <- err
				return
			}
			if len(buf) != 8 || binary.LittleEndian.Uint64(buf) != want {
				sub.Close()
				f.subDone <- fmt.Errorf("message %d: got %x", want, buf)
				return
			}
			f.got.Add(1)
		}
	}()
	t.Cleanup(func() { f.finish(t); ring.Close() })
	return f
}

// finish stops the publisher, waits for the subscriber to have read every
// message sent, and fails t if one was lost, doubled or bent.
func (f *flow) finish(t *testing.T) {
	t.Helper()
	if f.finished {
		return
	}
	f.finished = true
	close(f.stop)
	if err := <-f.pubDone; err != nil {
		t.Error(err)
	}
	sent := f.sent.Load()
	err := wait.Until(timeout, func() error {
		if g := f.got.Load(); g != sent {
			return fmt.Errorf("sent %d messages, received %d", sent, g)
		}
		return nil
	})
	f.cancel()
	if err := <-f.subDone; err != nil {
		t.Error(err)
	}
	if err != nil || sent == 0 {
		t.Errorf("end to end: %v (sent %d)", err, sent)
	}
}

// waitMore waits until the flow has carried n more messages than now.
func (f *flow) waitMore(t *testing.T, n uint64) {
	t.Helper()
	target := f.got.Load() + n
	wait.Eventually(t, timeout, func() error {
		if g := f.got.Load(); g < target {
			return fmt.Errorf("%d messages received, want %d", g, target)
		}
		return nil
	})
}

// TestNodeAgent runs a real agent with --kubernetes against a real API
// server and checks what a user of the resource relies on.
func TestNodeAgent(t *testing.T) {
	e := startNode(t)
	ctx := context.Background()
	e.namespace(t, "team", "max_channels 3, max_bytes 64M")
	e.namespace(t, "other", "")
	e.channel(t, "team", "telemetry", "telemetry", "64Ki")
	e.pod(t, "team", "p1", "telemetry", thisNode)
	e.pod(t, "team", "remote", "remote", "node-b")
	e.channel(t, "team", "elsewhere", "remote", "64Ki") // selects only another node's pod
	e.pod(t, "other", "p2", "telemetry", thisNode)      // no channel in its namespace

	// The channel appears with the spec's settings, and the status says so.
	tele := e.dir("team", "telemetry")
	cfg := waitKeys(t, filepath.Join(tele, "config"), map[string]string{
		"type": "pubsub", "policy": "block", "capacity": "65536", "member_slots": "16", "lease": "2s",
	})
	epoch := cfg["epoch"]
	e.entry(t, "team", "telemetry", state(v1.NodeReady, 1, 0))
	for _, p := range []string{e.dir("other", "telemetry"), e.dir("team", "elsewhere")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want no such directory", p, err)
		}
	}

	// A directory made by hand is not the reconciler's: a resource of the
	// same name neither changes nor removes it, and says why.
	hand := e.dir("team", "handmade")
	if err := os.Mkdir(hand, 0o755); err != nil {
		t.Fatal(err)
	}
	e.channel(t, "team", "handmade", "telemetry", "64Ki")
	e.entry(t, "team", "handmade", func(n *v1.NodeStatus) error {
		if n.State != v1.NodeRejected || !strings.Contains(n.Message, "outside Kubernetes") {
			return errors.New("want Rejected: made outside Kubernetes")
		}
		return nil
	})

	// The namespace's quota follows its annotation, live; keys left out
	// take the default.
	quota := filepath.Join(e.cfg.MountPoint, "team", ".quota")
	waitKeys(t, quota, map[string]string{"max_channels": "3", "max_bytes": "67108864", "max_member_slots": "65536"})
	e.annotate(t, "team", "max_channels 3; max_member_slots 48")
	waitKeys(t, quota, map[string]string{"max_channels": "3", "max_bytes": "1073741824", "max_member_slots": "48"})
	// telemetry's 16 member slots and handmade's 64 are over 48 already:
	// a third channel is refused, and the status says why.
	e.channel(t, "team", "third", "telemetry", "64Ki")
	e.entry(t, "team", "third", func(n *v1.NodeStatus) error {
		if n.State != v1.NodeRejected || !strings.Contains(n.Message, "quota") {
			return errors.New("want Rejected for the quota")
		}
		return nil
	})
	if _, err := os.Stat(e.dir("team", "third")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("channel over the quota made: %v", err)
	}
	// A larger quota lets it come.
	e.annotate(t, "team", "max_channels 3")
	waitKeys(t, filepath.Join(e.dir("team", "third"), "config"), map[string]string{"capacity": "65536"})
	e.entry(t, "team", "third", state(v1.NodeReady, 1, 0))

	// Members attached through the mount are counted in the status.
	f := startFlow(t, tele)
	f.waitMore(t, 100)
	e.entry(t, "team", "telemetry", state(v1.NodeReady, 1, 2))

	// A spec change that needs an idle channel: the state says why and
	// the channel keeps its settings and its messages.
	gen := e.setCapacity(t, "team", "telemetry", "128Ki")
	e.entry(t, "team", "telemetry", state(v1.NodeNeedsIdle, gen, 2))
	// Back to the applied settings: Ready, and the ring was not re-made.
	gen = e.setCapacity(t, "team", "telemetry", "64Ki")
	e.entry(t, "team", "telemetry", state(v1.NodeReady, gen, 2))
	if got := waitKeys(t, filepath.Join(tele, "config"), map[string]string{"capacity": "65536"}); got["epoch"] != epoch {
		t.Errorf("epoch %s, was %s: a no-op spec change re-created the ring", got["epoch"], epoch)
	}

	// The agent restarts while messages flow: the channel in use is not
	// disturbed (messages flow while no agent runs), and the new agent
	// rebuilds its view from the state directory and the API server.
	f.waitMore(t, 100)
	e.stopAgent(t)
	// While no agent runs, messages flow, a resource goes and another
	// comes: the new agent follows both.
	if err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels("team").Delete(ctx, "third", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.channel(t, "team", "during", "telemetry", "64Ki")
	f.waitMore(t, 100)
	e.startAgent(t)
	waitGone(t, e.dir("team", "third"))
	waitKeys(t, filepath.Join(e.dir("team", "during"), "config"), map[string]string{"capacity": "65536"})
	f.waitMore(t, 500)
	if got := waitKeys(t, filepath.Join(tele, "config"), nil); got["epoch"] != epoch {
		t.Errorf("epoch %s after the restart, was %s: the ring was re-created under its members", got["epoch"], epoch)
	}
	e.entry(t, "team", "telemetry", state(v1.NodeReady, gen, 2))
	e.entry(t, "team", "handmade", func(n *v1.NodeStatus) error {
		if n.State != v1.NodeRejected {
			return errors.New("want Rejected after the restart too")
		}
		return nil
	})

	// The pod goes: the idle channels it selected go (during), the one in
	// use stays until its members leave; the handmade one stays.
	if err := e.kube.CoreV1().Pods("team").Delete(ctx, "p1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, e.dir("team", "during"))
	if _, err := os.Stat(tele); err != nil {
		t.Fatalf("channel in use removed: %v", err)
	}
	e.entry(t, "team", "telemetry", state(v1.NodeReady, gen, 2))
	f.finish(t)
	t.Logf("%d messages carried end to end across the agent restart", f.got.Load())
	f.ring.Close()
	waitGone(t, tele)
	e.entry(t, "team", "telemetry", nil)
	e.entry(t, "team", "handmade", nil)

	for _, name := range []string{"telemetry", "handmade", "during"} {
		if err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels("team").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A channel made by hand outlives the resource of its name. The
	// reconciler has seen the deletion once the namespace's channels are
	// all handled: a new resource's channel appearing tells.
	e.pod(t, "team", "p3", "late", thisNode)
	e.channel(t, "team", "late", "late", "64Ki")
	waitKeys(t, filepath.Join(e.dir("team", "late"), "config"), map[string]string{"capacity": "65536"})
	if _, err := os.Stat(hand); err != nil {
		t.Errorf("handmade channel removed: %v", err)
	}
}
