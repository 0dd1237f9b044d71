// Package controller is the cluster-wide controller (the paper's "Shimmy
// master"): from the pods each SharedMemoryChannel selects and the entries
// the nodes' agents write into its status, it computes the channel's
// conditions and its mirroring plan, and writes them into the status with
// server-side apply. Reconciler does that work; Controller runs it under
// leader election, so that of several replicas only one writes.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/client/informers/externalversions"
	listers "github.com/shimmy-dev/shimmy/k8s/client/listers/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/internal/workers"
)

// FieldManager is the controller's server-side apply field manager: it
// owns status.observedGeneration, status.conditions and status.mirror.
const FieldManager = "shimmy-controller"

// DefaultNodeReportTimeout is how long a node that needs a channel may go
// without reporting it before the channel is Degraded.
const DefaultNodeReportTimeout = time.Minute

// Options configure a Reconciler.
type Options struct {
	Kube   kubernetes.Interface // pods, cluster-wide
	Shimmy versioned.Interface  // SharedMemoryChannels, cluster-wide
	Log    logrus.FieldLogger
	// NodeReportTimeout: see DefaultNodeReportTimeout (the default).
	NodeReportTimeout time.Duration
	// OnWrite, if set, is called after each status write (metrics).
	OnWrite func()
}

// Reconciler writes the controller's part of every channel's status.
type Reconciler struct {
	o        Options
	log      logrus.FieldLogger
	kube     kinformers.SharedInformerFactory
	shimmy   externalversions.SharedInformerFactory
	pods     corelisters.PodLister
	channels listers.SharedMemoryChannelLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[cache.ObjectName]
}

// NewReconciler builds a Reconciler; Run starts it.
func NewReconciler(o Options) (*Reconciler, error) {
	if o.Kube == nil || o.Shimmy == nil {
		return nil, errors.New("controller: Kube and Shimmy are required")
	}
	if o.NodeReportTimeout <= 0 {
		o.NodeReportTimeout = DefaultNodeReportTimeout
	}
	var log logrus.FieldLogger = logrus.StandardLogger()
	if o.Log != nil {
		log = o.Log
	}
	r := &Reconciler{
		o:   o,
		log: log.WithField("component", "k8s-controller"),
		// Only what the controller reads of a pod is cached: in a large
		// cluster pods are most of the memory an informer holds.
		kube:   kinformers.NewSharedInformerFactoryWithOptions(o.Kube, 0, kinformers.WithTransform(trimPod)),
		shimmy: externalversions.NewSharedInformerFactory(o.Shimmy, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "shimmy-controller"}),
	}
	pods := r.kube.Core().V1().Pods()
	chans := r.shimmy.Shimmy().V1alpha1().SharedMemoryChannels()
	r.pods, r.channels = pods.Lister(), chans.Lister()
	r.synced = []cache.InformerSynced{pods.Informer().HasSynced, chans.Informer().HasSynced}
	onChannel := func(obj any) {
		if name, err := cache.ObjectToName(obj); err == nil {
			r.queue.Add(name)
		}
	}
	if _, err := chans.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onChannel, UpdateFunc: func(_, o any) { onChannel(o) },
	}); err != nil {
		return nil, fmt.Errorf("controller: channel informer: %w", err)
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: r.enqueueNamespace,
		UpdateFunc: func(old, cur any) {
			if podChanged(old, cur) {
				r.enqueueNamespace(cur)
			}
		},
		DeleteFunc: r.enqueueNamespace,
	}); err != nil {
		return nil, fmt.Errorf("controller: pod informer: %w", err)
	}
	return r, nil
}

// trimPod keeps what needs() reads of a pod.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	t := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, CreationTimestamp: p.CreationTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			t.Status.Conditions = []corev1.PodCondition{c}
		}
	}
	return t, nil
}

// podChanged reports whether an update can change which nodes need which
// channels: most pod updates are status changes that cannot.
func podChanged(old, cur any) bool {
	o, ok1 := old.(*corev1.Pod)
	c, ok2 := cur.(*corev1.Pod)
	return !ok1 || !ok2 || o.Spec.NodeName != c.Spec.NodeName || live(o) != live(c) ||
		!labels.Equals(o.Labels, c.Labels)
}

// enqueueNamespace queues every channel of a pod's namespace.
func (r *Reconciler) enqueueNamespace(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	chans, err := r.channels.SharedMemoryChannels(pod.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, ch := range chans {
		r.queue.Add(cache.ObjectName{Namespace: ch.Namespace, Name: ch.Name})
	}
}

// Run reconciles with the given number of workers until ctx ends.
func (r *Reconciler) Run(ctx context.Context, n int) error {
	defer utilruntime.HandleCrash()
	r.kube.Start(ctx.Done())
	r.shimmy.Start(ctx.Done())
	defer r.kube.Shutdown()
	defer r.shimmy.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return fmt.Errorf("controller: informers did not sync: %w", ctx.Err())
	}
	r.log.Info("reconciler running")
	workers.Run(ctx, r.queue, n, "reconcile", r.log, r.reconcile)
	return nil
}

// reconcile writes one channel's status if it differs from what it should
// be; recheck asks to compute it again after that time.
func (r *Reconciler) reconcile(ctx context.Context, key cache.ObjectName) (recheck time.Duration, err error) {
	smc, err := r.channels.SharedMemoryChannels(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	need, err := r.needs(smc)
	if err != nil {
		return 0, err
	}
	want, recheck := compute(smc, need, time.Now(), r.o.NodeReportTimeout)
	if equality.Semantic.DeepEqual(want, current(smc)) {
		return recheck, nil
	}
	if err := r.apply(ctx, smc, want); err != nil {
		return 0, err
	}
	r.log.WithFields(logrus.Fields{"channel": key.String(), "generation": want.ObservedGeneration}).Debug("status written")
	return recheck, nil
}

// needs returns the nodes that run a live pod the channel selects, each
// since the earliest time one was scheduled there.
func (r *Reconciler) needs(smc *v1.SharedMemoryChannel) (needs, error) {
	need := needs{}
	if smc.Spec.Selector == nil {
		return need, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(smc.Spec.Selector)
	if err != nil {
		return need, nil // the schema admits no such selector; nothing to retry
	}
	pods, err := r.pods.Pods(smc.Namespace).List(sel)
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		if p.Spec.NodeName == "" || !live(p) {
			continue
		}
		since := scheduled(p)
		if t, ok := need[p.Spec.NodeName]; !ok || since.Before(t) {
			need[p.Spec.NodeName] = since
		}
	}
	return need, nil
}

// live: the pod has not terminated (the node reconciler's rule too).
func live(p *corev1.Pod) bool {
	return p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// scheduled is when the pod was bound to its node: its PodScheduled
// condition's time, else (a pod created with spec.nodeName) its creation.
func scheduled(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime.Time
		}
	}
	return p.CreationTimestamp.Time
}

// apply writes the controller's part of the status with server-side apply:
// fields it leaves out (status.mirror when there is no plan) are removed,
// the agents' status.nodes entries are left alone.
func (r *Reconciler) apply(ctx context.Context, smc *v1.SharedMemoryChannel, st controllerStatus) error {
	body, err := json.Marshal(map[string]any{
		"apiVersion": v1.SchemeGroupVersion.String(),
		"kind":       "SharedMemoryChannel",
		"metadata":   map[string]string{"name": smc.Name, "namespace": smc.Namespace},
		"status":     st,
	})
	if err != nil {
		return fmt.Errorf("controller: encode status: %w", err)
	}
	force := true
	_, err = r.o.Shimmy.ShimmyV1alpha1().SharedMemoryChannels(smc.Namespace).Patch(ctx, smc.Name,
		types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: FieldManager, Force: &force}, "status")
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("controller: apply status of %s/%s: %w", smc.Namespace, smc.Name, err)
	}
	if r.o.OnWrite != nil {
		r.o.OnWrite()
	}
	return nil
}
