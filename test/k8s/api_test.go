// Package k8s tests the SharedMemoryChannel resource against a real
// kube-apiserver and etcd (internal/k8stest): the CRD of deploy/crd as
// users install it, its schema's validation and defaults, and the
// generated clientset, listers and informers.
package k8s

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/client/informers/externalversions"
)

const (
	crdDir  = "deploy/crd"
	example = "deploy/examples/channel.yaml"
)

func TestSharedMemoryChannelAPI(t *testing.T) {
	c := k8stest.Start(t)
	c.Apply(t, crdDir)
	cs, err := versioned.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("DryRunServer", func(t *testing.T) { testDryRun(t, c) })
	t.Run("Kustomization", func(t *testing.T) { testKustomization(t, c) })
	t.Run("Rejected", func(t *testing.T) { testRejected(t, c) })
	t.Run("Defaults", func(t *testing.T) { testDefaults(t, cs) })
	t.Run("Informer", func(t *testing.T) { testInformer(t, cs, c.Clientset(t)) })
}

// testDryRun: the manifests users apply pass the server's validation.
func testDryRun(t *testing.T, c *k8stest.Cluster) {
	root := k8stest.RepoRoot(t)
	for _, p := range []string{crdDir, example} {
		out, err := c.Kubectl("", "apply", "--dry-run=server", "-f", root+"/"+p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "(server dry run)") {
			t.Errorf("kubectl apply --dry-run=server -f %s: %q", p, out)
		}
	}
}

// manifest is a SharedMemoryChannel named name whose spec is the given
// YAML lines (indented by four spaces).
func manifest(name string, spec ...string) string {
	return fmt.Sprintf(`apiVersion: shimmy.io/v1alpha1
kind: SharedMemoryChannel
metadata:
  name: %s
spec:
%s
`, name, "    "+strings.Join(spec, "\n    "))
}

const selector = "selector: {matchLabels: {app: x}}"

// testRejected: kubectl apply of a bad spec fails with the schema's
// message, and nothing is stored.
func testRejected(t *testing.T, c *k8stest.Cluster) {
	for _, tc := range []struct {
		name string
		doc  string
		want string
	}{
		{"type", manifest("a", selector, "type: foo"), `spec.type: Unsupported value: "foo": supported values: "pubsub", "stream"`},
		{"overflow", manifest("a", selector, "overflow: drop"), `spec.overflow: Unsupported value: "drop": supported values: "block", "overwrite"`},
		{"stream overwrite", manifest("a", selector, "type: stream", "overflow: overwrite"), "a stream channel is lossless: overflow must be block"},
		{"capacity not a power of two", manifest("a", selector, "capacity: 3Mi"), "capacity must be a power of two from 4Ki to 1Gi"},
		{"capacity decimal mega", manifest("a", selector, "capacity: 1M"), "capacity must be a power of two from 4Ki to 1Gi"},
		{"capacity too small", manifest("a", selector, "capacity: 2Ki"), "capacity must be a power of two from 4Ki to 1Gi"},
		{"capacity too large", manifest("a", selector, "capacity: 2Gi"), "capacity must be a power of two from 4Ki to 1Gi"},
		{"capacity fraction", manifest("a", selector, `capacity: "0.5"`), "capacity must be a power of two from 4Ki to 1Gi"},
		{"max message too large", manifest("a", selector, "capacity: 4Ki", "maxMessage: 1009"), "maxMessage must be at most capacity/4 - 16 bytes"},
		{"max message zero", manifest("a", selector, "maxMessage: 0"), "maxMessage must be a whole number of bytes, at least 1"},
		{"member slots zero", manifest("a", selector, "memberSlots: 0"), "spec.memberSlots: Invalid value: 0: spec.memberSlots in body should be greater than or equal to 1"},
		{"member slots too many", manifest("a", selector, "memberSlots: 4097"), "spec.memberSlots: Invalid value: 4097: spec.memberSlots in body should be less than or equal to 4096"},
		{"lease too short", manifest("a", selector, "lease: 9ms"), "lease must be from 10ms to 1h"},
		{"lease too long", manifest("a", selector, "lease: 61m"), "lease must be from 10ms to 1h"},
		{"lease not a duration", manifest("a", selector, "lease: soon"), `spec.lease in body should match`},
		{"no selector", manifest("a", "type: pubsub"), "spec.selector: Required value"},
		{"long name", manifest(strings.Repeat("n", 64), selector), "name must be at most 63 characters: it names the channel directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := c.Kubectl(tc.doc, "apply", "-f", "-")
			if err == nil {
				t.Fatalf("accepted:\n%s\n%s", tc.doc, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("kubectl said:\n%s\nwant it to say: %s", out, tc.want)
			}
		})
	}
	if out, err := c.Kubectl("", "get", "smc", "-o", "name"); err != nil || out != "" {
		t.Errorf("rejected specs were stored: %q, %v", out, err)
	}
}

// testDefaults: a spec with only a selector is stored with the schema's
// defaults, which are the ring's (channel.Config.WithDefaults).
func testDefaults(t *testing.T, cs versioned.Interface) {
	ctx := context.Background()
	ch := &v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults"},
		Spec:       v1.SharedMemoryChannelSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}},
	}
	if _, err := cs.ShimmyV1alpha1().SharedMemoryChannels("default").Create(ctx, ch, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := cs.ShimmyV1alpha1().SharedMemoryChannels("default").Get(ctx, "defaults", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := got.Spec
	for _, f := range []struct {
		field     string
		got, want any
	}{
		{"type", s.Type, v1.TypePubSub},
		{"overflow", s.Overflow, v1.OverflowBlock},
		{"capacity", quantity(s.Capacity), "1Mi"},
		{"maxMessage", quantity(s.MaxMessage), "<unset>"},
		{"memberSlots", deref(s.MemberSlots), int32(64)},
		{"lease", deref(s.Lease), metav1.Duration{Duration: 2 * time.Second}},
		{"mirror", deref(s.Mirror), true},
	} {
		if f.got != f.want {
			t.Errorf("spec.%s = %v, want %v", f.field, f.got, f.want)
		}
	}
}

func quantity(q *resource.Quantity) string {
	if q == nil {
		return "<unset>"
	}
	return q.String()
}

func deref[T any](p *T) any {
	if p == nil {
		return "<unset>"
	}
	return *p
}

// testInformer: the generated clientset, informer and lister see creates,
// updates and deletes, in the order they happen.
func testInformer(t *testing.T, cs versioned.Interface, clients kubernetes.Interface) {
	ctx, cancel := context.WithCancel(context.Background())
	ns := "informer"
	if _, err := clients.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	factory := externalversions.NewSharedInformerFactoryWithOptions(cs, 0, externalversions.WithNamespace(ns))
	inf := factory.Shimmy().V1alpha1().SharedMemoryChannels()
	events := make(chan string, 16)
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { events <- "add " + o.(*v1.SharedMemoryChannel).Name },
		UpdateFunc: func(_, o any) {
			events <- "update " + o.(*v1.SharedMemoryChannel).Name + " " + string(o.(*v1.SharedMemoryChannel).Spec.Type)
		},
		DeleteFunc: func(o any) { events <- "delete " + o.(*v1.SharedMemoryChannel).Name },
	})
	factory.Start(ctx.Done())
	defer func() { cancel(); factory.Shutdown() }() // Shutdown waits for the informers that cancel stops
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		t.Fatal("informer did not sync")
	}

	api := cs.ShimmyV1alpha1().SharedMemoryChannels(ns)
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}
	for _, name := range []string{"one", "two"} {
		ch := &v1.SharedMemoryChannel{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.SharedMemoryChannelSpec{Selector: sel}}
		if _, err := api.Create(ctx, ch, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	wait.Eventually(t, 30*time.Second, func() error {
		got, err := inf.Lister().SharedMemoryChannels(ns).List(labels.Everything())
		if err != nil || len(got) != 2 {
			return fmt.Errorf("lister has %d channels (%v), want 2", len(got), err)
		}
		return nil
	})
	list, err := api.List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 2 {
		t.Fatalf("list: %d items, %v", len(list.Items), err)
	}

	one, err := inf.Lister().SharedMemoryChannels(ns).Get("one")
	if err != nil {
		t.Fatal(err)
	}
	one = one.DeepCopy() // the lister's objects are the cache's own
	one.Spec.Type = v1.TypeStream
	if _, err := api.Update(ctx, one, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := api.Delete(ctx, "two", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"add one", "add two", "update one stream", "delete two"}
	for i, w := range want {
		select {
		case got := <-events:
			if got != w {
				t.Fatalf("event %d: %q, want %q", i, got, w)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("event %d (%q) never came", i, w)
		}
	}
}
