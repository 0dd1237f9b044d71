package channel

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

// TestClaimAfterEviction: a publisher that stalls while it sizes a claim
// (after its last look at its slot) is evicted, its slot goes to a new
// publisher, which publishes; when the first resumes, it must neither
// write the new owner's claim record nor claim (an exclusive one must not
// move Tail back over the new messages): it gets ErrEvicted, and the
// subscriber reads exactly the new owner's messages.
func TestClaimAfterEviction(t *testing.T) {
	for _, exclusive := range []bool{false, true} {
		t.Run(fmt.Sprintf("exclusive %v", exclusive), func(t *testing.T) {
			r := newRing(t, Config{Capacity: 64 << 10, MaxMessage: 1000, Lease: stallLease})
			s := mustSub(t, r)
			a, err := r.NewPublisher(PublisherOptions{Exclusive: exclusive})
			if err != nil {
				t.Fatal(err)
			}
			var rec memberSlot // the new owner's slot after its messages
			var tail uint64
			t.Cleanup(func() { testHookClaiming = nil })
			testHookClaiming = func() {
				testHookClaiming = nil
				stall(t, r, a.m)
				if n := r.Reap(); n != 1 {
					t.Errorf("Reap evicted %d members, want the stalled publisher", n)
				}
				c := mustPub(t, r)
				if c.m.idx != a.m.idx {
					t.Errorf("the new publisher took slot %d, want the stalled one's %d", c.m.idx, a.m.idx)
				}
				for i := 0; i < 3; i++ {
					if err := c.TryPublish(stallMsg(i)); err != nil {
						t.Errorf("publish %d: %v", i, err)
					}
				}
				rec, tail = *c.m.s, atomic.LoadUint64(&r.queues[0].Tail)
			}
			if err := a.TryPublish(stallMsg(99)); !errors.Is(err, ErrEvicted) {
				t.Errorf("publish after eviction: %v, want ErrEvicted", err)
			}
			if got := *r.slot(a.m.idx); got.Pending != rec.Pending || got.Cursor != rec.Cursor || got.PendingLen != rec.PendingLen {
				t.Errorf("new owner's claim record %+v, was %+v", got, rec)
			}
			if got := atomic.LoadUint64(&r.queues[0].Tail); got != tail {
				t.Errorf("tail %#x, want %#x", got, tail)
			}
			for i := 0; i < 3; i++ {
				if got, err := s.TryNext(nil); err != nil || !bytes.Equal(got, stallMsg(i)) {
					t.Fatalf("read %d: %v, got %x...", i, err, head(got))
				}
			}
			if got, err := s.TryNext(nil); !errors.Is(err, ErrWouldBlock) {
				t.Fatalf("read after the new messages: %x..., %v; want ErrWouldBlock", head(got), err)
			}
		})
	}
}

// TestPadLosesToCommit: a reaper that read a claim's commit word before
// its owner (stalled, but back just in time) committed it must leave the
// committed frame alone, its sequence included.
func TestPadLosesToCommit(t *testing.T) {
	r, s, a, c := claimHeld(t)
	stale := atomic.LoadUint64(r.commitWord(0, c.off)) // what the reaper saw
	copy(c.Buf, stallMsg(7))
	if err := a.Commit(c); err != nil {
		t.Fatal(err)
	}
	end := mkpos(c.p.seq()+1, c.p.units()+uint32(align16(FrameHeaderLen+100)>>unitShift))
	if r.padClaim(0, c.p, end, stale) {
		t.Fatal("padded a committed frame")
	}
	if got, err := s.TryNext(nil); err != nil || !bytes.Equal(got, stallMsg(7)) {
		t.Fatalf("read: %v, got %x...", err, head(got))
	}
}

// TestStreamReaderReapedMidTake: a stream reader that stalls past its
// lease between taking a record and consuming it is reaped (the message
// goes with it), writers reuse the space, and another reader goes on. When
// the stalled reader resumes it must not return the bytes it copies (a
// newer record's) nor consume the newer record: the other reader takes
// every newer message exactly once.
func TestStreamReaderReapedMidTake(t *testing.T) {
	r := newRing(t, Config{Type: TypeStream, Capacity: MinCapacity, MaxMessage: 1000, Lease: stallLease})
	w := mustPub(t, r)
	rd1, rd2 := mustReader(t, r), mustReader(t, r)
	if err := w.TryPublish(stallMsg(0)); err != nil {
		t.Fatal(err)
	}
	off0 := r.offset(pos(atomic.LoadUint64(&r.queues[0].Head)).units())
	k := 0 // the newer message at record 0's place, unread
	t.Cleanup(func() { testHookTaken = nil })
	testHookTaken = func() {
		testHookTaken = nil
		stall(t, r, rd1.m)
		for i := 1; i < 1000; i++ {
			at := pos(atomic.LoadUint64(&r.queues[0].Tail))
			if err := w.TryPublish(stallMsg(i)); err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			if r.offset(at.units()) == off0 {
				k = i
				return
			}
			if got, err := rd2.TryNext(nil); err != nil || !bytes.Equal(got, stallMsg(i)) {
				t.Errorf("reader 2, message %d: %v, got %x...", i, err, head(got))
				return
			}
		}
	}
	if got, err := rd1.TryNext(nil); !errors.Is(err, ErrEvicted) {
		t.Fatalf("stalled reader: %x..., %v; want ErrEvicted", head(got), err)
	}
	if k == 0 {
		t.Fatal("no newer record reached the stalled take's place")
	}
	if got, err := rd2.TryNext(nil); err != nil || !bytes.Equal(got, stallMsg(k)) {
		t.Fatalf("reader 2, message %d: %v, got %x...", k, err, head(got))
	}
	if got, err := rd2.TryNext(nil); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("reader 2 after message %d: %x..., %v; want ErrWouldBlock", k, head(got), err)
	}
}
