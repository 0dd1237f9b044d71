package channel

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/internal/wait"
)

// waitAsleep runs s.Wait on a goroutine locked to its thread, returns
// once that thread sleeps in futex(2), and reports when Wait returns.
func waitAsleep(t *testing.T, s *Subscriber) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tids := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		done <- s.Wait(ctx)
	}()
	t.Cleanup(cancel)
	wait.InFutex(t, <-tids, &s.qh.DataFutex)
	return done
}

// A subscriber deaf to quiet publishers (the mirror's exporter) sleeps
// through their commits, which wake every other subscriber, and wakes for
// an ordinary publisher's commit or the quiet one's WakeAll; it then
// reads every message, the quiet ones first, in order.
func TestDeafToQuiet(t *testing.T) {
	for _, tc := range []struct {
		name string
		wake func(t *testing.T, quiet, loud *Publisher)
		want []string
	}{
		{"an ordinary commit wakes it", func(t *testing.T, _, loud *Publisher) {
			if err := loud.Publish(context.Background(), []byte("loud")); err != nil {
				t.Fatal(err)
			}
		}, []string{"quiet", "loud"}},
		{"WakeAll wakes it", func(t *testing.T, quiet, _ *Publisher) { quiet.WakeAll() }, []string{"quiet"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{})
			deaf, err := r.NewSubscriber(SubscriberOptions{DeafToQuiet: true})
			if err != nil {
				t.Fatal(err)
			}
			plain := mustSub(t, r)
			quiet, err := r.NewPublisher(PublisherOptions{Quiet: true})
			if err != nil {
				t.Fatal(err)
			}
			loud := mustPub(t, r)

			// The deaf one first: it sleeps on the word itself (the
			// plain one, second on the same word in this process, waits
			// through the poller, which every wake-up ends).
			deafDone := waitAsleep(t, deaf)
			asleep := time.Now()
			plainDone := make(chan error, 1)
			go func() { plainDone <- plain.Wait(context.Background()) }()
			if err := quiet.Publish(context.Background(), []byte("quiet")); err != nil {
				t.Fatal(err)
			}
			if err := <-plainDone; err != nil {
				t.Fatalf("plain subscriber: %v", err)
			}
			// The quiet wake-up is over (the plain subscriber saw it); a
			// deaf sleeper it had woken would return within microseconds.
			select {
			case err := <-deafDone:
				t.Fatalf("the deaf subscriber woke for a quiet commit (Wait: %v)", err)
			case <-time.After(20 * time.Millisecond):
			}

			tc.wake(t, quiet, loud)
			if err := <-deafDone; err != nil {
				t.Fatal(err)
			}
			// Woken, not timed out: the sleep's safety timeout is
			// r.sleepFor() after it began.
			if d := time.Since(asleep); d >= r.sleepFor() {
				t.Fatalf("the deaf subscriber returned %v after it slept: its safety timeout, not the wake-up", d)
			}
			for _, want := range tc.want {
				got, err := deaf.TryNext(nil)
				if err != nil || string(got) != want {
					t.Fatalf("deaf subscriber read %q, %v; want %q", got, err, want)
				}
			}
			if _, err := deaf.TryNext(nil); !errors.Is(err, ErrWouldBlock) {
				t.Fatalf("deaf subscriber: one message more (%v)", err)
			}
		})
	}
}
