// Package node is the node reconciler: it watches SharedMemoryChannels,
// the pods bound to its node and the namespaces, and keeps the node's
// registry in step: a channel exists, under the pod's namespace, while a
// local pod selects it, with its spec's settings, and is removed once no
// local pod selects it and it is idle; a namespace's quota follows its
// QuotaAnnotation. It changes and removes only the channels it created
// (registry owner Owner), and writes this node's entry of each channel's
// status.nodes. With Options.Mirror it also turns the controller's
// mirroring plans (each channel's status.mirror) into the node's
// mirror.Plan (PlanFor). It talks to the registry's API only.
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
	"github.com/shimmy-dev/shimmy/k8s/internal/workers"
	"github.com/shimmy-dev/shimmy/mirror"
	"github.com/shimmy-dev/shimmy/registry"
)

// Owner is the registry owner of the channels the reconciler creates.
const Owner = "kubernetes"

// Options configure a Reconciler.
type Options struct {
	Node     string               // this node's name (the downward API's spec.nodeName)
	Kube     kubernetes.Interface // pods, namespaces
	Shimmy   versioned.Interface  // SharedMemoryChannels
	Registry *registry.Registry
	Log      logrus.FieldLogger
	// DefaultQuota is the quota of a namespace without QuotaAnnotation,
	// and the base of the keys an annotation leaves out; nil:
	// registry.DefaultQuota.
	DefaultQuota *registry.Quota
	// MirrorAddress is the "host:port" peers dial to reach this node's
	// mirror, for the status; "" when the agent has no mirror.
	MirrorAddress string
	// Mirror, if set, follows the node's plan (PlanFor) as the channels'
	// status.mirror changes; nil: the reconciler applies no plan.
	Mirror Mirror
	// MirrorDebounce is how long changes of the channels' plans are
	// gathered before the node's plan is applied; default
	// DefaultMirrorDebounce.
	MirrorDebounce time.Duration
	// IdlePoll is how often a channel that should go, or change, but is
	// in use is looked at again; default 2s.
	IdlePoll time.Duration
	// StatusInterval is how often the members in the status are
	// refreshed, and the least time between two status writes of one
	// channel; default 2s.
	StatusInterval time.Duration
}

// Modes of what the reconciler creates: pods run as any user, and a pod
// reaches only the channel directories mounted into it.
const (
	namespaceMode = 0o755
	channelMode   = 0o777
)

// Reconciler keeps one node's channels in step with the cluster.
type Reconciler struct {
	o          Options
	quota      registry.Quota // DefaultQuota resolved
	log        logrus.FieldLogger
	kube       kinformers.SharedInformerFactory // pods of this node
	cluster    kinformers.SharedInformerFactory // namespaces
	shimmy     externalversions.SharedInformerFactory
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	channels   listers.SharedMemoryChannelLister
	synced     []cache.InformerSynced
	// queue holds channel keys, and namespace keys (Namespace "", Name the
	// namespace) whose quota to sync.
	queue  workqueue.TypedRateLimitingInterface[cache.ObjectName]
	status *statusWriter

	pmu     sync.Mutex
	applied *mirror.Plan // the plan last applied to o.Mirror
}

// New builds a Reconciler; Run starts it.
func New(o Options) (*Reconciler, error) {
	if o.Node == "" || o.Kube == nil || o.Shimmy == nil || o.Registry == nil {
		return nil, errors.New("node: Node, Kube, Shimmy and Registry are required")
	}
	if o.IdlePoll <= 0 {
		o.IdlePoll = 2 * time.Second
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = 2 * time.Second
	}
	if o.MirrorDebounce <= 0 {
		o.MirrorDebounce = DefaultMirrorDebounce
	}
	var log logrus.FieldLogger = logrus.StandardLogger()
	if o.Log != nil {
		log = o.Log
	}
	log = log.WithFields(logrus.Fields{"component": "k8s-node", "node": o.Node})
	r := &Reconciler{
		o:     o,
		quota: registry.DefaultQuota,
		log:   log,
		kube: kinformers.NewSharedInformerFactoryWithOptions(o.Kube, 0,
			kinformers.WithTweakListOptions(func(lo *metav1.ListOptions) {
				lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", o.Node).String()
			})),
		cluster: kinformers.NewSharedInformerFactory(o.Kube, 0),
		shimmy:  externalversions.NewSharedInformerFactory(o.Shimmy, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "shimmy-node"}),
		status: newStatusWriter(o.Node, o.MirrorAddress, o.Shimmy, o.Registry, log, o.StatusInterval),
	}
	if o.DefaultQuota != nil {
		r.quota = *o.DefaultQuota
	}
	pods := r.kube.Core().V1().Pods()
	nss := r.cluster.Core().V1().Namespaces()
	chans := r.shimmy.Shimmy().V1alpha1().SharedMemoryChannels()
	r.pods, r.namespaces, r.channels = pods.Lister(), nss.Lister(), chans.Lister()
	r.status.stored = r.storedEntry
	r.synced = []cache.InformerSynced{pods.Informer().HasSynced, nss.Informer().HasSynced, chans.Informer().HasSynced}
	onChannel := func(obj any) {
		if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			r.queue.Add(name)
		}
	}
	onPod := func(obj any) { r.enqueueNamespace(obj) }
	if _, err := chans.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { onChannel(o); r.enqueuePlan() },
		UpdateFunc: func(old, o any) {
			onChannel(o)
			if mirrorChanged(old, o) {
				r.enqueuePlan()
			}
		},
		DeleteFunc: func(o any) { onChannel(o); r.enqueuePlan() },
	}); err != nil {
		return nil, fmt.Errorf("node: channel informer: %w", err)
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, o any) { onPod(o) }, DeleteFunc: onPod,
	}); err != nil {
		return nil, fmt.Errorf("node: pod informer: %w", err)
	}
	onNamespace := func(obj any) {
		if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			r.queue.Add(cache.ObjectName{Name: name.Name})
		}
	}
	if _, err := nss.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onNamespace, UpdateFunc: func(_, o any) { onNamespace(o) },
	}); err != nil {
		return nil, fmt.Errorf("node: namespace informer: %w", err)
	}
	return r, nil
}

// enqueueNamespace queues every channel of a pod's namespace: a pod that
// comes, goes or changes labels may change what any of them selects.
func (r *Reconciler) enqueueNamespace(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		r.enqueueChannels(pod.Namespace)
	}
}

// enqueueChannels queues every channel of namespace ns.
func (r *Reconciler) enqueueChannels(ns string) {
	chans, err := r.channels.SharedMemoryChannels(ns).List(labels.Everything())
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
	r.cluster.Start(ctx.Done())
	r.shimmy.Start(ctx.Done())
	defer r.kube.Shutdown()
	defer r.cluster.Shutdown()
	defer r.shimmy.Shutdown()
	// Registry events (a channel removed or broken from outside, or
	// recovered) bring the channel's reconcile forward.
	defer r.o.Registry.Subscribe(0, r.onRegistryEvent)()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return nil // stopped before the first sync: nothing was touched
	}
	// The channels this node made, as recovered from the state directory:
	// those whose resource went while the agent was away are reconciled
	// (removed once idle) although no informer event names them.
	for _, ch := range r.o.Registry.Channels() {
		if ch.Owner() == Owner {
			r.queue.Add(cache.ObjectName{Namespace: ch.NS, Name: ch.Name})
		}
	}
	r.log.Info("reconciler running")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.status.run(ctx, r.o.StatusInterval)
	}()
	// No worker touches the registry once Run has returned: its owner may
	// close it then.
	workers.Run(ctx, r.queue, n, "reconcile", r.log, r.sync)
	wg.Wait()
	return nil
}

// sync reconciles one key for the workers: a channel still in use is
// looked at again after IdlePoll.
func (r *Reconciler) sync(_ context.Context, key cache.ObjectName) (time.Duration, error) {
	retry, err := r.reconcile(key)
	if retry && err == nil {
		return r.o.IdlePoll, nil
	}
	return 0, err
}

// storedEntry is this node's entry of the channel's status as the
// informer last saw it (nil: none, or no such channel): after a restart
// the agent does not write again what the API server already has.
func (r *Reconciler) storedEntry(key cache.ObjectName) *v1.NodeStatus {
	smc, err := r.channels.SharedMemoryChannels(key.Namespace).Get(key.Name)
	if err != nil {
		return nil
	}
	for _, n := range smc.Status.Nodes {
		if n.Name == r.o.Node {
			return &n
		}
	}
	return nil
}

// onRegistryEvent queues the channel an event is about, and after a lost
// event every channel.
func (r *Reconciler) onRegistryEvent(e registry.Event) {
	if e.Kind == registry.Overflow {
		for _, ch := range r.o.Registry.Channels() {
			r.queue.Add(cache.ObjectName{Namespace: ch.NS, Name: ch.Name})
		}
		return
	}
	if e.Channel == "" {
		return // a namespace event: its quota is kept in step from the Namespace object
	}
	r.queue.Add(cache.ObjectName{Namespace: e.Namespace, Name: e.Channel})
}

// reconcile brings one channel of the node (or a namespace's quota) in
// step. retry asks to look again later without counting a failure (a
// channel waiting to be idle).
func (r *Reconciler) reconcile(key cache.ObjectName) (retry bool, err error) {
	if key == planKey {
		return false, r.syncMirror()
	}
	if key.Namespace == "" {
		return false, r.syncQuota(key.Name)
	}
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

// Messages of the node's status entry.
const (
	msgNeedsIdle = "the spec changed settings that only a fresh, idle channel can take " +
		"(no member attached, no message ever carried): the node keeps the current ones"
	msgNotOwned = "a channel of this name was made on the node outside Kubernetes " +
		"(mkdir): its settings differ from the spec and are left as they are"
	msgRemovalWaits = "channel no longer selected but in use: removal waits for it to be idle"
)

// ensure creates the channel or brings its settings to the spec, and
// records the outcome for the status.
func (r *Reconciler) ensure(smc *v1.SharedMemoryChannel) (bool, error) {
	key := cache.ObjectName{Namespace: smc.Namespace, Name: smc.Name}
	o := outcome{generation: smc.Generation, state: v1.NodeReady}
	retry, err := r.ensureChannel(smc, &o)
	if err == nil || o.state != v1.NodeReady {
		r.status.set(key, o)
	}
	return retry, err
}

// reject records why the node refused the spec.
func reject(o *outcome, err error) {
	o.state, o.message = v1.NodeRejected, err.Error()
}

// ensureChannel does ensure's work; o says how it ended.
func (r *Reconciler) ensureChannel(smc *v1.SharedMemoryChannel, o *outcome) (bool, error) {
	log := r.log.WithField("channel", smc.Namespace+"/"+smc.Name)
	change, err := chanspec.Change(smc.Spec)
	if err != nil {
		log.WithError(err).Warn("spec refused")
		reject(o, err)
		return false, nil // a new spec comes with an update event
	}
	ns, err := r.namespace(smc.Namespace)
	if err != nil {
		return false, err
	}
	ch, err := ns.Channel(smc.Name)
	if errors.Is(err, registry.ErrNotFound) {
		return r.create(ns, smc.Name, change, o, log)
	}
	if err != nil {
		return false, err
	}
	if ch.Broken() {
		o.state, o.message = v1.NodeBroken, ch.BrokenReason()
		return false, nil
	}
	cur := ch.Config()
	want, err := change.Apply(cur)
	if err != nil {
		log.WithError(err).Warn("spec refused by the registry")
		reject(o, err)
		return false, nil
	}
	if ch.Owner() != Owner {
		if !sameSettings(cur, want) {
			o.state, o.message = v1.NodeRejected, msgNotOwned
		}
		return false, nil
	}
	// Reconfigure of the same settings is a no-op: the ring stays. A
	// channel in use is asked first, quietly: it is asked again every
	// IdlePoll, and Reconfigure would log each refusal.
	err = ch.CheckChange(change)
	if err == nil {
		_, err = ch.Reconfigure(change)
	}
	switch {
	case errors.Is(err, registry.ErrBusy):
		log.Debug("spec changed settings of a channel in use: waiting for it to be idle")
		o.state, o.message = v1.NodeNeedsIdle, msgNeedsIdle
		return true, nil
	case errors.Is(err, registry.ErrInvalidConfig) || errors.Is(err, registry.ErrQuota):
		reject(o, err)
		return false, nil
	case errors.Is(err, registry.ErrNoSpace):
		reject(o, err)
		return false, err // space may come back: retried with backoff
	case err != nil:
		return false, err
	}
	if !sameSettings(cur, ch.Config()) {
		log.Info("channel reconfigured")
	}
	return false, nil
}

// namespace returns the node's namespace dir, made (with the quota the
// cluster asks for) if it is new.
func (r *Reconciler) namespace(name string) (*registry.Namespace, error) {
	ns, err := r.o.Registry.Namespace(name)
	if err == nil {
		return ns, nil
	}
	if !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	ns, err = r.o.Registry.CreateNamespace(name, registry.Attr{Mode: namespaceMode})
	if errors.Is(err, registry.ErrExists) { // created meanwhile by another front end
		return r.o.Registry.Namespace(name)
	}
	if err != nil {
		return nil, err
	}
	_, err = r.applyQuota(ns)
	return ns, err
}

// create makes the channel, owned by the reconciler.
func (r *Reconciler) create(ns *registry.Namespace, name string, change registry.Change, o *outcome, log logrus.FieldLogger) (bool, error) {
	cfg, err := change.Apply(r.o.Registry.Defaults())
	if err != nil {
		log.WithError(err).Warn("spec refused by the registry")
		reject(o, err)
		return false, nil
	}
	_, err = ns.CreateChannel(name, registry.CreateOptions{Attr: registry.Attr{Mode: channelMode}, Config: &cfg, Owner: Owner})
	switch {
	case err == nil:
		log.Info("channel created")
		return false, nil
	case errors.Is(err, registry.ErrExists): // made meanwhile: look again
		return true, nil
	case errors.Is(err, registry.ErrQuota) || errors.Is(err, registry.ErrNoSpace):
		// The quota or the space may grow: retried with backoff.
		reject(o, err)
		return false, err
	case errors.Is(err, registry.ErrInvalidConfig):
		reject(o, err)
		return false, nil
	}
	return false, err
}

// remove deletes the node's channel once it is idle, if the reconciler
// made it; a busy one is looked at again later. A channel made outside
// Kubernetes is never removed.
func (r *Reconciler) remove(key cache.ObjectName) (bool, error) {
	ch, err := r.o.Registry.Channel(key.Namespace, key.Name)
	if errors.Is(err, registry.ErrNotFound) {
		r.status.drop(key)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if ch.Owner() != Owner {
		r.status.drop(key)
		return false, nil
	}
	ns, err := r.o.Registry.Namespace(key.Namespace)
	if err != nil {
		return false, err
	}
	switch err := ns.RemoveChannel(key.Name); {
	case err == nil:
		r.log.WithField("channel", key.String()).Info("channel removed")
		r.status.drop(key)
		return false, nil
	case errors.Is(err, registry.ErrNotFound):
		r.status.drop(key)
		return false, nil
	case errors.Is(err, registry.ErrBusy):
		r.log.WithField("channel", key.String()).Debug(msgRemovalWaits)
		r.status.queue.Add(key) // its members still count
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
