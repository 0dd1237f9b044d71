package channel

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Crash tests: a member is SIGKILLed while it blocks others, and the
// survivors must get past it once its lease has expired. The lease is
// short so the tests are quick; every wait polls with a generous bound
// (childTimeout) and nothing asserts on elapsed time.

const crashLease = 200 * time.Millisecond

// deadMemberGone reports an error if a member of process pid is still in
// the ring's member table.
func deadMemberGone(r *Ring, pid int) error {
	for _, m := range r.Members() {
		if m.Pid == uint32(pid) {
			return fmt.Errorf("member slot %d of dead pid %d still present: %+v", m.Slot, pid, m)
		}
	}
	return nil
}

// TestCrashPublisherMidClaim: publisher 0 publishes some messages, claims
// one more and is killed holding the claim. Subscribers are parked at the
// dead claim, and publisher 1, with the block policy, behind them; the
// subscribers must pad over the claim once its lease expires and receive
// every message of both publishers except the claimed one, intact and in
// order.
func TestCrashPublisherMidClaim(t *testing.T) {
	tests := []struct {
		name      string
		pre       int // messages publisher 0 commits before its claim
		survivor  int // messages publisher 1 publishes
		idle      []string
		killFirst bool // kill before publisher 1 starts (else while it is blocked)
		batch     bool // publisher 0 publishes in batches and dies holding a batch
	}{
		{name: "batch/claim-first/survivor-blocked", pre: 0, survivor: 500, idle: []string{"sleep", "default"}, batch: true},
		{name: "batch/after-wraps/killed-first", pre: 300, survivor: 300, idle: []string{"default"}, killFirst: true, batch: true},
		{name: "claim-first/survivor-blocked", pre: 0, survivor: 500, idle: []string{"sleep", "default"}},
		{name: "after-wraps/survivor-blocked", pre: 300, survivor: 500, idle: []string{"default"}},
		{name: "after-wraps/killed-first", pre: 123, survivor: 300, idle: []string{"sleep"}, killFirst: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, path := newShmRing(t, Config{Capacity: procCapacity, Lease: crashLease})
			counts := []int{tc.pre, tc.survivor}
			var subs []*child
			for i, idle := range tc.idle {
				c := startChild(t, fmt.Sprintf("subscriber %d", i), "sub", envRing+"="+path, countsEnv(counts), envIdle+"="+idle)
				c.waitLine("READY")
				subs = append(subs, c)
			}
			batch := "0"
			if tc.batch {
				batch = "1"
			}
			claimer := startChild(t, "claimer", "claimer", envRing+"="+path, envPub+"=0", envCount+"="+strconv.Itoa(tc.pre), envBatch+"="+batch)
			claimer.waitLine("CLAIMED")
			if tc.killFirst {
				claimer.kill()
				claimer.waitKilled()
			}
			survivor := startChild(t, "publisher 1", "pub", envRing+"="+path, envPub+"=1", envCount+"="+strconv.Itoa(tc.survivor))
			if !tc.killFirst {
				// The subscribers cannot pass the claim, so the
				// survivor fills the ring and waits behind them.
				eventually(t, childTimeout, func() error {
					if w := atomic.LoadUint32(&r.queues[0].SpaceWaiters); w == 0 {
						return fmt.Errorf("publisher 1 is not waiting for space")
					}
					return nil
				})
				claimer.kill()
				claimer.waitKilled()
			}
			survivor.waitOK()
			for _, c := range subs {
				c.waitOK()
				if res := resultLine(t, c); res[0] != tc.pre+tc.survivor || res[1] != 0 {
					t.Errorf("%s: received %d, lost %d; want %d, 0", c.name, res[0], res[1], tc.pre+tc.survivor)
				}
			}
			if n := atomic.LoadUint64(&r.queues[0].Reaped); n != 1 {
				t.Errorf("%d claims reaped, want the dead publisher's one", n)
			}
			// The dead publisher's slot holds no claim: Reap frees it.
			eventually(t, childTimeout, func() error {
				r.Reap()
				return deadMemberGone(r, claimer.pid())
			})
		})
	}
}

// TestCrashPublisherClaimAtWrap: a publisher dies holding a claim that
// starts with padding at the end of the ring (committed at once) while the
// only subscriber is parked far behind it. A reaper must not take the
// dead publisher's slot for settled because the padding is committed: it
// would forget who owns the data frame after it, and the subscriber would
// wait at that frame forever. The subscriber must get past the claim once
// it reaches it, and receive every other message intact and in order.
func TestCrashPublisherClaimAtWrap(t *testing.T) {
	cfg := Config{Capacity: procCapacity, Lease: crashLease}
	// Publisher 2 (this test) fills the ring until the next frame of the
	// largest size would not fit before the end; found on a scratch ring
	// of the same geometry, as sizes and positions are deterministic.
	scratch := newRing(t, cfg)
	max := int(scratch.Config().MaxMessage)
	fill, half := publishUntilWrap(t, scratch, max, 0)

	r, path := newShmRing(t, cfg)
	const survivor = 200
	counts := []int{0, survivor, fill}
	// The subscriber parks half a ring behind the claim: past the space
	// the claim takes after the wrap, behind the padding before it.
	sub := startChild(t, "subscriber", "sub", envRing+"="+path, countsEnv(counts), envIdle+"=default", envPause+"="+strconv.Itoa(half))
	sub.waitLine("READY")
	if n, _ := publishUntilWrap(t, r, max, fill); n != fill {
		t.Fatalf("published %d filler messages, the scratch ring took %d", n, fill)
	}
	eventually(t, childTimeout, func() error {
		if m := r.Members(); len(m) != 1 || m[0].Count < uint64(half)&^255 {
			return fmt.Errorf("the subscriber has not read %d messages: %+v", half, m)
		}
		return nil
	})
	claimer := startChild(t, "claimer", "claimer", envRing+"="+path, envPub+"=0", envCount+"=0")
	claimer.waitLine("CLAIMED")
	if off := r.offset(pos(atomic.LoadUint64(&r.queues[0].Tail)).units()); off >= r.capacity/2 {
		t.Fatalf("the claim did not wrap: tail at offset %d", off)
	}
	claimer.kill()
	claimer.waitKilled()
	// Reap past the dead publisher's lease while the subscriber is parked.
	eventually(t, childTimeout, func() error {
		r.Reap()
		for _, m := range r.Members() {
			if m.Pid == uint32(claimer.pid()) && m.LeaseAge <= crashLease {
				return fmt.Errorf("the dead publisher's lease has not expired: %+v", m)
			}
		}
		return nil
	})
	r.Reap()
	sub.release()
	pub := startChild(t, "publisher 1", "pub", envRing+"="+path, envPub+"=1", envCount+"="+strconv.Itoa(survivor))
	pub.waitOK()
	sub.waitOK()
	if res := resultLine(t, sub); res[0] != fill+survivor || res[1] != 0 {
		t.Errorf("received %d, lost %d; want %d, 0", res[0], res[1], fill+survivor)
	}
	if n := atomic.LoadUint64(&r.queues[0].Reaped); n != 1 {
		t.Errorf("%d claims reaped, want the dead publisher's one", n)
	}
	eventually(t, childTimeout, func() error {
		r.Reap()
		return deadMemberGone(r, claimer.pid())
	})
}

// publishUntilWrap publishes messages of publisher 2 until a frame of max
// bytes no longer fits before the end of the ring, and returns how many,
// and how many it had published when the tail passed half the ring. want,
// if not 0, is the count to stop at.
func publishUntilWrap(t *testing.T, r *Ring, max, want int) (n, half int) {
	t.Helper()
	p, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	buf := make([]byte, max)
	frame := align16(FrameHeaderLen + uint64(max))
	for ; want == 0 || n < want; n++ {
		off := r.offset(pos(atomic.LoadUint64(&r.queues[0].Tail)).units())
		if half == 0 && off >= r.capacity/2 {
			half = n
		}
		if want == 0 && n > 0 && off+frame > r.capacity && off > r.capacity/2 {
			break
		}
		if err := p.TryPublish(encodeMsg(buf, 2, n, msgSize(2, n, max))); err != nil {
			t.Fatalf("filler message %d: %v", n, err)
		}
	}
	return n, half
}

// TestCrashSubscriberMidRead: with the block policy a subscriber holds
// publishers back. One is killed while it holds a message from Peek; the
// publisher must go on once the dead subscriber's lease expired (it is
// evicted when the blocked publisher recomputes the limit) and the other
// subscriber gets every message.
func TestCrashSubscriberMidRead(t *testing.T) {
	tests := []struct {
		name  string
		stall int // messages the doomed subscriber reads before it peeks and hangs
		count int
		idle  string
	}{
		{name: "first-message", stall: 0, count: 400, idle: "sleep"},
		{name: "after-wraps", stall: 150, count: 600, idle: "default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, path := newShmRing(t, Config{Capacity: procCapacity, Lease: crashLease})
			counts := []int{tc.count}
			survivor := startChild(t, "survivor", "sub", envRing+"="+path, countsEnv(counts), envIdle+"="+tc.idle)
			survivor.waitLine("READY")
			doomed := startChild(t, "doomed", "sub", envRing+"="+path, countsEnv(counts), envIdle+"="+tc.idle, envStall+"="+strconv.Itoa(tc.stall))
			doomed.waitLine("READY")
			pub := startChild(t, "publisher", "pub", envRing+"="+path, envPub+"=0", envCount+"="+strconv.Itoa(tc.count), envIdle+"="+tc.idle)
			doomed.waitLine("PEEKED")
			doomed.kill()
			doomed.waitKilled()
			pub.waitOK()
			survivor.waitOK()
			if res := resultLine(t, survivor); res[0] != tc.count || res[1] != 0 {
				t.Errorf("survivor received %d, lost %d; want %d, 0", res[0], res[1], tc.count)
			}
			// The publisher got past the dead subscriber's cursor by
			// a whole ring, so it must have evicted it (no Reap here).
			if err := deadMemberGone(r, doomed.pid()); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestCrashStreamReader: two stream readers die: one asleep in Next, one
// holding a take (it took the first message and is killed before marking
// it consumed). The writer must go on once their leases expired and the
// surviving reader gets every other message exactly once.
func TestCrashStreamReader(t *testing.T) {
	r, path := newShmRing(t, Config{Type: TypeStream, Capacity: procCapacity, Lease: crashLease})
	const count = 600
	counts := []int{count}
	qh := r.queues[0]

	sleeper := startChild(t, "sleeping reader", "reader", envRing+"="+path, countsEnv(counts))
	sleeper.waitLine("READY")
	eventually(t, childTimeout, func() error {
		if atomic.LoadUint32(&qh.DataWaiters) == 0 {
			return fmt.Errorf("the reader is not asleep in Next")
		}
		return nil
	})
	sleeper.kill()
	sleeper.waitKilled()

	// The only live reader, so it takes message 0.
	taker := startChild(t, "taker", "reader", envRing+"="+path, countsEnv(counts), envTake+"=1")
	taker.waitLine("READY")
	writer := startChild(t, "writer", "pub", envRing+"="+path, envPub+"=0", envCount+"="+strconv.Itoa(count))
	taker.waitLine("TAKEN")
	taker.kill()
	taker.waitKilled()

	survivor := startChild(t, "survivor", "reader", envRing+"="+path, countsEnv(counts), envIdle+"=default")
	survivor.waitLine("READY")
	writer.waitOK()
	survivor.release()
	survivor.waitOK()
	checkStreamDelivery(t, []*child{survivor}, counts, int(r.Config().MaxMessage), map[[2]int]bool{{0, 0}: true})
	if n := atomic.LoadUint64(&qh.Reaped); n != 1 {
		t.Errorf("%d takes reaped, want the dead taker's one", n)
	}
	eventually(t, childTimeout, func() error {
		r.Reap()
		if err := deadMemberGone(r, sleeper.pid()); err != nil {
			return err
		}
		return deadMemberGone(r, taker.pid())
	})
}

// TestDeadTake sets a reader slot's take (Pending, PendingLen) and moves
// Head past the record, as a reader that died between taking and marking
// consumed leaves it. Writers must go on once that reader's lease expired
// (and not before, while it is alive), and a live reader gets every other
// message in order.
func TestDeadTake(t *testing.T) {
	for _, dead := range []bool{true, false} {
		t.Run(map[bool]string{true: "dead", false: "alive"}[dead], func(t *testing.T) {
			// A live taker keeps the default lease, so that a loaded
			// machine starving its heartbeats cannot fake a death.
			lease := crashLease
			if !dead {
				lease = DefaultLease
			}
			r := newRing(t, Config{Type: TypeStream, Capacity: MinCapacity, Lease: lease})
			qh := r.queues[0]
			taker, err := r.NewReader(ReaderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p, err := r.NewPublisher(PublisherOptions{Idle: IdleDefault})
			if err != nil {
				t.Fatal(err)
			}
			msg := make([]byte, 100)
			msg[0] = 0
			if err := p.TryPublish(msg); err != nil {
				t.Fatal(err)
			}
			h := pos(atomic.LoadUint64(&qh.Head))
			_, frame, st, err := r.read(0, h)
			if st != readOK {
				t.Fatalf("read state %d: %v", st, err)
			}
			atomic.StoreUint64(&taker.m.s.Pending, uint64(h))
			atomic.StoreUint64(&taker.m.s.PendingLen, frame)
			if !atomic.CompareAndSwapUint64(&qh.Head, uint64(h), uint64(mkpos(h.seq()+1, h.units()+uint32(frame>>unitShift)))) {
				t.Fatal("head moved")
			}
			if dead {
				r.untrack(taker.m) // no more heartbeats: it died
			}
			// Fill the ring: the taken record keeps its space.
			n := 1
			for ; ; n++ {
				msg[0] = byte(n)
				if err := p.TryPublish(msg); err == ErrWouldBlock {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			if !dead {
				// A live taker holds the space, whoever reaps.
				if n := r.Reap(); n != 0 {
					t.Fatalf("Reap evicted %d members", n)
				}
				if err := p.TryPublish(msg); err != ErrWouldBlock {
					t.Fatalf("publish past a live reader's take: %v", err)
				}
				if got := atomic.LoadUint64(&qh.Reaped); got != 0 || taker.m.alive() != nil {
					t.Fatalf("live take reaped (%d)", got)
				}
				return
			}
			rd, err := r.NewReader(ReaderOptions{Idle: IdleDefault})
			if err != nil {
				t.Fatal(err)
			}
			const total = 200
			done := make(chan error, 1)
			go func() {
				var b []byte
				ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
				defer cancel()
				for want := 1; want < total; want++ {
					var err error
					if b, err = rd.Next(ctx, b); err != nil {
						done <- err
						return
					}
					if len(b) != len(msg) || b[0] != byte(want) {
						done <- fmt.Errorf("got message %d (%d bytes), want %d", b[0], len(b), byte(want))
						return
					}
				}
				done <- nil
			}()
			ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
			defer cancel()
			for ; n < total; n++ {
				msg[0] = byte(n)
				if err := p.Publish(ctx, msg); err != nil {
					t.Fatalf("publish %d behind a dead take: %v", n, err)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := atomic.LoadUint64(&qh.Reaped); got != 1 {
				t.Errorf("%d takes reaped, want 1", got)
			}
			if l := atomic.LoadUint64(&taker.m.s.PendingLen); l != 0 {
				t.Errorf("dead take still recorded (%d bytes)", l)
			}
			eventually(t, childTimeout, func() error {
				if r.Reap(); taker.m.alive() == nil {
					return fmt.Errorf("dead reader not evicted")
				}
				return nil
			})
		})
	}
}

// TestCrashStreamWriterMidClaim: a stream writer dies holding a claim;
// the reader pads over it once the lease expired and takes every message
// of both writers.
func TestCrashStreamWriterMidClaim(t *testing.T) {
	r, path := newShmRing(t, Config{Type: TypeStream, Capacity: procCapacity, Lease: crashLease})
	counts := []int{77, 400}
	reader := startChild(t, "reader", "reader", envRing+"="+path, countsEnv(counts), envIdle+"=default")
	reader.waitLine("READY")
	claimer := startChild(t, "claimer", "claimer", envRing+"="+path, envPub+"=0", envCount+"="+strconv.Itoa(counts[0]))
	claimer.waitLine("CLAIMED")
	writer := startChild(t, "writer", "pub", envRing+"="+path, envPub+"=1", envCount+"="+strconv.Itoa(counts[1]))
	claimer.kill()
	claimer.waitKilled()
	writer.waitOK()
	reader.release()
	reader.waitOK()
	checkStreamDelivery(t, []*child{reader}, counts, int(r.Config().MaxMessage), nil)
	if n := atomic.LoadUint64(&r.queues[0].Reaped); n != 1 {
		t.Errorf("%d claims reaped, want the dead writer's one", n)
	}
}

// TestCloseWithClaim: a publisher that closes with a claim outstanding
// turns it into padding; the claim's sequence number is skipped and the
// next message reaches subscribers and readers.
func TestCloseWithClaim(t *testing.T) {
	for _, typ := range []Type{TypePubSub, TypeStream} {
		t.Run(strconv.Itoa(int(typ)), func(t *testing.T) {
			r := newRing(t, Config{Type: typ, Capacity: MinCapacity})
			var next func() ([]byte, error)
			if typ == TypePubSub {
				s, err := r.NewSubscriber(SubscriberOptions{})
				if err != nil {
					t.Fatal(err)
				}
				next = func() ([]byte, error) { return s.TryNext(nil) }
			} else {
				rd, err := r.NewReader(ReaderOptions{})
				if err != nil {
					t.Fatal(err)
				}
				next = func() ([]byte, error) { return rd.TryNext(nil) }
			}
			for i := 0; i < 40; i++ { // several laps
				p, err := r.NewPublisher(PublisherOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.Claim(context.Background(), 200); err != nil {
					t.Fatal(err)
				}
				p.Close()
				p, err = r.NewPublisher(PublisherOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if err := p.TryPublish([]byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
				p.Close()
				got, err := next()
				if err != nil || len(got) != 1 || got[0] != byte(i) {
					t.Fatalf("round %d: got %x, %v; want %x", i, got, err, i)
				}
			}
		})
	}
}
