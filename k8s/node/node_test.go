package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/registry"
)

const (
	node    = "node-a"
	timeout = 60 * time.Second
)

type env struct {
	log    *logtest.Hook // the reconciler's log, at debug level
	kube   kubernetes.Interface
	shimmy versioned.Interface
	reg    *registry.Registry
}

// start runs a control plane with the CRD, a registry in tmpfs and a
// reconciler for node-a, its options changed by tune (if any), until the
// test ends.
func start(t *testing.T, tune ...func(*Options)) env {
	c := k8stest.Start(t)
	c.Apply(t, "deploy/crd")
	shimmy, err := versioned.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Options{StateDir: testenv.ShmDir(t, "node-test"), Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	e := env{log: hook, kube: c.Clientset(t), shimmy: shimmy, reg: reg}
	o := Options{Node: node, Kube: e.kube, Shimmy: shimmy, Registry: reg, Log: log, IdlePoll: 100 * time.Millisecond}
	for _, f := range tune {
		f(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, 2) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return e
}

func (e env) namespace(t *testing.T, name string) {
	t.Helper()
	if _, err := e.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// pod binds a pod labelled app=<app> to nodeName.
func (e env) pod(t *testing.T, ns, name, app, nodeName string) {
	t.Helper()
	k8stest.BindPod(t, e.kube, ns, name, app, nodeName)
}

func (e env) channel(t *testing.T, ns, name, app, capacity string) {
	t.Helper()
	q := resource.MustParse(capacity)
	smc := &v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.SharedMemoryChannelSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Type:     v1.TypeStream, Capacity: &q,
		},
	}
	if _, err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels(ns).Create(context.Background(), smc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// config waits until the node's channel ns/name has the given capacity
// (0: until it is absent) and returns its configuration.
func (e env) config(t *testing.T, ns, name string, capacity uint64) channel.Config {
	t.Helper()
	var cfg channel.Config
	wait.Eventually(t, timeout, func() error {
		ch, err := e.reg.Channel(ns, name)
		switch {
		case capacity == 0 && errors.Is(err, registry.ErrNotFound):
			return nil
		case capacity == 0:
			return fmt.Errorf("channel %s/%s still present (%v)", ns, name, err)
		case err != nil:
			return err
		}
		if cfg = ch.Config(); cfg.Capacity != capacity {
			return fmt.Errorf("capacity %d, want %d", cfg.Capacity, capacity)
		}
		return nil
	})
	return cfg
}

func TestReconciler(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	for _, ns := range []string{"team", "other"} {
		e.namespace(t, ns)
	}
	e.channel(t, "team", "jobs", "worker", "64Ki")
	e.channel(t, "team", "elsewhere", "remote", "64Ki")
	e.pod(t, "team", "w1", "worker", node)
	e.pod(t, "team", "r1", "remote", "node-b") // another node's pod
	e.pod(t, "other", "w2", "worker", node)    // selected by nothing in its namespace

	// A local pod selects team/jobs: the node has it, with the spec's settings.
	cfg := e.config(t, "team", "jobs", 64<<10)
	if cfg.Type != channel.TypeStream || cfg.Policy != channel.PolicyBlock || cfg.MemberSlots != 64 || cfg.Lease != 2*time.Second {
		t.Errorf("team/jobs config %+v, want the spec's stream, block, 64 slots, 2s lease", cfg)
	}

	// A ring found corrupt on the node: the status says Broken, and why.
	e.channel(t, "team", "fragile", "worker", "64Ki")
	e.config(t, "team", "fragile", 64<<10)
	fragile, err := e.reg.Channel("team", "fragile")
	if err != nil {
		t.Fatal(err)
	}
	fragile.MarkBroken(errors.New("test: ring corrupt"))
	wait.Eventually(t, timeout, func() error {
		smc, err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels("team").Get(ctx, "fragile", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n := smc.Status.Nodes; len(n) != 1 || n[0].Name != node || n[0].State != v1.NodeBroken || n[0].Message != "test: ring corrupt" {
			return fmt.Errorf("status nodes %+v, want this node Broken", n)
		}
		return nil
	})

	// A spec change reaches the idle channel.
	smc, err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels("team").Get(ctx, "jobs", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := resource.MustParse("128Ki")
	smc.Spec.Capacity = &q
	if _, err := e.shimmy.ShimmyV1alpha1().SharedMemoryChannels("team").Update(ctx, smc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.config(t, "team", "jobs", 128<<10)

	// A channel in use stays while its pod goes, and goes once it is idle.
	ch, err := e.reg.Channel("team", "jobs")
	if err != nil {
		t.Fatal(err)
	}
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	// No kubelet confirms a graceful deletion here: delete at once.
	if err := e.kube.CoreV1().Pods("team").Delete(ctx, "w1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	// The reconciler has tried to remove it and found it busy.
	wait.Eventually(t, timeout, func() error {
		for _, en := range e.log.AllEntries() {
			if en.Message == msgRemovalWaits && en.Data["channel"] == "team/jobs" {
				return nil
			}
		}
		return errors.New("no removal tried yet")
	})
	if _, err := e.reg.Channel("team", "jobs"); err != nil {
		t.Fatalf("channel in use removed: %v", err)
	}
	h.Close()
	e.config(t, "team", "jobs", 0)

	// Nothing was made for another node's pod or another namespace's.
	for _, c := range []struct{ ns, name string }{{"team", "elsewhere"}, {"other", "jobs"}} {
		if _, err := e.reg.Channel(c.ns, c.name); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("channel %s/%s: %v, want ErrNotFound", c.ns, c.name, err)
		}
	}
}
