package k8s

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shimmy-dev/shimmy/internal/k8stest"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/k8s/controller"
	"github.com/shimmy-dev/shimmy/k8s/webhook"
	"github.com/shimmy-dev/shimmy/k8s/webhook/serving"
)

// TestWebhook: with deploy/'s Service and MutatingWebhookConfiguration
// installed, the real API server calls the webhook that `shimmy
// controller` serves over TLS (controllers in this process, with the
// controller ServiceAccount's permissions, on a host address: the API
// server reaches the Service through its EndpointSlice, as
// --enable-aggregator-routing makes it do). The leader provisions the
// certificate and the caBundle; a replica that does not lead serves too;
// pods of the channel's namespace that it selects are wired, others are
// not, a selected pod with hostIPC is refused; the certificate survives a
// restart of every replica.
func TestWebhook(t *testing.T) {
	c := k8stest.Start(t)
	install(t, c)
	c.Apply(t, "deploy/controller/service.yaml", "deploy/controller/webhook.yaml")
	kube := c.Clientset(t)
	team, other := newNamespace(t, c, "team"), newNamespace(t, c, "other")
	// Before the controllers start, so that their first view holds it.
	newChannel(t, c, team, "frames", false)

	a, b := runWebhookController(t, c, "a"), runWebhookController(t, c, "b")
	lease, err := kube.CoordinationV1().Leases(systemNS).Get(t.Context(), controller.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	follower := a
	if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == "a" {
		follower = b
	}
	t.Logf("the Service's endpoint is the replica that does not lead, %s", follower.id)
	routeService(t, kube, follower.ctl.WebhookAddr())
	bundle := waitCABundle(t, kube)
	waitWired(t, kube, team)

	for _, tc := range []struct {
		name, ns, app string
		hostIPC       bool
		wired         bool
		refused       string
	}{
		{name: "selected", ns: team, app: "frames", wired: true},
		{name: "not-selected", ns: team, app: "other"},
		{name: "other-namespace", ns: other, app: "frames"},
		{name: "selected-hostipc", ns: team, app: "frames", hostIPC: true, refused: webhook.ErrHostIPC.Error()},
		{name: "unselected-hostipc", ns: team, app: "other", hostIPC: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, err := kube.CoreV1().Pods(tc.ns).Create(t.Context(), appPod(tc.name, tc.app, tc.hostIPC), metav1.CreateOptions{})
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("create: %v, want refused with %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := checkWired(pod, tc.wired); err != nil {
				t.Error(err)
			}
		})
	}

	secret := webhookSecret(t, kube)
	t.Log("restarting every replica")
	a.stop()
	b.stop()
	c3 := runWebhookController(t, c, "c")
	routeService(t, kube, c3.ctl.WebhookAddr())
	waitWired(t, kube, team)
	if got := webhookSecret(t, kube); !bytes.Equal(got.Data[serving.KeyCert], secret.Data[serving.KeyCert]) || !bytes.Equal(got.Data[serving.KeyCA], secret.Data[serving.KeyCA]) {
		t.Error("a restarted controller replaced the webhook's certificate; want it kept in the Secret")
	}
	if got := waitCABundle(t, kube); !bytes.Equal(got, bundle) {
		t.Error("the caBundle changed across the restart")
	}
	pod, err := kube.CoreV1().Pods(team).Create(t.Context(), appPod("after-restart", "frames", false), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkWired(pod, true); err != nil {
		t.Error(err)
	}
}

type webhookController struct {
	id   string
	ctl  *controller.Controller
	stop func() error
}

// runWebhookController runs a controller replica serving the webhook on
// a host address (EndpointSlices refuse loopback ones) and waits until its
// /readyz says it can answer.
func runWebhookController(t *testing.T, c *k8stest.Cluster, id string) *webhookController {
	t.Helper()
	ctl, _ := newController(t, c, id, controller.DefaultLeaseName, time.Minute, "127.0.0.1:0", func(cfg *controller.Config) {
		cfg.Webhook = &serving.Options{Listen: net.JoinHostPort(k8stest.HostIP(t).String(), "0"), Refresh: 200 * time.Millisecond}
	})
	w := &webhookController{id: id, ctl: ctl, stop: k8stest.Go(t, ctl.Run)}
	wait.Eventually(t, convergeWithin, func() error {
		if ctl.MetricsAddr() == "" {
			return fmt.Errorf("replica %s not started", id)
		}
		resp, err := http.Get("http://" + ctl.MetricsAddr() + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("replica %s /readyz: %s %s", id, resp.Status, body)
		}
		return nil
	})
	return w
}

// routeService points the webhook Service of deploy/ at addr with an
// EndpointSlice, as the EndpointSlice controller would for a ready pod.
func routeService(t *testing.T, kube kubernetes.Interface, addr string) {
	t.Helper()
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "shimmy-controller-test", Namespace: systemNS,
			Labels: map[string]string{discoveryv1.LabelServiceName: serving.DefaultService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("webhook"), Port: ptr(int32(port)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	api := kube.DiscoveryV1().EndpointSlices(systemNS)
	if old, err := api.Get(t.Context(), slice.Name, metav1.GetOptions{}); err == nil {
		slice.ResourceVersion = old.ResourceVersion
		_, err = api.Update(t.Context(), slice, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := api.Create(t.Context(), slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func webhookSecret(t *testing.T, kube kubernetes.Interface) *corev1.Secret {
	t.Helper()
	s, err := kube.CoreV1().Secrets(systemNS).Get(t.Context(), serving.DefaultSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitCABundle waits until the leader has written the Secret's CA into
// the caBundle of deploy/'s webhook, and returns it.
func waitCABundle(t *testing.T, kube kubernetes.Interface) []byte {
	t.Helper()
	var bundle []byte
	wait.Eventually(t, convergeWithin, func() error {
		s, err := kube.CoreV1().Secrets(systemNS).Get(t.Context(), serving.DefaultSecret, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cfg, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), serving.DefaultWebhookConfig, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, w := range cfg.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, s.Data[serving.KeyCA]) {
				return fmt.Errorf("webhook %s: caBundle is not the Secret's ca.crt", w.Name)
			}
		}
		bundle = s.Data[serving.KeyCA]
		return nil
	})
	return bundle
}

// waitWired waits until the API server's call of the webhook wires a
// selected pod (a server dry run: nothing is created), which needs it to
// see the EndpointSlice and trust the certificate.
func waitWired(t *testing.T, kube kubernetes.Interface, ns string) {
	t.Helper()
	wait.Eventually(t, convergeWithin, func() error {
		pod, err := kube.CoreV1().Pods(ns).Create(t.Context(), appPod("probe", "frames", false), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		return checkWired(pod, true)
	})
}

// appPod is an application's pod as users write it: no volume, no
// variable of Shimmy's.
func appPod(name, app string, hostIPC bool) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{HostIPC: hostIPC, Containers: []corev1.Container{
			{Name: "one", Image: "busybox"}, {Name: "two", Image: "busybox"},
		}},
	}
}

// checkWired checks the pod as the API server stored it: with the
// channel frames' wiring in every container (wired), or untouched.
func checkWired(pod *corev1.Pod, wired bool) error {
	ns := pod.Namespace
	var vol *corev1.Volume
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == webhook.VolumeName {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if !wired {
		for _, ct := range pod.Spec.Containers {
			for _, e := range ct.Env {
				if strings.HasPrefix(e.Name, webhook.EnvSingle) {
					return fmt.Errorf("pod %s/%s container %s got %s", ns, pod.Name, ct.Name, e.Name)
				}
			}
		}
		if vol != nil {
			return fmt.Errorf("pod %s/%s got the volume %s", ns, pod.Name, webhook.VolumeName)
		}
		return nil
	}
	dir := "/run/shimmy/" + ns
	if vol == nil || vol.HostPath == nil || vol.HostPath.Path != dir || vol.HostPath.Type == nil || *vol.HostPath.Type != corev1.HostPathDirectory {
		return fmt.Errorf("pod %s/%s: volume %+v, want hostPath %s of type Directory", ns, pod.Name, vol, dir)
	}
	for _, ct := range pod.Spec.Containers {
		env := map[string]string{}
		for _, e := range ct.Env {
			env[e.Name] = e.Value
		}
		if env["SHIMMY_CHANNEL_FRAMES"] != dir+"/frames" || env["SHIMMY_CHANNEL"] != dir+"/frames" {
			return fmt.Errorf("pod %s/%s container %s: env %v, want SHIMMY_CHANNEL_FRAMES and SHIMMY_CHANNEL = %s/frames", ns, pod.Name, ct.Name, env, dir)
		}
		ok := false
		for _, m := range ct.VolumeMounts {
			ok = ok || m.Name == webhook.VolumeName && m.MountPath == dir && m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer
		}
		if !ok {
			return fmt.Errorf("pod %s/%s container %s: mounts %+v, want %s at %s with HostToContainer", ns, pod.Name, ct.Name, ct.VolumeMounts, webhook.VolumeName, dir)
		}
	}
	return nil
}
