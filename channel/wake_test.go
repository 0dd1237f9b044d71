package channel

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// wakePair is one waker/waiter pair of the futex protocol (section 11 of
// the ABI), driven round by round by TestWakeStoreBuffering.
type wakePair struct {
	prepare func()      // the waker, before a round: progress still to make
	wake    func()      // the waker: make the progress, wake waiters if any
	seen    func() bool // the waiter, after announcing its sleep: progress made?
	word    *uint32     // the futex word
	waiters *uint32     // the waiter count
}

// TestWakeStoreBuffering is the store-buffering litmus test of the two
// wake-ups the ring relies on, run on the real code paths: a publisher's
// commit against a reader announcing its sleep on DataFutex, and a block
// subscriber's cursor flush against a publisher announcing its sleep on
// SpaceFutex. In each round both sides start at the same instant; "the
// waker did not bump the futex word and the waiter saw no progress" is a
// lost wake-up, which costs the waiter a whole futex timeout. x86 allows
// exactly that outcome when the progress store is a plain release store
// (a few percent of rounds on this machine).
func TestWakeStoreBuffering(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs for the two sides to race")
	}
	const rounds = 50_000
	for _, tc := range []struct {
		name string
		pair func(t *testing.T, r *Ring) wakePair
	}{
		{"commit wakes a reader", func(t *testing.T, r *Ring) wakePair {
			p := mustPub(t, r)
			var c Claim
			return wakePair{
				prepare: func() {
					var err error
					if c, err = p.Claim(context.Background(), 8); err != nil {
						panic(err)
					}
				},
				wake: func() {
					if err := p.Commit(c); err != nil {
						panic(err)
					}
				},
				seen: func() bool { return r.tagged(0, c.p) },
				word: &r.queues[0].DataFutex, waiters: &r.queues[0].DataWaiters,
			}
		}},
		{"cursor flush wakes a publisher", func(t *testing.T, r *Ring) wakePair {
			s := mustSub(t, r)
			// flush wakes publishers only when the cursor it leaves could
			// hold them back (mayHold: more than a lap's reach behind the
			// tail, modulo 2^32). The rounds move the cursor one unit past
			// a tail that stays at 0, which reads as far behind, except
			// from 0 itself: take that step first, or round 1 may lose a
			// wake-up no publisher needed.
			s.cur = mkpos(s.cur.seq()+1, s.cur.units()+1)
			s.dirtyN = 1
			s.flush()
			var want pos
			return wakePair{
				prepare: func() {
					s.cur = mkpos(s.cur.seq()+1, s.cur.units()+1)
					s.dirtyN, want = 1, s.cur
				},
				wake: s.flush,
				seen: func() bool { return pos(atomic.LoadUint64(&s.m.s.Cursor)) == want },
				word: &r.queues[0].SpaceFutex, waiters: &r.queues[0].SpaceWaiters,
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: 1 << 20})
			if lost := runWakeLitmus(tc.pair(t, r), rounds); lost != 0 {
				t.Errorf("%d of %d rounds lost the wake-up (the waker saw no waiter, the waiter saw no progress)", lost, rounds)
			}
		})
	}
}

// runWakeLitmus runs n rounds of pair and returns how many lost the wake-up.
func runWakeLitmus(pair wakePair, n int64) int {
	var start, done, at atomic.Int64
	var saw atomic.Bool
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := int64(1); i <= n; i++ {
			for start.Load() < i {
			}
			for monotonic() < at.Load() {
			}
			atomic.AddUint32(pair.waiters, 1)
			saw.Store(pair.seen())
			done.Store(i)
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	lost := 0
	for i := int64(1); i <= n; i++ {
		pair.prepare()
		atomic.StoreUint32(pair.waiters, 0)
		w0 := atomic.LoadUint32(pair.word)
		at.Store(monotonic() + 1000) // both sides act at this instant
		start.Store(i)
		for monotonic() < at.Load() {
		}
		pair.wake()
		for done.Load() < i {
		}
		if atomic.LoadUint32(pair.word) == w0 && !saw.Load() {
			lost++
		}
	}
	return lost
}

// TestCancelWakesSleeper: a subscriber asleep on an empty ring returns as
// soon as its context ends, not at its sleep's safety timeout (500 ms with
// this lease). A direct sleeper keeps its context's wake-up registered
// across sleeps: the case of the context its earlier sleeps used, and of
// a new one, which replaces it.
func TestCancelWakesSleeper(t *testing.T) {
	const safety = 500 * time.Millisecond
	for _, tc := range []struct {
		name string
		same bool // the last sleep's context is the earlier sleeps'
	}{
		{"the earlier sleeps' context", true},
		{"a new context", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Lease: 10 * time.Second})
			if got := r.sleepFor(); got != safety {
				t.Fatalf("safety timeout %v, want %v", got, safety)
			}
			s, err := r.NewSubscriber(SubscriberOptions{Idle: IdleSleep})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			p := mustPub(t, r)
			asleep := func() error {
				if atomic.LoadUint32(&r.queues[0].DataWaiters) == 0 {
					return errors.New("the subscriber announced no sleep")
				}
				return nil
			}
			peek := func(ctx context.Context) <-chan error {
				errc := make(chan error, 1)
				go func() {
					_, err := s.Peek(ctx)
					if err == nil {
						s.Done()
					}
					errc <- err
				}()
				return errc
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range 3 { // sleeps that a message ends
				errc := peek(ctx)
				eventually(t, 5*time.Second, asleep)
				if err := p.Publish(ctx, []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			last, cancelLast := ctx, cancel
			if !tc.same {
				last, cancelLast = context.WithCancel(context.Background())
				defer cancelLast()
			}
			errc := peek(last)
			eventually(t, 5*time.Second, asleep)
			cancelLast()
			start := time.Now()
			err = <-errc
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Peek: %v, want context.Canceled", err)
			}
			if waited := time.Since(start); waited >= safety/2 {
				t.Fatalf("Peek returned %v after its context ended: it slept out its timeout", waited)
			}
		})
	}
}
