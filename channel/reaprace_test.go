package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// readReady reads every message s has ready, failing the test on any
// error but ErrWouldBlock.
func readReady(t *testing.T, s *Subscriber, what string) [][]byte {
	t.Helper()
	var got [][]byte
	for {
		msg, err := s.TryNext(nil)
		if errors.Is(err, ErrWouldBlock) {
			return got
		}
		if err != nil {
			t.Fatalf("%s, after %d messages: %v", what, len(got), err)
		}
		got = append(got, msg)
	}
}

// TestPadRacesCommit: a publisher that stalled past its lease holding a
// claim comes back and commits exactly while a reaper pads the claim (the
// reaper has decided to pad, and has not committed its padding yet). One
// of them wins, and a reader that looks in between, or after, sees either
// the publisher's messages or padding: never the publisher's commit word
// with the reaper's sequence (a false ErrCorrupt on an honest ring, or a
// gap frame that steps readers by the wrong count). Whatever the outcome,
// what the reader receives plus what it counts lost is exactly what the
// publisher was told it published.
func TestPadRacesCommit(t *testing.T) {
	ctx := context.Background()
	const gap = 5
	for _, who := range []struct {
		name string
		pad  func(r *Ring, b Batch)
	}{
		{"Reap", func(r *Ring, b Batch) { r.Reap() }},
		{"stuck reader", func(r *Ring, b Batch) { r.unblockClaim(0, b.Position(), monotonic()) }},
	} {
		for _, cl := range []struct {
			name  string
			gap   uint32
			sizes []int
		}{
			{"one message", 0, []int{100}},
			{"batch", 0, []int{100, 50, 30}},
			{"gap and batch", gap, []int{100, 50}},
			{"gap alone", gap, nil},
		} {
			t.Run(who.name+", "+cl.name, func(t *testing.T) {
				r := newRing(t, Config{Capacity: 64 << 10, MaxMessage: 1000, Lease: stallLease})
				s := mustSub(t, r)
				a := mustPub(t, r)
				b, err := a.ClaimBatchLost(ctx, cl.gap, cl.sizes)
				if err != nil {
					t.Fatal(err)
				}
				if b.Len() != len(cl.sizes) {
					t.Fatalf("claimed %d frames, want %d", b.Len(), len(cl.sizes))
				}
				for i := range b.Len() {
					copy(b.Buf(i), stallMsg(i))
				}
				stall(t, r, a.m)
				var got [][]byte
				var commitErr error
				hooked := false
				testHookPadFrame = func() {
					testHookPadFrame = nil
					hooked = true
					commitErr = a.CommitBatch(b) // back just in time
					got = append(got, readReady(t, s, "read while the reaper pads")...)
				}
				t.Cleanup(func() { testHookPadFrame = nil })
				who.pad(r, b)
				if !hooked {
					t.Fatal("the reaper never padded the claim: the test tested nothing")
				}
				got = append(got, readReady(t, s, "read after the reaper")...)
				if err := mustPub(t, r).TryPublish(stallMsg(99)); err != nil {
					t.Fatal(err)
				}
				got = append(got, readReady(t, s, "read after a live publisher's message")...)

				var want [][]byte
				wantLost := uint64(0)
				switch {
				case commitErr == nil:
					for i := range b.Len() {
						want = append(want, stallMsg(i))
					}
					wantLost = uint64(cl.gap)
				case !errors.Is(commitErr, ErrEvicted):
					t.Fatalf("commit: %v, want nil or ErrEvicted", commitErr)
				}
				want = append(want, stallMsg(99))
				if len(got) != len(want) {
					t.Fatalf("commit said %v; received %d messages, want %d", commitErr, len(got), len(want))
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("message %d: %x..., want %x...", i, head(got[i]), head(want[i]))
					}
				}
				if s.Lost() != wantLost {
					t.Fatalf("commit said %v; lost %d, want %d", commitErr, s.Lost(), wantLost)
				}
				if tail := pos(atomic.LoadUint64(&r.queues[0].Tail)); s.Position() != tail {
					t.Fatalf("subscriber at %v, tail %v", s.Position(), tail)
				}
			})
		}
	}
}

// TestPadderDiedBusy: a reaper that died right after it made a dead
// publisher's frame its own (the commit word is padBusy) leaves the claim
// to whoever pads it next: another reaper, or the publisher itself, back
// late and giving the claim up. The publisher cannot commit over it, and
// readers go on past it.
func TestPadderDiedBusy(t *testing.T) {
	for _, who := range []struct {
		name string
		pad  func(r *Ring, a *Publisher, c Claim)
	}{
		{"Reap", func(r *Ring, a *Publisher, c Claim) { r.Reap() }},
		{"stuck reader", func(r *Ring, a *Publisher, c Claim) { r.unblockClaim(0, c.p, monotonic()) }},
		{"publisher closes", func(r *Ring, a *Publisher, c Claim) { a.Close() }},
	} {
		t.Run(who.name, func(t *testing.T) {
			r, s, a, c := claimHeld(t)
			copy(c.Buf, stallMsg(1))
			stall(t, r, a.m)
			atomic.StoreUint64(r.commitWord(0, c.off), padBusy(c.p)) // the reaper that died
			if got := readReady(t, s, "read at the busy frame"); len(got) != 0 {
				t.Fatalf("read %d messages at a frame being padded", len(got))
			}
			who.pad(r, a, c)
			if err := a.Commit(c); !errors.Is(err, ErrEvicted) && !a.m.close.Load() {
				t.Fatalf("late commit: %v, want ErrEvicted", err)
			}
			if err := mustPub(t, r).TryPublish(stallMsg(2)); err != nil {
				t.Fatal(err)
			}
			got := readReady(t, s, "read after the padding")
			if len(got) != 1 || !bytes.Equal(got[0], stallMsg(2)) {
				t.Fatalf("read %d messages after the padding, want the live publisher's one", len(got))
			}
			if s.Lost() != 0 {
				t.Fatalf("lost %d, want 0", s.Lost())
			}
		})
	}
}

var padRaceRounds = flag.Int("padrace.rounds", 3000, "claims the stalling publisher of TestPadRaceStress makes")

// TestPadRaceStress: a publisher whose lease lapses while it holds each of
// its claims (its heartbeats stop and its lease is backdated, as if it had
// been stopped that long) commits as soon as it is back, while a reaper
// reaps in a loop, another publisher publishes, and block subscribers
// stuck on the claims unblock them too. Every commit that reports success
// is received by every subscriber exactly once, in order, intact; what a
// commit reports ErrEvicted for is never received; no subscriber finds the
// ring corrupt; and the gap frames committed are counted lost, exactly.
// -padrace.rounds runs it longer.
func TestPadRaceStress(t *testing.T) {
	const (
		subs       = 2
		liveMsgs   = 20000
		stallerID  = 0
		liveID     = 1
		maxMessage = 200
	)
	// The stall is made by backdating a lease, so the lease can be long,
	// and the live members (four busy goroutines among them) keep theirs
	// however loaded the machine is.
	const lease = time.Second
	r := newRing(t, Config{Capacity: 16 << 10, MaxMessage: maxMessage, Lease: lease})
	var received [subs][2]atomic.Int64
	var lost [subs]atomic.Uint64
	g, ctx := errgroup.WithContext(context.Background())
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	for i := range subs {
		// Polling, not sleeping: a reader that looks at the claim the
		// moment its commit lands.
		s, err := r.NewSubscriber(SubscriberOptions{Idle: Idle{NoSleep: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		g.Go(func() error {
			var buf []byte
			var err error
			for {
				if buf, err = s.Next(readCtx, buf); err != nil {
					if readCtx.Err() != nil {
						return nil
					}
					return fmt.Errorf("subscriber %d after %d+%d messages: %w", i, received[i][0].Load(), received[i][1].Load(), err)
				}
				id, n, ok := decodeStress(buf)
				if !ok {
					return fmt.Errorf("subscriber %d: message %x... is not one published", i, head(buf))
				}
				if want := received[i][id].Load(); n != want {
					return fmt.Errorf("subscriber %d: publisher %d's message %d, want %d", i, id, n, want)
				}
				received[i][id].Add(1)
				lost[i].Store(s.Lost())
			}
		})
	}
	reaping := make(chan struct{})
	g.Go(func() error {
		for {
			select {
			case <-reaping:
				return nil
			default:
			}
			r.Reap()
			runtime.Gosched()
		}
	})
	g.Go(func() error { // a live publisher
		p, err := r.NewPublisher(PublisherOptions{})
		if err != nil {
			return err
		}
		defer p.Close()
		buf := make([]byte, maxMessage)
		for n := range liveMsgs {
			if err := p.Publish(ctx, encodeStress(buf[:8+n%(maxMessage-8)], liveID, int64(n))); err != nil {
				return fmt.Errorf("live publisher, message %d: %w", n, err)
			}
		}
		return nil
	})

	// The stalling publisher joins anew for each claim: a reaper that
	// pads its claim evicts it.
	var committed, evicted int64
	var gaps uint64
	g.Go(func() error {
		defer close(reaping)
		rng := rand.New(rand.NewPCG(1, 2))
		within := int64(10 * time.Microsecond)
		for round := range *padRaceRounds {
			p, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				return err
			}
			sizes := make([]int, 1+rng.IntN(3))
			for i := range sizes {
				sizes[i] = 8 + rng.IntN(60)
			}
			gap := uint32(0)
			if round%4 == 3 {
				gap = 1 + rng.Uint32N(9)
			}
			b, err := p.ClaimBatchLost(ctx, gap, sizes)
			if err != nil {
				return fmt.Errorf("round %d: claim: %w", round, err)
			}
			for i := range b.Len() {
				encodeStress(b.Buf(i), stallerID, committed+int64(i))
			}
			// Stopped for about its lease: no heartbeats, the last one
			// a lease ago, and back within `within` after the lease ran
			// out. within tracks how long the reaper takes to get there
			// (longer after a commit won, shorter after a reaper did), so
			// that the commit lands about when the reaper pads.
			r.untrack(p.m)
			now := monotonic()
			old := now - int64(lease)
			atomic.StoreUint64(&p.m.s.Lease, uint64(old))
			p.m.lease = uint64(old)
			for back := now + rng.Int64N(within); monotonic() < back; {
			}
			switch err := p.CommitBatch(b); {
			case err == nil:
				committed += int64(b.Len())
				gaps += uint64(gap)
				within = min(within*2, int64(time.Millisecond))
			case errors.Is(err, ErrEvicted):
				evicted++
				within = max(within/2, int64(time.Microsecond))
			default:
				return fmt.Errorf("round %d: commit: %w", round, err)
			}
			p.Close()
		}
		return nil
	})
	// Wait for the subscribers to read everything published, then stop them.
	g.Go(func() error {
		defer stopReading()
		select {
		case <-reaping:
		case <-ctx.Done():
			return nil
		}
		for i := range subs {
			for received[i][liveID].Load() != liveMsgs || received[i][stallerID].Load() != committed {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Millisecond):
				}
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for i := range subs {
		if got := received[i][stallerID].Load(); got != committed {
			t.Errorf("subscriber %d received %d of the stalling publisher's messages, %d committed", i, got, committed)
		}
		if got := lost[i].Load(); got != gaps {
			t.Errorf("subscriber %d lost %d, want %d (the committed gap frames)", i, got, gaps)
		}
	}
	if committed == 0 || evicted == 0 {
		t.Errorf("%d messages committed, %d claims reaped first: the race was never run both ways", committed, evicted)
	}
	t.Logf("%d messages committed late, %d claims reaped before their commit", committed, evicted)
}

// encodeStress fills msg with message n of publisher id: the two numbers,
// then bytes that depend on them, so that a torn or misplaced message
// shows.
func encodeStress(msg []byte, id int, n int64) []byte {
	binary.LittleEndian.PutUint32(msg, uint32(id))
	binary.LittleEndian.PutUint32(msg[4:], uint32(n))
	fillRandom(msg[8:], uint64(id)<<32|uint64(n))
	return msg
}

// decodeStress reads what encodeStress wrote, and whether it is intact.
func decodeStress(msg []byte) (id int, n int64, ok bool) {
	if len(msg) < 8 {
		return 0, 0, false
	}
	id, n = int(binary.LittleEndian.Uint32(msg)), int64(binary.LittleEndian.Uint32(msg[4:]))
	want := make([]byte, len(msg)-8)
	fillRandom(want, uint64(id)<<32|uint64(n))
	return id, n, id <= 1 && bytes.Equal(msg[8:], want)
}
