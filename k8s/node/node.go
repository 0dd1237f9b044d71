// Package node is the node reconciler: it watches SharedMemoryChannels and
// the pods bound to its node, and keeps the node's registry in step: a
// channel exists, under the pod's namespace, while a local pod selects it,
// with its spec's settings, and is removed once no local pod selects it
// and it is idle. It talks to the registry's API only.
package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/shimmy-dev/shimmy/channel"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/chanspec"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/client/informers/externalversions"
	listers "github.com/shimmy-dev/shimmy/k8s/client/listers/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/registry"
)

// Options configure a Reconciler.
type Options struct {
	Node     string               // this node's name (the downward API's spec.nodeName)
	Kube     kubernetes.Interface // pods
	Shimmy   versioned.Interface  // SharedMemoryChannels
	Registry *registry.Registry
	Log      logrus.FieldLogger
	// IdlePoll is how often a channel that should go but is in use is
	// looked at again; default 2s.
	IdlePoll time.Duration
}

// Modes of what the reconciler creates: pods run as any user, and a pod
// reaches only the channel directories mounted into it.
const (
	namespaceMode = 0o755
	channelMode   = 0o777
)

// Reconciler keeps one node's channels in step with the cluster.
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

// New builds a Reconciler; Run starts it.
func New(o Options) (*Reconciler, error) {
	if o.Node == "" || o.Kube == nil || o.Shimmy == nil || o.Registry == nil {
		return nil, errors.New("node: Node, Kube, Shimmy and Registry are required")
	}
	if o.IdlePoll <= 0 {
		o.IdlePoll = 2 * time.Second
	}
	var log logrus.FieldLogger = logrus.StandardLogger()
	if o.Log != nil {
		log = o.Log
	}
	r := &Reconciler{
		o:   o,
		log: log.WithFields(logrus.Fields{"component": "k8s-node", "node": o.Node}),
		kube: kinformers.NewSharedInformerFactoryWithOptions(o.Kube, 0,
			kinformers.WithTweakListOptions(func(lo *metav1.ListOptions) {
				lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", o.Node).String()
			})),
		shimmy: externalversions.NewSharedInformerFactory(o.Shimmy, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "shimmy-node"}),
	}
	pods := r.kube.Core().V1().Pods()
	chans := r.shimmy.Shimmy().V1alpha1().SharedMemoryChannels()
	r.pods, r.channels = pods.Lister(), chans.Lister()
	r.synced = []cache.InformerSynced{pods.Informer().HasSynced, chans.Informer().HasSynced}
	onChannel := func(obj any) {
		if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			r.queue.Add(name)
		}
	}
	onPod := func(obj any) { r.enqueueNamespace(obj) }
	if _, err := chans.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onChannel, UpdateFunc: func(_, o any) { onChannel(o) }, DeleteFunc: onChannel,
	}); err != nil {
		return nil, fmt.Errorf("node: channel informer: %w", err)
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, o any) { onPod(o) }, DeleteFunc: onPod,
	}); err != nil {
		return nil, fmt.Errorf("node: pod informer: %w", err)
	}
	return r, nil
}

// enqueueNamespace queues every channel of a pod's namespace: a pod that
// comes, goes or changes labels may change what any of them selects.
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
func (r *Reconciler) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	r.kube.Start(ctx.Done())
	r.shimmy.Start(ctx.Done())
	defer r.kube.Shutdown()
	defer r.shimmy.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return fmt.Errorf("node: informers did not sync: %w", ctx.Err())
	}
	r.log.Info("reconciler running")
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, func(ctx context.Context) {
				for r.next() {
				}
			}, time.Second)
		}()
	}
	<-ctx.Done()
	// No worker touches the registry once Run has returned: its owner may
	// close it then.
	r.queue.ShutDown()
	wg.Wait()
	return nil
}

func (r *Reconciler) next() bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	retry, err := r.reconcile(key)
	switch {
	case err != nil:
		r.log.WithError(err).WithField("channel", key.String()).Warn("reconcile failed; retrying")
		r.queue.AddRateLimited(key)
	case retry:
		r.queue.Forget(key)
		r.queue.AddAfter(key, r.o.IdlePoll)
	default:
		r.queue.Forget(key)
	}
	return true
}

// reconcile brings one channel of the node in step. retry asks to look
// again later without counting a failure (a channel waiting to be idle).
func (r *Reconciler) reconcile(key cache.ObjectName) (retry bool, err error) {
	smc, err := r.channels.SharedMemoryChannels(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return r.remove(key)
	}
	if err != nil {
		return false, err
	}
	selected, err := r.selected(smc)
	if err != nil {
		return false, err
	}
	if !selected {
		return r.remove(key)
	}
	return r.ensure(smc)
}

// selected reports whether a live pod of this node selects the channel.
func (r *Reconciler) selected(smc *v1.SharedMemoryChannel) (bool, error) {
	if smc.Spec.Selector == nil {
		return false, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(smc.Spec.Selector)
	if err != nil {
		return false, nil // the schema admits no such selector; nothing to retry
	}
	pods, err := r.pods.Pods(smc.Namespace).List(sel)
	if err != nil {
		return false, err
	}
	for _, p := range pods {
		if p.Spec.NodeName == r.o.Node && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return true, nil
		}
	}
	return false, nil
}

// ensure creates the channel or brings its settings to the spec.
func (r *Reconciler) ensure(smc *v1.SharedMemoryChannel) (bool, error) {
	log := r.log.WithField("channel", smc.Namespace+"/"+smc.Name)
	change, err := chanspec.Change(smc.Spec)
	if err != nil {
		log.WithError(err).Warn("spec refused")
		return false, nil // a new spec comes with an update event
	}
	ns, err := r.o.Registry.Namespace(smc.Namespace)
	if errors.Is(err, registry.ErrNotFound) {
		ns, err = r.o.Registry.CreateNamespace(smc.Namespace, registry.Attr{Mode: namespaceMode})
	}
	if err != nil && !errors.Is(err, registry.ErrExists) {
		return false, err
	}
	if ns == nil { // created meanwhile by another front end
		if ns, err = r.o.Registry.Namespace(smc.Namespace); err != nil {
			return false, err
		}
	}
	ch, err := ns.Channel(smc.Name)
	if errors.Is(err, registry.ErrNotFound) {
		cfg, err := change.Apply(r.o.Registry.Defaults())
		if err != nil {
			log.WithError(err).Warn("spec refused by the registry")
			return false, nil
		}
		if _, err := ns.CreateChannel(smc.Name, registry.CreateOptions{Attr: registry.Attr{Mode: channelMode}, Config: &cfg}); err != nil && !errors.Is(err, registry.ErrExists) {
			return false, err
		}
		log.Info("channel created")
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cur := ch.Config()
	want, err := change.Apply(cur)
	if err != nil {
		log.WithError(err).Warn("spec refused by the registry")
		return false, nil
	}
	if sameSettings(cur, want) {
		return false, nil
	}
	if _, err := ch.Reconfigure(change); errors.Is(err, registry.ErrBusy) {
		log.Info("spec changed settings of a channel in use: waiting for it to be idle")
		return true, nil
	} else if err != nil {
		return false, err
	}
	log.Info("channel reconfigured")
	return false, nil
}

const msgRemovalWaits = "channel no longer selected but in use: removal waits for it to be idle"

// remove deletes the node's channel once it is idle; a busy channel is
// looked at again later.
func (r *Reconciler) remove(key cache.ObjectName) (bool, error) {
	ns, err := r.o.Registry.Namespace(key.Namespace)
	if errors.Is(err, registry.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch err := ns.RemoveChannel(key.Name); {
	case err == nil:
		r.log.WithField("channel", key.String()).Info("channel removed")
		return false, nil
	case errors.Is(err, registry.ErrNotFound):
		return false, nil
	case errors.Is(err, registry.ErrBusy):
		r.log.WithField("channel", key.String()).Debug(msgRemovalWaits)
		return true, nil
	default:
		return false, err
	}
}

// sameSettings compares configurations but their epochs.
func sameSettings(a, b channel.Config) bool {
	a.Epoch, b.Epoch = 0, 0
	return a == b
}
