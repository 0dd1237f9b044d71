package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/shimmy-dev/shimmy/internal/testenv"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
)

func channel(ns, name string, match map[string]string) *v1.SharedMemoryChannel {
	return &v1.SharedMemoryChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1.SharedMemoryChannelSpec{Selector: &metav1.LabelSelector{MatchLabels: match}},
	}
}

// lister serves channels of every namespace filtered as a namespaced
// lister does, and also returns one of another namespace if leaky is
// set, to show the handler does not trust it.
func lister(leaky bool, chs ...*v1.SharedMemoryChannel) Lister {
	return func(ns string) ([]*v1.SharedMemoryChannel, error) {
		var out []*v1.SharedMemoryChannel
		for _, ch := range chs {
			if ch.Namespace == ns || leaky {
				out = append(out, ch)
			}
		}
		return out, nil
	}
}

const podJSON = `{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "app", "labels": {"app": "cam"}},
  "spec": {
    "initContainers": [{"name": "init", "image": "x"}],
    "containers": [
      {"name": "a", "image": "x", "env": [{"name": "SHIMMY_CHANNEL_FRAMES", "value": "/mine"}]},
      {"name": "b", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    ],
    "volumes": [{"name": "data", "emptyDir": {}}]
  }
}`

// review is an AdmissionReview of a pod's creation in ns, as the API
// server sends it.
func review(t *testing.T, ns, pod string) []byte {
	t.Helper()
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "uid-1",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Operation: admissionv1.Create,
			Object:    runtimeRaw(pod),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends an AdmissionReview to h and returns its response and, if it
// allowed the pod, the pod with the patch applied.
func post(t *testing.T, h http.Handler, body []byte, pod string) (*admissionv1.AdmissionResponse, *corev1.Pod) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	resp := out.Response
	if resp == nil || resp.UID != "uid-1" || out.Kind != "AdmissionReview" || out.APIVersion != "admission.k8s.io/v1" {
		t.Fatalf("response review %+v: want the request's UID, kind and version", out)
	}
	if !resp.Allowed {
		return resp, nil
	}
	patched := []byte(pod)
	if resp.Patch != nil {
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type %v", resp.PatchType)
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatal(err)
		}
		if patched, err = p.Apply(patched); err != nil {
			t.Fatalf("apply patch %s: %v", resp.Patch, err)
		}
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	return resp, &got
}

func TestAdmit(t *testing.T) {
	frames := channel("vision", "frames", map[string]string{"app": "cam"})
	results := channel("vision", "results.v2", nil) // {} selects every pod
	other := channel("vision", "other", map[string]string{"app": "sink"})
	foreign := channel("tenant-b", "secret", nil)
	hostIPC := strings.Replace(podJSON, `"spec": {`, `"spec": {"hostIPC": true,`, 1)

	for _, tc := range []struct {
		name     string
		ns, pod  string
		channels Lister
		live     Lister // nil: none
		allowed  bool
		wantEnv  map[string]string // container b's channel variables; nil: pod unchanged
		refusal  string
	}{
		{
			name: "two channels", ns: "vision", pod: podJSON, allowed: true,
			channels: lister(false, frames, results, other, foreign),
			wantEnv: map[string]string{
				"SHIMMY_CHANNEL_FRAMES":     "/run/shimmy/vision/frames",
				"SHIMMY_CHANNEL_RESULTS_V2": "/run/shimmy/vision/results.v2",
			},
		},
		{
			name: "one channel", ns: "vision", pod: podJSON, allowed: true,
			channels: lister(false, frames, other),
			wantEnv: map[string]string{
				"SHIMMY_CHANNEL_FRAMES": "/run/shimmy/vision/frames",
				"SHIMMY_CHANNEL":        "/run/shimmy/vision/frames",
			},
		},
		{name: "not selected", ns: "vision", pod: podJSON, allowed: true, channels: lister(false, other)},
		{name: "another namespace's channel", ns: "tenant-a", pod: podJSON, allowed: true, channels: lister(true, foreign, frames)},
		{name: "hostIPC, selected", ns: "vision", pod: hostIPC, channels: lister(false, frames), refusal: "need no hostIPC"},
		{name: "hostIPC, not selected", ns: "vision", pod: hostIPC, allowed: true, channels: lister(false, other)},
		{
			name: "lister fails", ns: "vision", pod: podJSON, refusal: "list channels of vision: boom",
			channels: func(string) ([]*v1.SharedMemoryChannel, error) { return nil, errors.New("boom") },
		},
		// A channel created a moment before the pod: not in the cache yet.
		{
			name: "only the API server has it yet", ns: "vision", pod: podJSON, allowed: true,
			channels: lister(false, other), live: lister(false, frames, other),
			wantEnv: map[string]string{
				"SHIMMY_CHANNEL_FRAMES": "/run/shimmy/vision/frames",
				"SHIMMY_CHANNEL":        "/run/shimmy/vision/frames",
			},
		},
		{
			name: "the cache selects: no live list", ns: "vision", pod: podJSON, allowed: true,
			channels: lister(false, frames),
			live:     func(string) ([]*v1.SharedMemoryChannel, error) { return nil, errors.New("live list asked") },
			wantEnv: map[string]string{
				"SHIMMY_CHANNEL_FRAMES": "/run/shimmy/vision/frames",
				"SHIMMY_CHANNEL":        "/run/shimmy/vision/frames",
			},
		},
		{name: "live list: another namespace's channel", ns: "tenant-a", pod: podJSON, allowed: true, channels: lister(false), live: lister(true, foreign)},
		{
			name: "live list fails", ns: "vision", pod: podJSON, refusal: "list channels of vision from the API server: boom",
			channels: lister(false, other),
			live:     func(string) ([]*v1.SharedMemoryChannel, error) { return nil, errors.New("boom") },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(Options{Channels: tc.channels, Live: tc.live, Log: testenv.QuietLog()})
			if err != nil {
				t.Fatal(err)
			}
			resp, pod := post(t, h, review(t, tc.ns, tc.pod), tc.pod)
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed = %v (%+v), want %v", resp.Allowed, resp.Result, tc.allowed)
			}
			if !tc.allowed {
				if resp.Result == nil || !strings.Contains(resp.Result.Message, tc.refusal) {
					t.Fatalf("refusal %+v, want %q in its message", resp.Result, tc.refusal)
				}
				return
			}
			if tc.wantEnv == nil {
				if resp.Patch != nil {
					t.Fatalf("pod patched (%s), want it unchanged", resp.Patch)
				}
				return
			}
			checkWired(t, pod, "/run/shimmy/"+tc.ns, tc.wantEnv)
		})
	}
}

// checkWired checks the injected volume, each container's mount, and the
// variables: added where missing, a container's own value kept.
func checkWired(t *testing.T, pod *corev1.Pod, dir string, wantEnv map[string]string) {
	t.Helper()
	if len(pod.Spec.Volumes) != 2 || pod.Spec.Volumes[0].Name != "data" {
		t.Fatalf("volumes %+v: want data, then %s", pod.Spec.Volumes, VolumeName)
	}
	v := pod.Spec.Volumes[1]
	host := strings.Replace(dir, "/run/shimmy/", "/run/shimmy-pods/", 1) // the agents' pod directory
	if v.Name != VolumeName || v.HostPath == nil || v.HostPath.Path != host || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
		t.Errorf("volume %+v: want hostPath %s, type Directory", v, host)
	}
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range all {
		var found bool
		for _, m := range c.VolumeMounts {
			if m.Name == VolumeName {
				found = m.MountPath == dir && m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer
			}
		}
		if !found {
			t.Errorf("container %s mounts %+v: want %s at %s with HostToContainer", c.Name, c.VolumeMounts, VolumeName, dir)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			if _, dup := env[e.Name]; dup {
				t.Errorf("container %s defines %s twice", c.Name, e.Name)
			}
			env[e.Name] = e.Value
		}
		want := maps.Clone(wantEnv)
		if c.Name == "a" {
			want["SHIMMY_CHANNEL_FRAMES"] = "/mine" // the container's own value stays
		}
		if !maps.Equal(env, want) {
			t.Errorf("container %s: variables %v, want %v", c.Name, env, want)
		}
	}
	if c := pod.Spec.Containers[1]; len(c.VolumeMounts) != 2 || c.VolumeMounts[0].Name != "data" {
		t.Errorf("container b mounts %+v: its own mount must stay first", c.VolumeMounts)
	}
}

// TestAdmitTwice: the API server may call the webhook again on a pod it
// already wired; nothing is added twice.
func TestAdmitTwice(t *testing.T) {
	h, err := New(Options{Channels: lister(false, channel("vision", "frames", map[string]string{"app": "cam"}))})
	if err != nil {
		t.Fatal(err)
	}
	_, pod := post(t, h, review(t, "vision", podJSON), podJSON)
	wired, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := post(t, h, review(t, "vision", string(wired)), string(wired))
	if !resp.Allowed || resp.Patch != nil {
		t.Fatalf("second admission: allowed %v, patch %s; want allowed, no patch", resp.Allowed, resp.Patch)
	}
}

// TestNotAPod: other kinds and operations pass untouched, and garbage is
// a bad request.
func TestNotAPod(t *testing.T) {
	h, err := New(Options{Channels: lister(false)})
	if err != nil {
		t.Fatal(err)
	}
	resp := h.Admit(&admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Update})
	if !resp.Allowed || resp.Patch != nil {
		t.Errorf("pod update: %+v, want allowed unchanged", resp)
	}
	for _, body := range []string{"{", `{"kind":"AdmissionReview"}`} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(body)))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("body %q: status %d, want 400", body, rec.Code)
		}
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a channel lister succeeded")
	}
}

func runtimeRaw(s string) runtime.RawExtension { return runtime.RawExtension{Raw: []byte(s)} }
