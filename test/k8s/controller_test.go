package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	shimmyv1alpha1 "github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned/typed/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/controller"
	k8snode "github.com/shimmy-dev/shimmy/k8s/node"
	"github.com/shimmy-dev/shimmy/k8s/webhook/serving"
	"github.com/shimmy-dev/shimmy/registry"
)

// The identities of deploy/rbac.
const (
	systemNS       = "shimmy-system"
	agentSA        = "shimmy-agent"
	controllerSA   = "shimmy-controller"
	convergeWithin = 60 * time.Second
)

// TestController installs deploy/ as users do and runs the controller with
// its ServiceAccount's permissions against a real API server.
func TestController(t *testing.T) {
	c := k8stest.Start(t)
	install(t, c) // every part below needs it
	t.Run("RBAC", func(t *testing.T) { testRBAC(t, c) })
	t.Run("AgentCannotWriteSpec", func(t *testing.T) { testAgentCannotWriteSpec(t, c) })
	t.Run("Status", func(t *testing.T) { testStatus(t, c) })
	t.Run("LeaderElection", func(t *testing.T) { testLeaderElection(t, c) })
	t.Run("WithAgents", func(t *testing.T) { testWithAgents(t, c) })
	t.Run("LostLeadership", func(t *testing.T) { testLostLeadership(t, c) })
}

// install: the namespace, the CRD and the RBAC manifests pass the
// server's dry run and then apply (the namespace first: a dry run creates
// nothing, so the ServiceAccounts' namespace must exist for real).
func install(t *testing.T, c *k8stest.Cluster) {
	t.Helper()
	root := k8stest.RepoRoot(t)
	for _, step := range [][]string{{"deploy/namespace.yaml", crdDir}, {"deploy/rbac"}} {
		args := []string{"apply"}
		for _, p := range step {
			args = append(args, "-f", filepath.Join(root, p))
		}
		out, err := c.Kubectl("", append(args, "--dry-run=server")...)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out, "(server dry run)"); n == 0 || n != strings.Count(out, "\n") {
			t.Fatalf("kubectl %s --dry-run=server: %q", strings.Join(args, " "), out)
		}
		c.Apply(t, step...)
	}
	for _, sa := range []string{agentSA, controllerSA} {
		if _, err := c.Clientset(t).CoreV1().ServiceAccounts(systemNS).Get(context.Background(), sa, metav1.GetOptions{}); err != nil {
			t.Errorf("ServiceAccount %s/%s: %v", systemNS, sa, err)
		}
	}
}

// as returns the cluster's configuration acting as a ServiceAccount of
// deploy/rbac (the admin impersonates it: its requests are authorized with
// that account's roles only).
func as(c *k8stest.Cluster, sa string) *rest.Config {
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + systemNS + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNS, "system:authenticated"},
	}
	return cfg
}

func shimmyClient(t *testing.T, cfg *rest.Config) versioned.Interface {
	t.Helper()
	cs, err := versioned.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func kubeClient(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// testRBAC asks the API server's authorizer what each identity may do:
// what its component needs, and nothing around it.
func testRBAC(t *testing.T, c *k8stest.Cluster) {
	type access struct {
		verb, group, resource, sub, ns string
		name                           string // one object's, if set
	}
	smc := func(verb string) access { return access{verb, v1.GroupName, "sharedmemorychannels", "", "team", ""} }
	status := func(verb string) access {
		return access{verb, v1.GroupName, "sharedmemorychannels", "status", "team", ""}
	}
	core := func(verb, resource, ns string) access { return access{verb, "", resource, "", ns, ""} }
	named := func(a access, name string) access { a.name = name; return a }
	webhookSecret := func(verb string) access { return named(core(verb, "secrets", systemNS), serving.DefaultSecret) }
	mwc := func(verb, name string) access {
		return access{verb, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", name}
	}
	lease := func(verb, ns string) access { return access{verb, "coordination.k8s.io", "leases", "", ns, ""} }
	for _, tc := range []struct {
		sa      string
		allowed []access
		denied  []access
	}{
		{agentSA,
			[]access{smc("get"), smc("list"), smc("watch"), status("patch"),
				core("get", "pods", "team"), core("list", "pods", ""), core("watch", "pods", ""), core("get", "namespaces", ""), core("list", "namespaces", ""), core("watch", "namespaces", "")},
			[]access{smc("create"), smc("update"), smc("patch"), smc("delete"), status("update"),
				core("create", "pods", "team"), core("delete", "pods", "team"), core("patch", "namespaces", ""), core("get", "secrets", systemNS),
				core("get", "nodes", ""), core("create", "events", systemNS), lease("create", systemNS)}},
		{controllerSA,
			[]access{smc("get"), smc("list"), smc("watch"), status("patch"), core("list", "pods", ""), core("watch", "pods", ""),
				lease("get", systemNS), lease("create", systemNS), lease("update", systemNS), core("create", "events", systemNS),
				webhookSecret("get"), webhookSecret("update"), core("create", "secrets", systemNS), mwc("get", serving.DefaultWebhookConfig), mwc("patch", serving.DefaultWebhookConfig)},
			[]access{smc("create"), smc("update"), smc("patch"), smc("delete"), status("update"),
				core("create", "pods", "team"), core("get", "secrets", systemNS), core("list", "namespaces", ""),
				lease("create", "team"), lease("update", "kube-system"), lease("delete", systemNS), core("create", "events", "team"),
				core("list", "secrets", systemNS), named(core("get", "secrets", systemNS), "other"), webhookSecret("delete"), core("create", "secrets", "team"),
				mwc("patch", "another"), mwc("list", ""), mwc("create", ""), mwc("delete", serving.DefaultWebhookConfig)}},
	} {
		for _, want := range []bool{true, false} {
			list := tc.allowed
			if !want {
				list = tc.denied
			}
			for _, a := range list {
				name := fmt.Sprintf("%s/%s %s.%s/%s %q in %q", tc.sa, a.verb, a.resource, a.group, a.sub, a.name, a.ns)
				sar := &authv1.SubjectAccessReview{Spec: authv1.SubjectAccessReviewSpec{
					User:   "system:serviceaccount:" + systemNS + ":" + tc.sa,
					Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNS, "system:authenticated"},
					ResourceAttributes: &authv1.ResourceAttributes{
						Namespace: a.ns, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub, Name: a.name,
					},
				}}
				got, err := c.Clientset(t).AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if got.Status.Allowed != want {
					t.Errorf("%s: allowed=%v, want %v", name, got.Status.Allowed, want)
				}
			}
		}
	}
}

// testAgentCannotWriteSpec: acting as the agent, writing a node entry of
// the status works and every write of the channel itself is forbidden.
func testAgentCannotWriteSpec(t *testing.T, c *k8stest.Cluster) {
	ctx := context.Background()
	ns := newNamespace(t, c, "agent-rbac")
	ch := newChannel(t, c, ns, "c", true)
	agent := shimmyClient(t, as(c, agentSA)).ShimmyV1alpha1().SharedMemoryChannels(ns)
	writeEntry(t, c, ns, "c", v1.NodeStatus{Name: "n1", Members: 2, ObservedGeneration: ch.Generation, State: v1.NodeReady})

	_, err := agent.Patch(ctx, "c", types.MergePatchType, []byte(`{"spec":{"memberSlots":8}}`), metav1.PatchOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("agent patched the spec: %v", err)
	}
	got, err := agent.Get(ctx, "c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Spec.MemberSlots = ptr(int32(8))
	if _, err := agent.Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent updated the channel: %v", err)
	}
	if _, err := agent.UpdateStatus(ctx, got, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent replaced the whole status: %v", err)
	}
	if err := agent.Delete(ctx, "c", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent deleted the channel: %v", err)
	}
	fresh := &v1.SharedMemoryChannel{ObjectMeta: metav1.ObjectMeta{Name: "d"}, Spec: got.Spec}
	if _, err := agent.Create(ctx, fresh, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent created a channel: %v", err)
	}
	after, err := agent.Get(ctx, "c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *after.Spec.MemberSlots != 64 || len(after.Status.Nodes) != 1 || after.Status.Nodes[0].Members != 2 {
		t.Errorf("channel after the agent's writes: spec.memberSlots %d, status.nodes %+v; want 64 and the one entry it applied", *after.Spec.MemberSlots, after.Status.Nodes)
	}
	pods := kubeClient(t, as(c, agentSA)).CoreV1().Pods(ns)
	if _, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=n1"}); err != nil {
		t.Errorf("agent cannot list its node's pods: %v", err)
	}
	if err := pods.Delete(ctx, "x", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent may delete pods: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T, c *k8stest.Cluster, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Clientset(t).CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// newChannel creates a channel selecting the pods labelled app=<name>.
func newChannel(t *testing.T, c *k8stest.Cluster, ns, name string, mirror bool) *v1.SharedMemoryChannel {
	t.Helper()
	ch := &v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.SharedMemoryChannelSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Mirror:   &mirror,
		},
	}
	got, err := shimmyClient(t, c.Config).ShimmyV1alpha1().SharedMemoryChannels(ns).Create(context.Background(), ch, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// writeEntry writes a node's entry of a channel's status as that node's
// agent does: server-side apply of the status subresource, with the
// agent's field manager and the agent ServiceAccount's permissions.
func writeEntry(t *testing.T, c *k8stest.Cluster, ns, name string, e v1.NodeStatus) {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"apiVersion": v1.SchemeGroupVersion.String(), "kind": "SharedMemoryChannel",
		"metadata": map[string]string{"name": name, "namespace": ns},
		"status":   map[string]any{"nodes": []v1.NodeStatus{e}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = shimmyClient(t, as(c, agentSA)).ShimmyV1alpha1().SharedMemoryChannels(ns).Patch(context.Background(), name,
		types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "shimmy-agent-" + e.Name, Force: ptr(true)}, "status")
	if err != nil {
		t.Fatalf("agent %s: apply status of %s/%s: %v", e.Name, ns, name, err)
	}
}

// runController runs a controller as the controller ServiceAccount until
// the test ends; it counts the status writes that reach the API server.
func runController(t *testing.T, c *k8stest.Cluster, identity, lease string, timeout time.Duration) (stop func() error, writes *atomic.Int64) {
	t.Helper()
	ctl, writes := newController(t, c, identity, lease, timeout, controller.MetricsOff)
	return k8stest.Go(t, ctl.Run), writes
}

// newController builds a controller acting as the controller
// ServiceAccount, with short leader-election timing; writes counts the
// status writes that reach the API server.
func newController(t *testing.T, c *k8stest.Cluster, identity, lease string, timeout time.Duration, metrics string, edits ...func(*controller.Config)) (ctl *controller.Controller, writes *atomic.Int64) {
	t.Helper()
	writes = new(atomic.Int64)
	kcfg := as(c, controllerSA)
	kcfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/status") {
				writes.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	cfg := controller.DefaultConfig()
	cfg.Kube, cfg.Identity, cfg.LeaseName, cfg.MetricsAddr = kcfg, identity, lease, metrics
	cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = 4*time.Second, 3*time.Second, 200*time.Millisecond
	cfg.NodeReportTimeout = timeout
	for _, edit := range edits {
		edit(&cfg)
	}
	ctl, err := controller.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ctl, writes
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// want is what the controller should write for a channel.
type want struct {
	ready, degraded metav1.ConditionStatus
	reason          string // Ready's
	dreason         string // Degraded's
	dmsg            []string
	peers           []v1.MirrorPeer
}

// check compares a channel's status with w: at the channel's generation,
// the controller's fields as wanted and the agents' entries untouched.
func (w want) check(ch *v1.SharedMemoryChannel, entries []v1.NodeStatus) error {
	st := ch.Status
	if st.ObservedGeneration != ch.Generation {
		return fmt.Errorf("observedGeneration %d, generation %d", st.ObservedGeneration, ch.Generation)
	}
	r, d := meta.FindStatusCondition(st.Conditions, v1.ConditionReady), meta.FindStatusCondition(st.Conditions, v1.ConditionDegraded)
	if r == nil || d == nil {
		return fmt.Errorf("conditions %+v", st.Conditions)
	}
	if r.Status != w.ready || r.Reason != w.reason || r.ObservedGeneration != ch.Generation {
		return fmt.Errorf("Ready %s/%s at %d (%q), want %s/%s", r.Status, r.Reason, r.ObservedGeneration, r.Message, w.ready, w.reason)
	}
	if d.Status != w.degraded || d.Reason != w.dreason {
		return fmt.Errorf("Degraded %s/%s (%q), want %s/%s", d.Status, d.Reason, d.Message, w.degraded, w.dreason)
	}
	for _, m := range w.dmsg {
		if !strings.Contains(d.Message, m) {
			return fmt.Errorf("Degraded message %q does not say %q", d.Message, m)
		}
	}
	var peers []v1.MirrorPeer
	if st.Mirror != nil {
		peers = st.Mirror.Peers
	}
	if !reflect.DeepEqual(peers, w.peers) {
		return fmt.Errorf("mirror peers %+v, want %+v", peers, w.peers)
	}
	if len(st.Nodes) != len(entries) {
		return fmt.Errorf("status.nodes %+v, want the agents' %+v", st.Nodes, entries)
	}
	for _, e := range entries {
		found := false
		for _, n := range st.Nodes {
			found = found || reflect.DeepEqual(n, e)
		}
		if !found {
			return fmt.Errorf("status.nodes %+v lacks the agent's entry %+v", st.Nodes, e)
		}
	}
	return nil
}

// testStatus: conditions and the mirror plan, computed from pods and from
// node entries written as agents write them, one channel per case.
func testStatus(t *testing.T, c *k8stest.Cluster) {
	const timeout = 3 * time.Second
	runController(t, c, "status", "status-test", timeout)
	const a, b, cc = "10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"
	type node struct {
		name  string
		state v1.NodeState
		stale bool // reports the previous generation
		addr  string
	}
	ok := func(name, addr string) node { return node{name: name, state: v1.NodeReady, addr: addr} }
	for _, tc := range []struct {
		name    string
		mirror  bool
		podsOn  []string
		entries []node
		bump    bool // change the spec once (generation 2) before the agents report
		want    want
	}{
		{name: "no-pods", mirror: true,
			want: want{ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled}},
		{name: "one-node", mirror: true, podsOn: []string{"n1", "n1"}, entries: []node{ok("n1", a)},
			want: want{ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled}},
		{name: "mesh", mirror: true, podsOn: []string{"n1", "n2", "n3"}, entries: []node{ok("n3", cc), ok("n1", a), ok("n2", b)},
			want: want{ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled,
				peers: []v1.MirrorPeer{{Name: "n1", Address: a}, {Name: "n2", Address: b}, {Name: "n3", Address: cc}}}},
		{name: "mirror-off", mirror: false, podsOn: []string{"n1", "n2"}, entries: []node{ok("n1", a), ok("n2", b)},
			want: want{ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled}},
		{name: "stale", mirror: true, bump: true, podsOn: []string{"n1", "n2"}, entries: []node{ok("n1", a), {name: "n2", state: v1.NodeReady, stale: true, addr: b}},
			want: want{ready: "False", reason: v1.ReasonPending, degraded: "False", dreason: v1.ReasonPending,
				peers: []v1.MirrorPeer{{Name: "n1", Address: a}, {Name: "n2", Address: b}}}},
		{name: "needs-idle", mirror: true, podsOn: []string{"n1", "n2"}, entries: []node{{name: "n1", state: v1.NodeNeedsIdle, addr: a}, ok("n2", b)},
			want: want{ready: "False", reason: v1.ReasonNeedsIdle, degraded: "True", dreason: v1.ReasonNeedsIdle, dmsg: []string{"n1: NeedsIdle"},
				peers: []v1.MirrorPeer{{Name: "n1", Address: a}, {Name: "n2", Address: b}}}},
		{name: "broken-and-rejected", mirror: true, podsOn: []string{"n1", "n2", "n3"},
			entries: []node{{name: "n1", state: v1.NodeRejected}, {name: "n2", state: v1.NodeBroken, addr: b}, ok("n3", cc)},
			want:    want{ready: "False", reason: v1.ReasonBroken, degraded: "True", dreason: v1.ReasonBroken, dmsg: []string{"n2: Broken", "n1: Rejected"}}},
		{name: "silent-node", mirror: true, podsOn: []string{"n1", "n2"}, entries: []node{ok("n1", a)},
			want: want{ready: "False", reason: v1.ReasonNotReported, degraded: "True", dreason: v1.ReasonNotReported, dmsg: []string{"n2: no report for 3s"}}},
		{name: "other-namespace-pods-do-not-count", mirror: true, entries: nil,
			want: want{ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t, c, "status-"+tc.name)
			ch := newChannel(t, c, ns, "ch", tc.mirror)
			if tc.name == "other-namespace-pods-do-not-count" {
				k8stest.BindPod(t, c.Clientset(t), "default", ns, "ch", "n9") // selected labels, wrong namespace
			}
			if tc.bump {
				var err error
				ch, err = shimmyClient(t, c.Config).ShimmyV1alpha1().SharedMemoryChannels(ns).Patch(context.Background(), "ch",
					types.MergePatchType, []byte(`{"spec":{"memberSlots":8}}`), metav1.PatchOptions{})
				if err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range tc.podsOn {
				k8stest.BindPod(t, c.Clientset(t), ns, fmt.Sprintf("p%d", i), "ch", n)
			}
			var entries []v1.NodeStatus
			for _, n := range tc.entries {
				e := v1.NodeStatus{Name: n.name, Members: 1, ObservedGeneration: ch.Generation, State: n.state, MirrorAddress: n.addr}
				if n.stale {
					e.ObservedGeneration--
				}
				if n.state != v1.NodeReady {
					e.Message = "why " + n.name
				}
				writeEntry(t, c, ns, "ch", e)
				entries = append(entries, e)
			}
			api := shimmyClient(t, c.Config).ShimmyV1alpha1().SharedMemoryChannels(ns)
			wait.Eventually(t, convergeWithin, func() error {
				got, err := api.Get(context.Background(), "ch", metav1.GetOptions{})
				if err != nil {
					return err
				}
				return tc.want.check(got, entries)
			})
			got, err := api.Get(context.Background(), "ch", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkOwners(t, got)
		})
	}
}

// checkOwners: the controller's fields are the controller's and each entry
// of status.nodes is its agent's (server-side apply's managed fields).
func checkOwners(t *testing.T, ch *v1.SharedMemoryChannel) {
	t.Helper()
	owns := map[string]string{}
	for _, mf := range ch.ManagedFields {
		if mf.Subresource == "status" && mf.FieldsV1 != nil {
			owns[mf.Manager] = string(mf.FieldsV1.Raw)
		}
	}
	ctl := owns[controller.FieldManager]
	for _, f := range []string{`"f:observedGeneration"`, `"k:{\"type\":\"Ready\"}"`, `"k:{\"type\":\"Degraded\"}"`} {
		if !strings.Contains(ctl, f) {
			t.Errorf("%s does not own %s: %s", controller.FieldManager, f, ctl)
		}
	}
	if strings.Contains(ctl, `"f:nodes"`) {
		t.Errorf("%s owns status.nodes: %s", controller.FieldManager, ctl)
	}
	for _, n := range ch.Status.Nodes {
		if !strings.Contains(owns["shimmy-agent-"+n.Name], fmt.Sprintf(`"k:{\"name\":\"%s\"}"`, n.Name)) {
			t.Errorf("shimmy-agent-%s does not own its entry: %v", n.Name, owns)
		}
	}
}

// testLeaderElection: of two controllers only the leader writes; when it
// stops, it releases the Lease and the other takes over and writes.
func testLeaderElection(t *testing.T, c *k8stest.Cluster) {
	ctx := context.Background()
	const leaseName = "election-test"
	stops := map[string]func() error{}
	writes := map[string]*atomic.Int64{}
	for _, id := range []string{"one", "two"} {
		stops[id], writes[id] = runController(t, c, id, leaseName, time.Minute)
	}
	leases := c.Clientset(t).CoordinationV1().Leases(systemNS)
	holder := func() (string, error) {
		l, err := leases.Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return "", errors.New("no holder")
		}
		return *l.Spec.HolderIdentity, nil
	}
	var leader string
	wait.Eventually(t, convergeWithin, func() (err error) { leader, err = holder(); return err })
	follower := map[string]string{"one": "two", "two": "one"}[leader]

	ns := newNamespace(t, c, "election")
	ch := newChannel(t, c, ns, "ch", true)
	api := shimmyClient(t, c.Config).ShimmyV1alpha1().SharedMemoryChannels(ns)
	k8stest.BindPod(t, c.Clientset(t), ns, "p", "ch", "n1")
	entries := []v1.NodeStatus{{Name: "n1", Members: 1, ObservedGeneration: ch.Generation, State: v1.NodeReady, MirrorAddress: "10.0.0.1:7000"}}
	writeEntry(t, c, ns, "ch", entries[0])
	ready := want{ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled}
	converge := func(w want) {
		t.Helper()
		wait.Eventually(t, convergeWithin, func() error {
			got, err := api.Get(ctx, "ch", metav1.GetOptions{})
			if err != nil {
				return err
			}
			return w.check(got, entries)
		})
	}
	converge(ready)
	if writes[leader].Load() == 0 || writes[follower].Load() != 0 {
		t.Fatalf("status writes: leader %s %d, follower %s %d; want only the leader's", leader, writes[leader].Load(), follower, writes[follower].Load())
	}

	if err := stops[leader](); err != nil {
		t.Fatalf("leader %s: Run = %v, want nil after its context ended", leader, err)
	}
	stoppedAt := writes[leader].Load()
	wait.Eventually(t, convergeWithin, func() error {
		if h, err := holder(); err != nil || h != follower {
			return fmt.Errorf("lease held by %q (%v), want %s", h, err, follower)
		}
		return nil
	})

	// A second node joins: the new leader writes the mesh.
	k8stest.BindPod(t, c.Clientset(t), ns, "q", "ch", "n2")
	entries = append(entries, v1.NodeStatus{Name: "n2", Members: 3, ObservedGeneration: ch.Generation, State: v1.NodeReady, MirrorAddress: "10.0.0.2:7000"})
	writeEntry(t, c, ns, "ch", entries[1])
	ready.peers = []v1.MirrorPeer{{Name: "n1", Address: "10.0.0.1:7000"}, {Name: "n2", Address: "10.0.0.2:7000"}}
	converge(ready)
	if writes[follower].Load() == 0 || writes[leader].Load() != stoppedAt {
		t.Errorf("after the handover: %s wrote %d times, the stopped %s %d more", follower, writes[follower].Load(), leader, writes[leader].Load()-stoppedAt)
	}
}

// runAgent runs a node reconciler for node, with a registry of its own, as
// the agent ServiceAccount, until the test ends.
func runAgent(t *testing.T, c *k8stest.Cluster, node, mirror string) *registry.Registry {
	t.Helper()
	reg, err := registry.New(registry.Options{StateDir: testenv.ShmDir(t, "kctl-"+node), Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	cfg := as(c, agentSA)
	r, err := k8snode.New(k8snode.Options{Node: node, Kube: kubeClient(t, cfg), Shimmy: shimmyClient(t, cfg), Registry: reg,
		Log: testenv.QuietLog(), MirrorAddress: mirror, IdlePoll: 100 * time.Millisecond, StatusInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	k8stest.Go(t, func(ctx context.Context) error { return r.Run(ctx, 2) })
	return reg
}

// testWithAgents: real node reconcilers (as the agent ServiceAccount) and
// a controller (as its own) bring a channel selected on two nodes to
// Ready with a two-node mirroring plan, and to Degraded when a spec change
// needs an idle channel that is in use.
func testWithAgents(t *testing.T, c *k8stest.Cluster) {
	ctx := context.Background()
	runController(t, c, "with-agents", "with-agents", time.Minute)
	regs := map[string]*registry.Registry{}
	for node, addr := range map[string]string{"n1": "10.0.0.1:7000", "n2": "10.0.0.2:7000"} {
		regs[node] = runAgent(t, c, node, addr)
	}
	ns := newNamespace(t, c, "with-agents")
	newChannel(t, c, ns, "ch", true)
	k8stest.BindPod(t, c.Clientset(t), ns, "p1", "ch", "n1")
	k8stest.BindPod(t, c.Clientset(t), ns, "p2", "ch", "n2")
	api := shimmyClient(t, c.Config).ShimmyV1alpha1().SharedMemoryChannels(ns)
	readyOn := func(gen int64, nodes ...string) error {
		ch, err := api.Get(ctx, "ch", metav1.GetOptions{})
		if err != nil {
			return err
		}
		entries := ch.Status.Nodes
		if len(entries) != len(nodes) || ch.Generation != gen {
			return fmt.Errorf("generation %d, entries %+v, want generation %d on %v", ch.Generation, entries, gen, nodes)
		}
		w := want{ready: "True", reason: v1.ReasonReconciled, degraded: "False", dreason: v1.ReasonReconciled,
			peers: []v1.MirrorPeer{{Name: "n1", Address: "10.0.0.1:7000"}, {Name: "n2", Address: "10.0.0.2:7000"}}}
		return w.check(ch, entries)
	}
	wait.Eventually(t, convergeWithin, func() error { return readyOn(1, "n1", "n2") })
	for node, reg := range regs {
		if _, err := reg.Channel(ns, "ch"); err != nil {
			t.Errorf("%s: the agent made no channel: %v", node, err)
		}
	}
	checkOwners(t, mustGet(t, api, "ch"))

	// An open handle on n2 keeps its channel in use: a capacity change cannot
	// reach it there, and the controller says so.
	ch2, err := regs["n2"].Channel(ns, "ch")
	if err != nil {
		t.Fatal(err)
	}
	h, err := ch2.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := api.Patch(ctx, "ch", types.MergePatchType, []byte(`{"spec":{"capacity":"64Ki"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, convergeWithin, func() error {
		ch := mustGet(t, api, "ch")
		d := meta.FindStatusCondition(ch.Status.Conditions, v1.ConditionDegraded)
		r := meta.FindStatusCondition(ch.Status.Conditions, v1.ConditionReady)
		if ch.Status.ObservedGeneration != 2 || d == nil || r == nil || d.Status != "True" || d.Reason != v1.ReasonNeedsIdle ||
			!strings.Contains(d.Message, "n2: NeedsIdle") || r.Status != "False" {
			return fmt.Errorf("status %+v", ch.Status)
		}
		return nil
	})
}

func mustGet(t *testing.T, api shimmyv1alpha1.SharedMemoryChannelInterface, name string) *v1.SharedMemoryChannel {
	t.Helper()
	ch, err := api.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// testLostLeadership: a leader whose Lease is taken from it stops, with
// ErrLostLeadership, within its renew deadline; its /metrics and /healthz
// say what it was meanwhile.
func testLostLeadership(t *testing.T, c *k8stest.Cluster) {
	ctx := context.Background()
	const leaseName = "steal-test"
	ctl, _ := newController(t, c, "victim", leaseName, time.Minute, "127.0.0.1:0")
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ctl.Run(runCtx) }()

	get := func(path string) (string, error) {
		addr := ctl.MetricsAddr()
		if addr == "" {
			return "", errors.New("metrics server not started")
		}
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return string(b), fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return string(b), err
	}
	wait.Eventually(t, convergeWithin, func() error {
		m, err := get("/metrics")
		if err != nil || !strings.Contains(m, "\nshimmy_controller_leader 1\n") || !strings.Contains(m, "shimmy_controller_status_writes_total") {
			return fmt.Errorf("not leading yet: %v", err)
		}
		return nil
	})
	if body, err := get("/healthz"); err != nil || body != "ok" {
		t.Errorf("/healthz of a leader that renews: %q, %v", body, err)
	}

	leases := c.Clientset(t).CoordinationV1().Leases(systemNS)
	wait.Eventually(t, convergeWithin, func() error {
		l, err := leases.Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = ptr("thief"), ptr(int32(3600))
		l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{}) // a conflict with a renewal: try again
		return err
	})
	select {
	case err := <-done:
		if !errors.Is(err, controller.ErrLostLeadership) {
			t.Errorf("Run = %v, want ErrLostLeadership", err)
		}
	case <-time.After(convergeWithin):
		t.Fatal("the leader kept running without its Lease")
	}
	l, err := leases.Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil || *l.Spec.HolderIdentity != "thief" {
		t.Errorf("lease after the leader stopped: %+v, %v; want it left to the thief", l, err)
	}
}
