package workers

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		// results are what the sync of key "k" returns, call by call; past
		// the end it returns (0, nil).
		results   []error
		after     time.Duration
		wantCalls int
	}{
		{name: "done at once", wantCalls: 1},
		{name: "failures are retried", results: []error{errors.New("a"), errors.New("b")}, wantCalls: 3},
		{name: "asked again later", after: time.Millisecond, wantCalls: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, 10*time.Millisecond))
			var mu sync.Mutex
			calls := 0
			fn := func(_ context.Context, key string) (time.Duration, error) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls <= len(tc.results) {
					return 0, tc.results[calls-1]
				}
				if tc.after > 0 && calls < tc.wantCalls {
					return tc.after, nil
				}
				return 0, nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				Run(ctx, q, 2, "test", testenv.QuietLog(), fn)
				close(done)
			}()
			q.Add("k")
			wait.Eventually(t, 5*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if calls != tc.wantCalls || q.Len() != 0 {
					return errors.New("not yet")
				}
				return nil
			})
			cancel()
			<-done
			if calls != tc.wantCalls {
				t.Errorf("%d syncs, want %d", calls, tc.wantCalls)
			}
			if !q.ShuttingDown() {
				t.Error("the queue is not shut down after Run returned")
			}
		})
	}
}

// A sync that fails because the context ended is not retried: the next
// leader or agent takes it from there.
func TestRunStopping(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	fn := func(ctx context.Context, key string) (time.Duration, error) {
		close(started)
		<-ctx.Done()
		return 0, ctx.Err()
	}
	done := make(chan struct{})
	go func() {
		Run(ctx, q, 1, "test", testenv.QuietLog(), fn)
		close(done)
	}()
	q.Add("k")
	<-started
	cancel()
	<-done
	if n := q.NumRequeues("k"); n != 0 {
		t.Errorf("requeued %d times after the context ended, want 0", n)
	}
}
