package serving

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/shimmy-dev/shimmy/internal/wait"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	shimmyfake "github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned/fake"
)

const ns = "shimmy-system"

func newServer(t *testing.T, kube *kubefake.Clientset, o Options) *Server {
	t.Helper()
	o.Kube, o.Namespace = kube, ns
	if o.Shimmy == nil {
		o.Shimmy = shimmyfake.NewSimpleClientset()
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secretOf(t *testing.T, kube *kubefake.Clientset) *corev1.Secret {
	t.Helper()
	sec, err := kube.CoreV1().Secrets(ns).Get(context.Background(), DefaultSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// TestProvision: the leader makes the Secret once and keeps it while it is
// good; it renews the serving certificate when it is for another Service,
// unreadable or near its end, keeping a CA that still has long to live.
func TestProvision(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before provisions with these options first (nil: no Secret).
		before *Options
		// spoil, if set, damages the Secret before the second provision.
		spoil    func(*corev1.Secret)
		validity time.Duration
		renewed  bool // the serving certificate changes
		sameCA   bool // the CA (the caBundle) stays
	}{
		{name: "none yet", renewed: true},
		{name: "good: kept", before: &Options{}, sameCA: true},
		{name: "another service", before: &Options{Service: "other"}, renewed: true, sameCA: true},
		{name: "near its end, CA kept", before: &Options{Validity: time.Hour}, validity: 4 * time.Hour, renewed: true, sameCA: true},
		{name: "near its end, CA too", before: &Options{Validity: time.Hour}, validity: 24 * time.Hour, renewed: true},
		{name: "unreadable", before: &Options{}, spoil: func(s *corev1.Secret) { s.Data[KeyCert] = []byte("junk") }, renewed: true, sameCA: true},
		{name: "no CA key", before: &Options{}, spoil: func(s *corev1.Secret) { s.Data[KeyCert] = []byte("junk"); delete(s.Data, KeyCAKey) }, renewed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			kube := kubefake.NewSimpleClientset()
			var old *corev1.Secret
			if tc.before != nil {
				if _, err := newServer(t, kube, *tc.before).provision(ctx); err != nil {
					t.Fatal(err)
				}
				old = secretOf(t, kube)
				if tc.spoil != nil {
					tc.spoil(old)
					if _, err := kube.CoreV1().Secrets(ns).Update(ctx, old, metav1.UpdateOptions{}); err != nil {
						t.Fatal(err)
					}
				}
			}
			s := newServer(t, kube, Options{Validity: tc.validity})
			if _, err := s.provision(ctx); err != nil {
				t.Fatal(err)
			}
			got := secretOf(t, kube)
			if why := s.stale(got); why != "" {
				t.Errorf("after provision the Secret is stale: %s", why)
			}
			if got.Type != corev1.SecretTypeTLS {
				t.Errorf("Secret type %q, want %q", got.Type, corev1.SecretTypeTLS)
			}
			if old == nil {
				return
			}
			if renewed := !bytes.Equal(got.Data[KeyCert], old.Data[KeyCert]); renewed != tc.renewed {
				t.Errorf("serving certificate renewed: %v, want %v", renewed, tc.renewed)
			}
			if same := bytes.Equal(got.Data[KeyCA], old.Data[KeyCA]); same != tc.sameCA {
				t.Errorf("CA kept: %v, want %v", same, tc.sameCA)
			}
		})
	}
}

// TestServe: a replica that leads provisions the certificate, patches the
// caBundle of every webhook of its configuration, and answers an
// AdmissionReview over TLS that verifies against that caBundle for the
// Service's name; a replica with the Secret mounted serves the same.
func TestServe(t *testing.T) {
	kube := kubefake.NewSimpleClientset(&admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfig},
		Webhooks:   []admissionregv1.MutatingWebhook{{Name: "pods.shimmy.io"}, {Name: "other.shimmy.io"}},
	})
	chans := shimmyfake.NewSimpleClientset(&v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "frames"},
		Spec:       v1.SharedMemoryChannelSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cam"}}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	leader := newServer(t, kube, Options{Shimmy: chans, Listen: "127.0.0.1:0", Refresh: 50 * time.Millisecond})
	serve(t, ctx, leader)
	go leader.Lead(ctx)

	var bundle []byte
	wait.Eventually(t, 10*time.Second, func() error {
		cfg, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, DefaultWebhookConfig, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, w := range cfg.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return fmt.Errorf("webhook %s has no caBundle", w.Name)
			}
		}
		bundle = cfg.Webhooks[0].ClientConfig.CABundle
		return leader.Ready()
	})
	if want := secretOf(t, kube).Data[KeyCA]; !bytes.Equal(bundle, want) {
		t.Errorf("caBundle %q, want the Secret's ca.crt %q", bundle, want)
	}
	checkAdmits(t, leader.Addr(), bundle)

	dir := t.TempDir()
	for k, v := range secretOf(t, kube).Data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mounted := newServer(t, kube, Options{Shimmy: chans, Listen: "127.0.0.1:0", CertDir: dir})
	serve(t, ctx, mounted)
	wait.Eventually(t, 10*time.Second, mounted.Ready)
	checkAdmits(t, mounted.Addr(), bundle)
}

func serve(t *testing.T, ctx context.Context, s *Server) {
	t.Helper()
	ln, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// checkAdmits posts a pod's creation in namespace team, which the channel
// frames selects, as the API server does (TLS verified against bundle for
// the Service's DNS name), and expects a JSON patch.
func checkAdmits(t *testing.T, addr string, bundle []byte) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("caBundle holds no certificate")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: DefaultService + "." + ns + ".svc",
	}}}
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"cam","labels":{"app":"cam"}},"spec":{"containers":[{"name":"c","image":"x"}]}}`
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("1"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Namespace: "team", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(pod)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Post("https://"+addr+Path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s over TLS: %v", Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &review); err != nil || review.Response == nil {
		t.Fatalf("response %s %q: %v", resp.Status, b, err)
	}
	if r := review.Response; !r.Allowed || r.UID != "1" || !bytes.Contains(r.Patch, []byte("/run/shimmy/team/frames")) {
		t.Errorf("response %+v (patch %s), want allowed with the channel's wiring", r, r.Patch)
	}
}
