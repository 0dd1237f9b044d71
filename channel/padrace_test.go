package channel

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
)

// TestPaddingReclaimedWhileRead: an overwrite subscriber that publishers
// lap between finding a padding frame and loading its Seq and Slot does
// not move on by them. A publisher of the next lap writes a frame's Seq
// and Slot right after its claim and its commit word last, so while it
// fills its claim the old padding's commit word is still there: only the
// Tail tells that the fields are no longer the padding's. Taken as the
// padding's, a data frame's Seq stepped the subscriber ahead of the ring
// (its losses up to there never counted), and a gap frame's made it
// count the gap's messages and the lap's as gap losses.
func TestPaddingReclaimedWhileRead(t *testing.T) {
	ctx := context.Background()
	const gap = 1000
	for _, tc := range []struct {
		name string
		gap  uint32 // the next lap's claim at the padding: a gap frame; 0: a data frame
	}{
		{"data frame claimed over it", 0},
		{"gap frame claimed over it", gap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: 4096, Policy: PolicyOverwrite})
			s, err := r.NewSubscriber(SubscriberOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			p, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			pub := &numbered{t: t, r: r, p: p}
			start := s.Position()

			// The subscriber reads up to 16 bytes before the end of the
			// ring, where a message that does not fit leaves padding.
			pub.advance(r.capacity - FrameHeaderLen - r.offset(start.Units()))
			sub := &numberedSub{t: t, s: s, last: -1}
			sub.drain()
			at := s.Position()
			if r.offset(at.Units()) != r.capacity-FrameHeaderLen {
				t.Fatalf("subscriber at offset %d, want %d", r.offset(at.Units()), r.capacity-FrameHeaderLen)
			}
			pub.publish(32)

			// As the subscriber looks at the padding's fields, publishers
			// lap it up to the padding and claim a frame there, not yet
			// committed.
			var b Batch
			testHookPadding = func() {
				testHookPadding = nil
				tail := pos(atomic.LoadUint64(&r.queues[0].Tail))
				pub.advance(uint64(udist(at.Units()+r.capUnits, tail.units())) << unitShift)
				sizes := []int{0}
				if tc.gap != 0 {
					sizes = nil
				}
				if b, err = p.ClaimBatchLost(ctx, tc.gap, sizes); err != nil {
					t.Fatal(err)
				}
				if b.Position().Units() != at.Units()+r.capUnits {
					t.Fatalf("claimed at %v, want one lap past the padding at %v", b.Position(), at)
				}
			}
			t.Cleanup(func() { testHookPadding = nil })
			sub.drain()
			if testHookPadding != nil {
				t.Fatal("the subscriber never looked at the padding")
			}
			if err := p.CommitBatch(b); err != nil {
				t.Fatal(err)
			}
			pub.sent += b.Len()
			pub.publish(32)
			sub.drain()

			tail := pos(atomic.LoadUint64(&r.queues[0].Tail))
			if s.Position() != tail {
				t.Fatalf("subscriber at %v after draining, tail %v", s.Position(), tail)
			}
			want := uint64(pub.sent) + uint64(tc.gap)
			if got := uint64(sub.received) + s.Lost(); got != want || tail.Seq()-start.Seq() != uint32(want) {
				t.Fatalf("received %d + lost %d = %d, want %d published (%d messages, gap of %d); sequence moved %d",
					sub.received, s.Lost(), got, want, pub.sent, tc.gap, tail.Seq()-start.Seq())
			}
			if s.Gaps() != uint64(tc.gap) {
				t.Fatalf("Gaps() = %d, want %d", s.Gaps(), tc.gap)
			}
			if s.Lost() == 0 {
				t.Fatal("the subscriber lost nothing: it was never lapped, the test tested nothing")
			}
		})
	}
}

// numbered publishes messages that carry their number (from 0) in their
// first 4 bytes, when they are that long.
type numbered struct {
	t    *testing.T
	r    *Ring
	p    *Publisher
	sent int
	buf  [1 << 12]byte
}

// publish publishes the next message, of n bytes.
func (pb *numbered) publish(n int) {
	pb.t.Helper()
	msg := pb.buf[:n]
	if n >= 4 {
		binary.LittleEndian.PutUint32(msg, uint32(pb.sent))
	}
	if err := pb.p.Publish(context.Background(), msg); err != nil {
		pb.t.Fatal(err)
	}
	pb.sent++
}

// advance publishes frames of exactly bytes in all (a multiple of 16),
// none of them reaching over the end of the ring, so that no padding is
// written.
func (pb *numbered) advance(bytes uint64) {
	pb.t.Helper()
	largest := align16(FrameHeaderLen + uint64(pb.r.cfg.MaxMessage))
	for bytes > 0 {
		off := pb.r.offset(pos(atomic.LoadUint64(&pb.r.queues[0].Tail)).units())
		f := min(bytes, pb.r.capacity-off, largest)
		pb.publish(int(f - FrameHeaderLen))
		bytes -= f
	}
}

// numberedSub reads numbered's messages and checks their numbers: rising,
// and by exactly one while nothing is lost (a message too short to carry
// its number takes the one after the message before).
type numberedSub struct {
	t        *testing.T
	s        *Subscriber
	received int
	last     int64 // number of the last message; -1 before the first
	unknown  bool  // messages were lost since the last numbered one
	buf      []byte
}

// next reads one message if one is ready.
func (ns *numberedSub) next() bool {
	ns.t.Helper()
	lost := ns.s.Lost()
	var err error
	ns.buf, err = ns.s.TryNext(ns.buf)
	if errors.Is(err, ErrWouldBlock) {
		return false
	}
	if err != nil {
		ns.t.Fatalf("after %d messages: %v", ns.received, err)
	}
	ns.received++
	ns.unknown = ns.unknown || ns.s.Lost() != lost
	if len(ns.buf) < 4 {
		if !ns.unknown {
			ns.last++
		}
		return true
	}
	n := int64(binary.LittleEndian.Uint32(ns.buf))
	if n <= ns.last || !ns.unknown && n != ns.last+1 {
		ns.t.Fatalf("message %d is number %d after %d (lost %d, then %d)", ns.received, n, ns.last, lost, ns.s.Lost())
	}
	ns.last, ns.unknown = n, false
	return true
}

// drain reads every message ready.
func (ns *numberedSub) drain() {
	ns.t.Helper()
	for ns.next() {
	}
}
