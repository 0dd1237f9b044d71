// Package workers runs the workers of a rate-limited workqueue, the loop
// of kubernetes/sample-controller, for Shimmy's controller and node
// agent: a key whose sync fails is retried with the queue's back-off, one
// that asks for it is synced again after a delay, and nothing is retried
// once the context is done (the next leader, or the next agent, takes it
// from there).
package workers

import (
	"context"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
)

// Sync handles one key. An error retries it rate-limited; after > 0
// syncs it again that much later.
type Sync[K comparable] func(ctx context.Context, key K) (after time.Duration, err error)

// Run runs n workers on q until ctx ends, then shuts q down and returns
// once every worker has finished its key. what names the work in the
// warning a failed sync logs ("reconcile", "status write").
func Run[K comparable](ctx context.Context, q workqueue.TypedRateLimitingInterface[K], n int, what string, log logrus.FieldLogger, fn Sync[K]) {
	defer utilruntime.HandleCrash()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, func(ctx context.Context) {
				for next(ctx, q, what, log, fn) {
				}
			}, time.Second)
		}()
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}

// next syncs one key; false once q is shut down.
func next[K comparable](ctx context.Context, q workqueue.TypedRateLimitingInterface[K], what string, log logrus.FieldLogger, fn Sync[K]) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	after, err := fn(ctx, key)
	switch {
	case err != nil && ctx.Err() != nil:
		// Stopping: whoever runs next takes it from here.
	case err != nil:
		log.WithError(err).WithField("key", key).Warn(what + " failed; retrying")
		q.AddRateLimited(key)
	case after > 0:
		q.Forget(key)
		q.AddAfter(key, after)
	default:
		q.Forget(key)
	}
	return true
}
