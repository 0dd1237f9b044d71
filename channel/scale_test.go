package channel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fanout is one publisher and n subscribers of a block pubsub ring in this
// process, each subscriber in its own goroutine, checking that it receives
// every message once, in order, intact.
type fanout struct {
	r    *Ring
	pub  *Publisher
	subs []*Subscriber
	got  []atomic.Uint64 // messages each subscriber received in order
	errs chan error
	wg   sync.WaitGroup
	stop context.CancelFunc
}

// startFanout joins n subscribers to r and starts reading. Every message
// is an 8-byte sequence number; a subscriber fails on anything else.
func startFanout(t testing.TB, r *Ring, n int, idle Idle) *fanout {
	t.Helper()
	f := &fanout{r: r, got: make([]atomic.Uint64, n), errs: make(chan error, n)}
	for i := 0; i < n; i++ {
		s, err := r.NewSubscriber(SubscriberOptions{Idle: idle})
		if err != nil {
			t.Fatal(err)
		}
		f.subs = append(f.subs, s)
	}
	p, err := r.NewPublisher(PublisherOptions{Idle: idle})
	if err != nil {
		t.Fatal(err)
	}
	f.pub = p
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	for i, s := range f.subs {
		f.wg.Add(1)
		go f.read(ctx, i, s)
	}
	t.Cleanup(f.close)
	return f
}

func (f *fanout) read(ctx context.Context, i int, s *Subscriber) {
	defer f.wg.Done()
	var buf []byte
	for {
		msg, err := s.Next(ctx, buf)
		buf = msg
		if err != nil {
			if ctx.Err() == nil {
				f.errs <- fmt.Errorf("subscriber %d: %w", i, err)
			}
			return
		}
		want := f.got[i].Load()
		if len(msg) != 8 || binary.LittleEndian.Uint64(msg) != want {
			f.errs <- fmt.Errorf("subscriber %d: message %x, want sequence %d", i, msg, want)
			return
		}
		f.got[i].Add(1)
	}
}

// publish publishes messages from f's next sequence number on, n of them.
func (f *fanout) publish(ctx context.Context, from, n uint64) error {
	var b [8]byte
	for i := from; i < from+n; i++ {
		binary.LittleEndian.PutUint64(b[:], i)
		if err := f.pub.Publish(ctx, b[:]); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return nil
}

// complete reports nil once every subscriber received n messages, or the
// first subscriber error.
func (f *fanout) complete(n uint64) error {
	select {
	case err := <-f.errs:
		return err
	default:
	}
	for i := range f.got {
		if g := f.got[i].Load(); g != n {
			return fmt.Errorf("subscriber %d received %d of %d messages", i, g, n)
		}
	}
	return nil
}

func (f *fanout) close() {
	f.stop()
	f.wg.Wait()
	for _, s := range f.subs {
		s.Close()
	}
	f.pub.Close()
}

// TestManySubscribersStayAlive: 4 000 subscribers in one process, asleep
// most of the time, on a ring with a short lease and a reaper running
// (the agent's, through its own mapping): over many leases none is
// evicted, and every one receives every message. The heartbeats of one
// process must keep up with all its members whatever their number.
func TestManySubscribersStayAlive(t *testing.T) {
	const (
		subs  = 4000
		lease = 400 * time.Millisecond
		msgs  = 24
	)
	r := newRing(t, Config{Capacity: 64 << 10, MemberSlots: 4096, Lease: lease})
	agent, err := Open(r.mem)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reaped atomic.Int64
	reaper := make(chan struct{})
	go func() {
		defer close(reaper)
		for ctx.Err() == nil {
			reaped.Add(int64(agent.Reap()))
			time.Sleep(lease / 10)
		}
	}()
	f := startFanout(t, r, subs, IdleSleep)
	// A message every lease/4: the run spans lease*msgs/4 = 6 leases,
	// with every subscriber asleep between messages.
	start := time.Now()
	for i := uint64(0); i < msgs; i++ {
		if err := f.publish(ctx, i, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(lease / 4)
	}
	eventually(t, time.Minute, func() error { return f.complete(msgs) })
	cancel()
	<-reaper
	if n, ev := reaped.Load(), r.QueueStats(0).Evicted; n != 0 || ev != 0 {
		t.Fatalf("%d subscribers of %d evicted (Evicted counter %d) in %v with a lease of %v", n, subs, ev, time.Since(start), lease)
	}
	if got := len(r.Members()); got != subs+1 {
		t.Fatalf("%d members, want %d", got, subs+1)
	}
	for _, m := range f.subs {
		if err := m.m.alive(); err != nil {
			t.Fatal(errors.Join(fmt.Errorf("slot %d", m.m.idx), err))
		}
	}
}
