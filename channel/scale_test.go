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
		lease = time.Second
		msgs  = 24
	)
	r := newRing(t, Config{Capacity: 64 << 10, MemberSlots: 4096, Lease: lease})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reaped, reaper := startReaper(ctx, t, r, lease/10)
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
	if err := waitComplete(f, msgs); err != nil {
		t.Fatalf("%v (Evicted counter %d, reaper evicted %d)", err, r.QueueStats(0).Evicted, reaped.Load())
	}
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

// startReaper reaps r as an agent would (through its own view of the
// ring) every interval until ctx is done; reaper is closed then, and
// reaped counts the members it evicted.
func startReaper(ctx context.Context, t testing.TB, r *Ring, every time.Duration) (reaped *atomic.Int64, reaper chan struct{}) {
	t.Helper()
	agent, err := Open(r.mem)
	if err != nil {
		t.Fatal(err)
	}
	reaped, reaper = new(atomic.Int64), make(chan struct{})
	go func() {
		defer close(reaper)
		for ctx.Err() == nil {
			reaped.Add(int64(agent.Reap()))
			time.Sleep(every)
		}
	}()
	return reaped, reaper
}

// TestFanoutBlockFull: many subscribers on a small block ring that the
// publisher fills again and again, so that it waits for the slowest of
// them over and over: every subscriber still receives every message, once,
// in order (the publisher never passes the slowest live subscriber).
func TestFanoutBlockFull(t *testing.T) {
	for _, n := range []int{1, 64, 512} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := newRing(t, Config{Capacity: MinCapacity, MemberSlots: uint32(n + 1)})
			f := startFanout(t, r, n, IdleDefault)
			const msgs = 3000 // about 23 laps of 128 frames
			if err := f.publish(context.Background(), 0, msgs); err != nil {
				t.Fatal(err)
			}
			eventually(t, time.Minute, func() error { return f.complete(msgs) })
			if ev := r.QueueStats(0).Evicted; ev != 0 {
				t.Fatalf("%d subscribers evicted", ev)
			}
		})
	}
}

// BenchmarkFanout: one publisher and n subscribers of one block pubsub
// channel, all mmap clients in this process (each subscriber a goroutine,
// waiting with IdleDefault), 8-byte messages. It reports the publisher's
// messages a second and the completeness: the share of the b.N messages
// every subscriber received, in order, counted one by one (1 means none
// was lost; the benchmark fails otherwise).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 16, 256, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			r := newRing(b, Config{Capacity: 1 << 20, MemberSlots: uint32(n + 1)})
			f := startFanout(b, r, n, IdleDefault)
			b.ResetTimer()
			if err := f.publish(context.Background(), 0, uint64(b.N)); err != nil {
				b.Fatal(err)
			}
			elapsed := b.Elapsed()
			if err := waitComplete(f, uint64(b.N)); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			var got uint64
			for i := range f.got {
				got += f.got[i].Load()
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pub-msgs/s")
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "delivered/s")
			b.ReportMetric(float64(got)/float64(uint64(b.N)*uint64(n)), "complete")
		})
	}
}

// waitComplete waits until f.complete(n) holds, or a minute passes.
func waitComplete(f *fanout, n uint64) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := f.complete(n)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFullRingScansOnce: a publisher that finds no room behind a slow
// subscriber scans the member table once, then watches that subscriber
// alone, however often it tries; it gets room as soon as that subscriber
// reads, and never before.
func TestFullRingScansOnce(t *testing.T) {
	var scans atomic.Int64
	testHookScan = func() { scans.Add(1) }
	t.Cleanup(func() { testHookScan = nil })
	const n = 64
	r := newRing(t, Config{Capacity: MinCapacity, MemberSlots: n + 1})
	subs := make([]*Subscriber, n)
	for i := range subs {
		subs[i] = mustSub(t, r)
	}
	p := mustPub(t, r)
	msg := make([]byte, 8)
	sent := 0
	for ; ; sent++ {
		binary.LittleEndian.PutUint64(msg, uint64(sent))
		if err := p.TryPublish(msg); errors.Is(err, ErrWouldBlock) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// drain reads everything s has, in order, and stores its cursor.
	drain := func(s *Subscriber, from int) int {
		for ; ; from++ {
			m, err := s.TryNext(nil)
			if errors.Is(err, ErrWouldBlock) {
				return from
			}
			if err != nil || binary.LittleEndian.Uint64(m) != uint64(from) {
				t.Fatalf("message %d: %x, %v", from, m, err)
			}
		}
	}
	// All but subscriber 0 read everything: it alone holds the publisher.
	for _, s := range subs[1:] {
		if got := drain(s, 0); got != sent {
			t.Fatalf("subscriber read %d of %d", got, sent)
		}
	}
	scans.Store(0)
	for i := 0; i < 100; i++ {
		if err := p.TryPublish(msg); !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("publish %d past the slowest subscriber: %v", i, err)
		}
	}
	if s := scans.Load(); s > 1 {
		t.Fatalf("%d scans of the member table for 100 attempts behind the same subscriber", s)
	}
	if got := drain(subs[0], 0); got != sent {
		t.Fatalf("slowest subscriber read %d of %d", got, sent)
	}
	binary.LittleEndian.PutUint64(msg, uint64(sent))
	if err := p.TryPublish(msg); err != nil {
		t.Fatalf("publish once the slowest subscriber read: %v", err)
	}
	for _, s := range subs {
		if got := drain(s, sent); got != sent+1 {
			t.Fatalf("subscriber read up to %d, want %d", got, sent+1)
		}
	}
}
