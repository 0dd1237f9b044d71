package channel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// stallLease is the lease of the stall tests: short, so that a member
// "stopped" by untracking it (its heartbeats end, as under SIGSTOP)
// expires quickly, and long enough that the live members' heartbeats
// (every quarter lease) keep them alive on a loaded 2-vCPU machine: 20 ms
// evicted a live subscriber there once (TestReapLappedClaim).
const stallLease = 100 * time.Millisecond

// stall stops m's heartbeats, as a SIGSTOP of its process would, and waits
// until its lease has run out.
func stall(t *testing.T, r *Ring, m *member) {
	t.Helper()
	r.untrack(m)
	eventually(t, 5*time.Second, func() error {
		if !r.expired(m.s, monotonic()) {
			return errors.New("lease not expired yet")
		}
		return nil
	})
}

// mustSub joins r as a subscriber from the newest message.
func mustSub(t *testing.T, r *Ring) *Subscriber {
	t.Helper()
	s, err := r.NewSubscriber(SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mustPub joins r as a publisher.
func mustPub(t *testing.T, r *Ring) *Publisher {
	t.Helper()
	p, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mustReader joins stream r as a reader.
func mustReader(t *testing.T, r *Ring) *Reader {
	t.Helper()
	rd, err := r.NewReader(ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

// claimHeld formats a ring of the stall tests with a subscriber s and a
// publisher a that holds a claim c of 100 bytes, not committed.
func claimHeld(t *testing.T) (r *Ring, s *Subscriber, a *Publisher, c Claim) {
	t.Helper()
	r = newRing(t, Config{Capacity: 64 << 10, MaxMessage: 1000, Lease: stallLease})
	s = mustSub(t, r)
	a = mustPub(t, r)
	c, err := a.Claim(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return r, s, a, c
}

// stallMsg is message i of the stall tests: 100 bytes of i.
func stallMsg(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 100) }

// lapOver publishes stallMsg(first), stallMsg(first+1), ... with p, each
// read back by s, until a message of the next lap sits at data offset off
// unread; it returns that message's number.
func lapOver(t *testing.T, r *Ring, p *Publisher, s *Subscriber, off uint64, first int) int {
	t.Helper()
	tail := func() pos { return pos(atomic.LoadUint64(&r.queues[0].Tail)) }
	start := tail().units()
	for i := first; i < first+10000; i++ {
		at := tail()
		if err := p.TryPublish(stallMsg(i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if r.offset(at.units()) == off && udist(at.units(), start) >= r.capUnits/2 {
			return i
		}
		if got, err := s.TryNext(nil); err != nil || !bytes.Equal(got, stallMsg(i)) {
			t.Fatalf("read %d: %v, got %x...", i, err, head(got))
		}
	}
	t.Fatalf("no message reached offset %d", off)
	return 0
}

// TestStalledPublisherAfterLap: a publisher that stalls past its lease
// holding a claim is reaped, another publisher laps the ring over the old
// claim, and the stalled one resumes and commits (or closes). Its late
// commit must fail and leave the newer message intact: the subscriber reads
// every message of the live publisher, in order, bytes intact.
func TestStalledPublisherAfterLap(t *testing.T) {
	reap := func(r *Ring, c Claim) { r.Reap() }
	reader := func(r *Ring, c Claim) { r.unblockClaim(0, c.p, monotonic()) }
	for _, tc := range []struct {
		name  string
		reap  func(r *Ring, c Claim) // who pads the dead claim
		lap   bool                   // the live publisher laps the ring over the claim first
		close bool                   // the stalled publisher closes instead of committing
	}{
		{"Reap, lap, commit", reap, true, false},
		{"Reap, lap, close", reap, true, true},
		{"stuck reader, lap, commit", reader, true, false},
		{"stuck reader, lap, close", reader, true, true},
		{"Reap, commit", reap, false, false},
		{"stuck reader, commit", reader, false, false},
		{"stuck reader, close", reader, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, s, a, c := claimHeld(t)
			stall(t, r, a.m)
			tc.reap(r, c)
			if _, err := s.TryNext(nil); !errors.Is(err, ErrWouldBlock) {
				t.Fatalf("read after the dead claim was padded: %v, want ErrWouldBlock", err)
			}
			b := mustPub(t, r)
			i := 0
			if tc.lap {
				i = lapOver(t, r, b, s, c.off, 0)
			} else if err := b.TryPublish(stallMsg(i)); err != nil {
				t.Fatal(err)
			}
			// A resumes and finishes its zero-copy claim over B's frame:
			// Buf writes are what no protocol can stop (docs/ring-format.md
			// section 8), so it writes nothing here; its commit or its
			// abort must not touch the frame.
			if tc.close {
				if err := a.Close(); err != nil {
					t.Fatalf("close: %v", err)
				}
			} else if err := a.Commit(c); !errors.Is(err, ErrEvicted) {
				t.Fatalf("late commit: %v, want ErrEvicted", err)
			}
			// ErrEvicted means not published, so that a retry does not
			// duplicate: the claim is still padding for any later reader.
			if w := atomic.LoadUint64(r.commitWord(0, c.off)); !tc.lap && (uint32(w) != c.p.units() || uint32(w>>32)&FlagPadding == 0) {
				t.Fatalf("commit word at the reaped claim %#x, want padding", w)
			}
			for k := i; k < i+300; k++ {
				if k > i {
					if err := b.TryPublish(stallMsg(k)); err != nil {
						t.Fatalf("publish %d: %v", k, err)
					}
				}
				got, err := s.TryNext(nil)
				if err != nil || !bytes.Equal(got, stallMsg(k)) {
					t.Fatalf("read %d after the late commit: %v, got %x... want %x...", k, err, head(got), head(stallMsg(k)))
				}
			}
		})
	}
}

// TestReapLappedClaim: a dead publisher's claim record that the ring has
// lapped (the claim was padded and overwritten, or its record outlived it)
// must not make Reap pad the current lap's frame at that place.
func TestReapLappedClaim(t *testing.T) {
	for _, restore := range []bool{false, true} {
		t.Run(fmt.Sprintf("stale record %v", restore), func(t *testing.T) {
			r := newRing(t, Config{Capacity: 64 << 10, MaxMessage: 1000, Lease: stallLease})
			a := mustPub(t, r)
			c, err := a.Claim(context.Background(), 100)
			if err != nil {
				t.Fatal(err)
			}
			rec := *a.m.s // the claim record, as the dead publisher left it
			stall(t, r, a.m)
			s := mustSub(t, r)
			b := mustPub(t, r)
			i := lapOver(t, r, b, s, c.off, 0)
			if restore && atomic.LoadUint32(&a.m.s.Gen) == rec.Gen {
				atomic.StoreUint64(&a.m.s.Pending, rec.Pending)
				atomic.StoreUint64(&a.m.s.Cursor, rec.Cursor)
				atomic.StoreUint64(&a.m.s.PendingLen, rec.PendingLen)
			}
			r.Reap()
			got, err := s.TryNext(nil)
			if err != nil || !bytes.Equal(got, stallMsg(i)) {
				t.Fatalf("read after Reap: %v, got %x... want %x...", err, head(got), head(stallMsg(i)))
			}
		})
	}
}

// TestStalledSubscriber: a block subscriber that stalls past its lease
// holding a Peek'd message is evicted and publishers overwrite the frame;
// when it resumes, Valid must say so and Next must report ErrEvicted
// rather than hand out the overwritten bytes.
func TestStalledSubscriber(t *testing.T) {
	r := newRing(t, Config{Capacity: MinCapacity, MaxMessage: 1000, Lease: stallLease})
	s := mustSub(t, r)
	p := mustPub(t, r)
	ctx := context.Background()
	if err := p.Publish(ctx, stallMsg(1)); err != nil {
		t.Fatal(err)
	}
	msg, err := s.Peek(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stall(t, r, s.m)
	for i := 2; i < 60; i++ { // more than a lap: room() evicts the subscriber
		if err := p.TryPublish(stallMsg(i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if bytes.Equal(msg, stallMsg(1)) {
		t.Fatal("the peeked frame was not overwritten: the test proves nothing")
	}
	if s.Valid() {
		t.Error("Valid() = true for a message overwritten while the subscriber was evicted")
	}
	s.Done()
	if _, err := s.Next(ctx, nil); !errors.Is(err, ErrEvicted) {
		t.Errorf("Next after eviction: %v, want ErrEvicted", err)
	}
}
