package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shimmy-dev/shimmy/internal/k8snode"
	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
)

// testOverlay is the kustomization the node tests apply on top of
// deploy/: what this test node lacks, and only that. Without kube-proxy
// no pod reaches the API server's cluster IP, so the agent and the
// controller are told its real address (KUBERNETES_SERVICE_HOST/_PORT,
// which in-cluster clients read); without a CNI plugin every pod uses the
// host's network, so the controller does too, as one replica (two would
// ask for the same host ports), on free ports; the webhook gives pods the
// test's pod directory. The host paths and the agent's health port are
// replaced in the rendering (deployManifest).
const testOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %[1]s
components: %[6]s
patches:
- target: {kind: DaemonSet, name: shimmy-agent}
  patch: |-
    - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}}
    - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: KUBERNETES_SERVICE_PORT, value: "%[2]d"}}
- target: {kind: Deployment, name: shimmy-controller}
  patch: |-
    - {op: replace, path: /spec/replicas, value: 1}
    - {op: add, path: /spec/template/spec/hostNetwork, value: true}
    - {op: add, path: /spec/template/spec/dnsPolicy, value: ClusterFirstWithHostNet}
    - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}}
    - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: KUBERNETES_SERVICE_PORT, value: "%[2]d"}}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--metrics=:%[3]d"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--webhook-listen=:%[4]d"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--webhook-host-root=%[5]s"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--webhook-refresh=2s"}
    - {op: replace, path: /spec/template/spec/containers/0/ports, value: [{name: webhook, containerPort: %[4]d}, {name: metrics, containerPort: %[3]d}]}
`

// deployManifest renders deploy/ with the test overlay and the given
// components of deploy/components, and this test node's host paths
// (mount, pod directory, state) and agent ports in place of the
// machine's.
func deployManifest(t *testing.T, c *k8stest.Cluster, mnt, pods, state string, components ...string) string {
	t.Helper()
	dir := t.TempDir()
	// kustomize takes a base by a relative path only.
	base, err := filepath.Rel(dir, filepath.Join(k8stest.RepoRoot(t), "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	comps := []string{}
	for _, comp := range components {
		comps = append(comps, filepath.Join(base, "components", comp))
	}
	list, err := json.Marshal(comps)
	if err != nil {
		t.Fatal(err)
	}
	overlay := fmt.Sprintf(testOverlay, base, c.Port, k8stest.FreePort(t), k8stest.FreePort(t), pods, list)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	oldnew := []string{
		"path: /run\n", "path: " + filepath.Dir(mnt) + "\n",
		"/host/run/shimmy", "/host/run/" + filepath.Base(mnt),
		"path: /run/shimmy-pods\n", "path: " + pods + "\n",
		"path: /dev/shm/shimmy\n", "path: " + state + "\n",
		"9477", strconv.Itoa(k8stest.FreePort(t)),
	}
	if slices.Contains(components, "mirror") {
		oldnew = append(oldnew, ":7470", ":"+strconv.Itoa(k8stest.FreePort(t)))
	}
	return kustomize(t, c, dir, oldnew...)
}

// waitController waits for the controller's rollout and for its
// webhook's caBundle: from then on the API server can call the webhook,
// which every pod creation outside the exempt namespaces needs.
func waitController(t *testing.T, c *k8stest.Cluster) {
	t.Helper()
	if _, err := c.Kubectl("", "-n", "shimmy-system", "rollout", "status", "deployment/shimmy-controller", "--timeout", PodTimeout.String()); err != nil {
		t.Fatal(err)
	}
	cs := c.Clientset(t)
	wait.Eventually(t, PodTimeout, func() error {
		cfg, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "shimmy-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, w := range cfg.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return fmt.Errorf("webhook %s has no caBundle yet", w.Name)
			}
		}
		return nil
	})
	t.Log("the controller is rolled out and its webhook has its caBundle")
}

// wiredManifest is what a user applies: a namespace, a channel and an
// application's pod that names no volume and no variable of Shimmy's
// (hostNetwork only because the test node has no CNI plugin). Its shell
// containers publish and subscribe through the channel's files, found
// through $SHIMMY_CHANNEL, and one subscribes through mmap. The pod
// stays (hold) so that the channel, which the agent removes once no pod
// selects it, can be looked at.
const wiredManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: wired
---
apiVersion: shimmy.io/v1alpha1
kind: SharedMemoryChannel
metadata:
  name: chat
  namespace: wired
spec:
  selector:
    matchLabels:
      app: chat
  capacity: 64Ki
`

const wiredPod = `apiVersion: v1
kind: Pod
metadata:
  name: chat
  namespace: wired
  labels:
    app: chat
spec:
  nodeName: %[1]s
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: pub
    image: shimmy-client:dev
    imagePullPolicy: Never
    command: ["sh", "-c", "until grep -q '^subscribers 2$' $SHIMMY_CHANNEL/stats; do sleep 0.1; done; i=1; while [ $i -le %[2]d ]; do echo \"msg $i\" > $SHIMMY_CHANNEL/pub; i=$((i+1)); done; echo published"]
  - name: files
    image: shimmy-client:dev
    imagePullPolicy: Never
    command: ["sh", "-c", "set -o pipefail; head -n %[2]d $SHIMMY_CHANNEL/sub | md5sum"]
  - name: mmap
    image: shimmy-client:dev
    imagePullPolicy: Never
    command: ["sh", "-c", "set -o pipefail; mmap-sub -n %[2]d | md5sum"]
  - name: hold
    image: shimmy-client:dev
    imagePullPolicy: Never
    command: ["sleep", "3600"]
`

// checkWebhook: with deploy/ installed (the agent with --kubernetes, the
// controller and its webhook), a SharedMemoryChannel and an unmodified
// pod manifest are all it takes: the webhook wires the pod, the agent
// makes the channel on the node, the pod's containers talk through it,
// and the channel's status says where it is.
func checkWebhook(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, mnt, mirrorAddr string) {
	t.Helper()
	if _, err := c.Kubectl(wiredManifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	waitWebhookSees(t, c, n, "wired", "chat")
	cs := c.Clientset(t)
	if _, err := c.Kubectl(fmt.Sprintf(wiredPod, n.Name, messages), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	waitExited(t, cs, "wired", "chat", "pub", "files", "mmap")
	for container, wants := range wantOutputs() {
		out := n.Logs(t, "wired", "chat", container)
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("container %s printed %q, want %q in it", container, out, w)
			}
		}
	}
	if stats, err := os.ReadFile(filepath.Join(mnt, "wired", "chat", "stats")); err != nil || !strings.Contains(string(stats), "messages "+strconv.Itoa(messages)+"\n") {
		t.Errorf("wired/chat/stats on the host: %q, %v; want messages %d", stats, err, messages)
	}

	shimmy, err := versioned.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, time.Minute, func() error {
		ch, err := shimmy.ShimmyV1alpha1().SharedMemoryChannels("wired").Get(context.Background(), "chat", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(ch.Status.Nodes) != 1 || ch.Status.Nodes[0].Name != n.Name || ch.Status.Nodes[0].State != v1.NodeReady || ch.Status.Nodes[0].MirrorAddress != mirrorAddr {
			return fmt.Errorf("status.nodes %+v, want the agent's entry for %s, Ready, mirrorAddress %q", ch.Status.Nodes, n.Name, mirrorAddr)
		}
		if !meta.IsStatusConditionTrue(ch.Status.Conditions, v1.ConditionReady) {
			return fmt.Errorf("conditions %+v, want the controller's Ready", ch.Status.Conditions)
		}
		return nil
	})
	if err := cs.CoreV1().Pods("wired").Delete(t.Context(), "chat", metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
	wait.Eventually(t, PodTimeout, func() error {
		if _, err := os.Stat(filepath.Join(mnt, "wired", "chat")); !os.IsNotExist(err) {
			return fmt.Errorf("wired/chat still on the node after its pod went: %v", err)
		}
		return nil
	})
}

// waitWebhookSees waits until namespace ns has its default ServiceAccount
// and the webhook wires its pods labelled app=<app>: its view of the
// channels follows a watch, and until a new channel is in it a pod would
// be admitted unwired. A server dry run creates nothing.
func waitWebhookSees(t *testing.T, c *k8stest.Cluster, n *k8snode.Node, ns, app string) {
	t.Helper()
	c.WaitServiceAccount(t, ns)
	cs := c.Clientset(t)
	probe := clientPod("probe", n.Name, "true")
	probe.Namespace, probe.Labels = ns, map[string]string{"app": app}
	wait.Eventually(t, time.Minute, func() error {
		p, err := cs.CoreV1().Pods(ns).Create(context.Background(), probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		for _, e := range p.Spec.Containers[0].Env {
			if e.Name == "SHIMMY_CHANNEL" {
				return nil
			}
		}
		return fmt.Errorf("the webhook does not wire the channel's pods yet")
	})
}

// waitExited waits until the named containers of a pod have exited with
// status 0; one that fails fails the test at once.
func waitExited(t *testing.T, cs kubernetes.Interface, ns, name string, containers ...string) {
	t.Helper()
	wait.Eventually(t, PodTimeout, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		done := 0
		for _, st := range p.Status.ContainerStatuses {
			if !slices.Contains(containers, st.Name) || st.State.Terminated == nil {
				continue
			}
			if st.State.Terminated.ExitCode != 0 {
				t.Fatalf("pod %s/%s: %s", ns, name, podStatus(p))
			}
			done++
		}
		if done < len(containers) {
			return fmt.Errorf("pod %s/%s: %d of %v exited: %s", ns, name, done, containers, podStatus(p))
		}
		return nil
	})
}
