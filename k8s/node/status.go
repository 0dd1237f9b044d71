package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/internal/workers"
	"github.com/shimmy-dev/shimmy/registry"
)

// FieldManager is the server-side apply field manager of node's agent: it
// owns that node's entry of status.nodes and nothing else.
func FieldManager(node string) string { return "shimmy-agent-" + node }

// outcome is what the last reconcile of a channel found on this node.
type outcome struct {
	generation int64
	state      v1.NodeState
	message    string
}

// statusWriter keeps this node's entry of each channel's status.nodes in
// step with the reconciler's outcomes and the channel's members. Writes
// are coalesced per channel (a key queued many times is written once) and
// spaced by at least minGap per channel, so that a burst of changes
// makes no write storm; an entry equal to the one last written (or, for
// a channel not written since the agent started, to the one the API
// server has) is not written again.
type statusWriter struct {
	node, mirror string
	client       versioned.Interface
	reg          *registry.Registry
	log          logrus.FieldLogger
	minGap       time.Duration
	queue        workqueue.TypedRateLimitingInterface[cache.ObjectName]
	// stored returns the node's entry as the API server has it (from the
	// informer's cache), for a channel not written yet; nil: unknown.
	stored func(cache.ObjectName) *v1.NodeStatus

	mu      sync.Mutex
	want    map[cache.ObjectName]outcome        // channels the node holds (or tried to)
	written map[cache.ObjectName]*v1.NodeStatus // last applied; nil: absent
	last    map[cache.ObjectName]time.Time      // when last written
}

func newStatusWriter(node, mirror string, client versioned.Interface, reg *registry.Registry, log logrus.FieldLogger, minGap time.Duration) *statusWriter {
	return &statusWriter{
		node: node, mirror: mirror, client: client, reg: reg, log: log, minGap: minGap,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "shimmy-node-status"}),
		want:    map[cache.ObjectName]outcome{},
		written: map[cache.ObjectName]*v1.NodeStatus{},
		last:    map[cache.ObjectName]time.Time{},
	}
}

// set records the outcome of a reconcile of key.
func (w *statusWriter) set(key cache.ObjectName, o outcome) {
	w.mu.Lock()
	w.want[key] = o
	w.mu.Unlock()
	w.queue.Add(key)
}

// drop says the node no longer holds the channel: its entry goes.
func (w *statusWriter) drop(key cache.ObjectName) {
	w.mu.Lock()
	_, had := w.want[key]
	delete(w.want, key)
	w.mu.Unlock()
	if had {
		w.queue.Add(key)
	}
}

// refresh queues every channel the node holds: their members may have
// changed (members come and go without events).
func (w *statusWriter) refresh() {
	w.mu.Lock()
	keys := make([]cache.ObjectName, 0, len(w.want))
	for k := range w.want {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	for _, k := range keys {
		w.queue.Add(k)
	}
}

// run writes until ctx ends, refreshing the members every interval.
func (w *statusWriter) run(ctx context.Context, interval time.Duration) {
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.refresh()
			}
		}
	}()
	workers.Run(ctx, w.queue, 1, "status write", w.log, func(ctx context.Context, key cache.ObjectName) (time.Duration, error) {
		return 0, w.write(ctx, key)
	})
}

// entry is the node's entry for key as it should be now (nil: none).
func (w *statusWriter) entry(key cache.ObjectName) *v1.NodeStatus {
	w.mu.Lock()
	o, ok := w.want[key]
	w.mu.Unlock()
	if !ok {
		return nil
	}
	ch, err := w.reg.Channel(key.Namespace, key.Name)
	if err != nil && o.state == v1.NodeReady {
		return nil // gone meanwhile: the reconcile that follows says more
	}
	e := &v1.NodeStatus{Name: w.node, ObservedGeneration: o.generation, State: o.state, Message: o.message, MirrorAddress: w.mirror}
	if ch != nil {
		st := ch.StatsNoWait()
		e.Members = clampInt32(st.Publishers + st.Subscribers)
	}
	return e
}

func clampInt32(n uint64) int32 {
	if n > 1<<31-1 {
		return 1<<31 - 1
	}
	return int32(n)
}

// write applies key's entry if it differs from the one last written, no
// sooner than minGap after the last write of key.
func (w *statusWriter) write(ctx context.Context, key cache.ObjectName) error {
	e := w.entry(key)
	w.mu.Lock()
	prev, known := w.written[key]
	if !known && w.stored != nil {
		prev, known = w.stored(key), true
	}
	wait := w.minGap - time.Since(w.last[key])
	w.mu.Unlock()
	if known && equalEntry(prev, e) {
		return nil
	}
	if wait > 0 {
		w.queue.AddAfter(key, wait)
		return nil
	}
	err := w.apply(ctx, key, e)
	if apierrors.IsNotFound(err) {
		err = nil // the resource is gone, and its status with it
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.written[key], w.last[key] = e, time.Now()
	if e == nil {
		delete(w.written, key) // nothing to remember for a channel gone
	}
	w.mu.Unlock()
	return nil
}

func equalEntry(a, b *v1.NodeStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// applyStatus is the body of a server-side apply of status.nodes.
type applyStatus struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   applyMeta         `json:"metadata"`
	Status     applyStatusFields `json:"status"`
}

type applyMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

type applyStatusFields struct {
	Nodes []v1.NodeStatus `json:"nodes"`
}

// apply writes the node's entry, or with e nil removes it: server-side
// apply drops the fields its manager stops naming. The removal names an
// empty list rather than none: were the entry the status's last field,
// the status would become null, which the schema refuses.
func (w *statusWriter) apply(ctx context.Context, key cache.ObjectName, e *v1.NodeStatus) error {
	body := applyStatus{
		APIVersion: v1.SchemeGroupVersion.String(), Kind: "SharedMemoryChannel",
		Metadata: applyMeta{Name: key.Name, Namespace: key.Namespace},
		Status:   applyStatusFields{Nodes: []v1.NodeStatus{}},
	}
	if e != nil {
		body.Status.Nodes = []v1.NodeStatus{*e}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	force := true
	_, err = w.client.ShimmyV1alpha1().SharedMemoryChannels(key.Namespace).Patch(ctx, key.Name, types.ApplyPatchType, b,
		metav1.PatchOptions{FieldManager: FieldManager(w.node), Force: &force}, "status")
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("apply status of %s: %w", key, err)
	}
	return err
}
