// Package webhook is the mutating admission webhook that wires pods to
// their channels, so that application manifests stay unchanged: a pod that
// one or more SharedMemoryChannels of its namespace select gets the
// hostPath volume of its namespace's directory in the agents' pod
// directory (/run/shimmy-pods/<ns>, which outlives an agent restart),
// mounted at /run/shimmy/<ns> with mountPropagation HostToContainer in
// every container, and one environment
// variable per channel naming the channel's directory. Only channels of
// the pod's own namespace are considered, so a pod never learns of another
// namespace's channels. A selected pod that asks for hostIPC is refused:
// channels do not need it, and it would undo the isolation they give.
//
// The handler speaks admission.k8s.io/v1 AdmissionReview over HTTP; the
// caller serves it over TLS (`shimmy controller` does).
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/mountpoint"
)

const (
	// DefaultRoot is the agent's mount point on the host and, by
	// default, the path where pods see it.
	DefaultRoot = mountpoint.Default
	// DefaultHostRoot is the agents' pod directory on the nodes (shimmy
	// agent --pod-dir, agent.DefaultPodDir): a pod's volume of
	// <pod dir>/<ns> sees the next agent's mount after a restart, one of
	// <mount>/<ns> would not.
	DefaultHostRoot = mountpoint.DefaultPodDir
	// VolumeName names the injected volume; a pod that has it is left
	// as it is (the webhook may be called again on the same pod).
	VolumeName = "shimmy-channels"
	// EnvPrefix starts each channel's variable: SHIMMY_CHANNEL_<NAME>
	// (the name upper-cased, '-' and '.' as '_'). A pod that one
	// channel selects also gets EnvSingle.
	EnvPrefix = "SHIMMY_CHANNEL_"
	EnvSingle = "SHIMMY_CHANNEL"
	// maxBody bounds an AdmissionReview request; the API server's own
	// limit on an object is 3 MiB.
	maxBody = 8 << 20
)

// ErrHostIPC is why a selected pod with hostIPC is refused.
var ErrHostIPC = errors.New("shimmy: this pod uses shared-memory channels, which need no hostIPC: " +
	"the channel's ring reaches the pod as a file of its hostPath volume and is mapped from there (mmap), " +
	"and hostIPC would share the node's IPC namespace with every other tenant; remove hostIPC: true")

// Lister returns the SharedMemoryChannels of one namespace (a lister of
// k8s/client's informers does).
type Lister func(namespace string) ([]*v1.SharedMemoryChannel, error)

// Options configures a Handler.
type Options struct {
	Channels Lister // required
	// Live, if set, is asked when Channels select nothing for a pod: a
	// channel created a moment before the pod may not be in Channels'
	// cache yet (a watch), and a live list from the API server has it.
	// It costs one namespaced list per pod that no cached channel selects.
	Live Lister
	// HostRoot is the agents' pod directory on the nodes; default
	// DefaultHostRoot.
	HostRoot string
	// PodRoot is where containers see it; default DefaultRoot.
	PodRoot string
	Log     logrus.FieldLogger // nil: logrus.StandardLogger()
}

// Handler serves the webhook.
type Handler struct {
	opts Options
	log  logrus.FieldLogger
}

// New returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Channels == nil {
		return nil, errors.New("webhook: Options.Channels is required")
	}
	if opts.HostRoot == "" {
		opts.HostRoot = DefaultHostRoot
	}
	if opts.PodRoot == "" {
		opts.PodRoot = DefaultRoot
	}
	log := opts.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Handler{opts: opts, log: log.WithField("component", "webhook")}, nil
}

// ServeHTTP answers one AdmissionReview.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		http.Error(w, "request body unreadable or too large", http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	resp := h.Admit(review.Request)
	resp.UID = review.Request.UID
	review.Response, review.Request = resp, nil
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(review)
}

// Admit decides on one pod creation: allowed unchanged, allowed with a
// JSON patch, or refused.
func (h *Handler) Admit(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return refuse(http.StatusBadRequest, fmt.Sprintf("webhook: decode pod: %v", err))
	}
	// A pod being created may have no namespace yet; the request's is
	// the one it gets.
	ns := req.Namespace
	log := h.log.WithFields(logrus.Fields{"namespace": ns, "pod": pod.Name + pod.GenerateName})
	channels, err := h.selecting(ns, &pod)
	if err != nil {
		log.WithError(err).Warn("cannot list channels")
		return refuse(http.StatusInternalServerError, err.Error())
	}
	if len(channels) == 0 {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	if pod.Spec.HostIPC {
		log.Info("refused a selected pod with hostIPC")
		return refuse(http.StatusForbidden, ErrHostIPC.Error())
	}
	patch := h.patch(ns, &pod, channels)
	if len(patch) == 0 {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return refuse(http.StatusInternalServerError, err.Error())
	}
	log.WithField("channels", channels).Debug("wired pod")
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: b, PatchType: &pt}
}

// selecting returns the sorted names of the channels of ns whose selector
// matches pod's labels.
func (h *Handler) selecting(ns string, pod *corev1.Pod) ([]string, error) {
	list, err := h.opts.Channels(ns)
	if err != nil {
		return nil, fmt.Errorf("webhook: list channels of %s: %w", ns, err)
	}
	names := matching(ns, pod, list)
	if len(names) > 0 || h.opts.Live == nil {
		return names, nil
	}
	if list, err = h.opts.Live(ns); err != nil {
		return nil, fmt.Errorf("webhook: list channels of %s from the API server: %w", ns, err)
	}
	return matching(ns, pod, list), nil
}

// matching returns the sorted names of the channels of list in ns whose
// selector matches pod's labels.
func matching(ns string, pod *corev1.Pod, list []*v1.SharedMemoryChannel) []string {
	var names []string
	for _, ch := range list {
		if ch.Namespace != ns || ch.Spec.Selector == nil {
			continue // never another namespace's channel
		}
		sel, err := metav1.LabelSelectorAsSelector(ch.Spec.Selector)
		if err != nil {
			continue // the API server's schema refuses such selectors
		}
		if sel.Matches(labels.Set(pod.Labels)) {
			names = append(names, ch.Name)
		}
	}
	sort.Strings(names)
	return names
}

// op is one JSON patch (RFC 6902) operation.
type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// patch adds the volume, and to every container its mount and the
// variables it does not define yet; nothing if the volume is there.
func (h *Handler) patch(ns string, pod *corev1.Pod, channels []string) []op {
	for _, v := range pod.Spec.Volumes {
		if v.Name == VolumeName {
			return nil
		}
	}
	dir := corev1.HostPathDirectory
	vol := corev1.Volume{Name: VolumeName, VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: path.Join(h.opts.HostRoot, ns), Type: &dir},
	}}
	podDir := path.Join(h.opts.PodRoot, ns)
	prop := corev1.MountPropagationHostToContainer
	mount := corev1.VolumeMount{Name: VolumeName, MountPath: podDir, MountPropagation: &prop}
	env := make([]corev1.EnvVar, 0, len(channels)+1)
	for _, ch := range channels {
		env = append(env, corev1.EnvVar{Name: EnvName(ch), Value: path.Join(podDir, ch)})
	}
	if len(channels) == 1 {
		env = append(env, corev1.EnvVar{Name: EnvSingle, Value: path.Join(podDir, channels[0])})
	}

	ops := []op{appendOp("/spec/volumes", len(pod.Spec.Volumes), vol)}
	for _, group := range []struct {
		field      string
		containers []corev1.Container
	}{{"containers", pod.Spec.Containers}, {"initContainers", pod.Spec.InitContainers}} {
		for i, c := range group.containers {
			base := fmt.Sprintf("/spec/%s/%d", group.field, i)
			if !mountsAt(c, podDir) {
				ops = append(ops, appendOp(base+"/volumeMounts", len(c.VolumeMounts), mount))
			}
			n := len(c.Env)
			for _, e := range env {
				if !defines(c, e.Name) {
					ops = append(ops, appendOp(base+"/env", n, e))
					n++
				}
			}
		}
	}
	return ops
}

// appendOp appends v to the array at p, creating the array when it has
// no elements (the field may be absent).
func appendOp(p string, n int, v any) op {
	if n == 0 {
		return op{Op: "add", Path: p, Value: []any{v}}
	}
	return op{Op: "add", Path: p + "/-", Value: v}
}

func mountsAt(c corev1.Container, dir string) bool {
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == dir {
			return true
		}
	}
	return false
}

func defines(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// EnvName is the variable that names channel's directory in a pod:
// SHIMMY_CHANNEL_ and the name upper-cased, with '-' and '.' as '_'.
func EnvName(channel string) string {
	return EnvPrefix + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(channel))
}

func refuse(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: msg,
	}}
}
