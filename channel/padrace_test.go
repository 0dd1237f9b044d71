package channel

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sync/errgroup"
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
			r, pub, sub := newNumbered(t, Config{Capacity: 4096, Policy: PolicyOverwrite})
			p, s := pub.p, sub.s
			start := s.Position()

			// The subscriber reads up to 16 bytes before the end of the
			// ring, where a message that does not fit leaves padding.
			pub.advance(r.capacity - FrameHeaderLen - r.offset(start.Units()))
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
				var err error
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

// newNumbered formats a ring of cfg with one numbered publisher and one
// subscriber that checks its messages, both closed in Cleanup.
func newNumbered(t *testing.T, cfg Config) (*Ring, *numbered, *numberedSub) {
	t.Helper()
	r := newRing(t, cfg)
	s := mustSub(t, r)
	t.Cleanup(func() { s.Close() })
	p := mustPub(t, r)
	t.Cleanup(func() { p.Close() })
	return r, &numbered{t: t, r: r, p: p}, &numberedSub{t: t, s: s, last: -1}
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
	largest := (FrameHeaderLen + uint64(pb.r.cfg.MaxMessage)) &^ (FrameAlign - 1) // whose payload fits
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

var padLapMsgs = flag.Int("padlaps.msgs", 20000, "messages each publisher of TestPaddingLaps publishes")

// TestPaddingLaps: publishers lap subscribers constantly in a small
// overwrite ring full of padding (messages that do not fit before the end
// of the ring) and gap frames, and every subscriber still counts exactly:
// received + Lost is every message published plus every message the gap
// frames stand for, each publisher's messages arrive in order and intact,
// and the subscriber ends at the tail. A subscriber that moved on by the
// fields of a padding frame that publishers had reclaimed while it read
// them counted too few (or 2^32 too many) lost, or found the ring
// corrupt. -padlaps.msgs runs it longer.
func TestPaddingLaps(t *testing.T) {
	const (
		pubs, subs = 3, 3
		max        = 200 // small next to the ring: padding at most wraps
	)
	n := *padLapMsgs
	if testing.Short() {
		n /= 10
	}
	r := newRing(t, Config{Capacity: 4096, Policy: PolicyOverwrite, MaxMessage: max})
	counts := make([]int, pubs)
	for i := range counts {
		counts[i] = n
	}
	type result struct {
		received   int
		lost, gaps uint64
		at         Position
		err        error
	}
	results := make([]result, subs)
	var gaps atomic.Uint64
	published, readers := make(chan struct{}), sync.WaitGroup{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range subs {
		s, err := r.NewSubscriber(SubscriberOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		readers.Add(1)
		go func() {
			defer readers.Done()
			res := &results[i]
			c := newChecker(max, counts)
			var buf []byte
			var err error
			for {
				buf, err = s.Next(ctx, buf)
				if err != nil {
					break
				}
				if res.err = c.check(buf, int64(s.Lost()), true); res.err != nil {
					return
				}
			}
			if !errors.Is(err, context.Canceled) {
				res.err = err
				return
			}
			<-published
			for {
				if buf, err = s.TryNext(buf); err != nil {
					break
				}
				if res.err = c.check(buf, int64(s.Lost()), true); res.err != nil {
					return
				}
			}
			if !errors.Is(err, ErrWouldBlock) {
				res.err = err
			}
			res.received, res.lost, res.gaps, res.at = c.got, s.Lost(), s.Gaps(), s.Position()
		}()
	}
	var writers errgroup.Group
	for pub := range pubs {
		writers.Go(func() error { return publishLapping(r, pub, n, max, &gaps) })
	}
	err := writers.Wait()
	cancel()
	close(published)
	readers.Wait()
	if err != nil {
		t.Fatal(err)
	}
	tail := pos(atomic.LoadUint64(&r.queues[0].Tail))
	want := uint64(pubs*n) + gaps.Load()
	if uint64(tail.seq()) != want {
		t.Fatalf("tail at sequence %d, want %d (%d messages, %d lost upstream)", tail.seq(), want, pubs*n, gaps.Load())
	}
	var lapped uint64
	for i, res := range results {
		if res.err != nil {
			t.Fatalf("subscriber %d: %v", i, res.err)
		}
		if res.at != tail || uint64(res.received)+res.lost != want || res.gaps > gaps.Load() {
			t.Errorf("subscriber %d at %v (tail %v): received %d + lost %d = %d, want %d; gaps %d of %d",
				i, res.at, tail, res.received, res.lost, uint64(res.received)+res.lost, want, res.gaps, gaps.Load())
		}
		lapped += res.lost - res.gaps
		t.Logf("subscriber %d: received %d, lost %d to overwrite and %d to gaps", i, res.received, res.lost-res.gaps, res.gaps)
	}
	if lapped == 0 {
		t.Fatal("no subscriber was lapped: the test tested nothing")
	}
}

// publishLapping publishes n messages of publisher pub (sizes by
// msgSize, up to max bytes) one by one, in batches, and after gap frames
// of up to 64 lost messages, which it adds to gaps.
func publishLapping(r *Ring, pub, n, max int, gaps *atomic.Uint64) error {
	ctx := context.Background()
	p, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		return err
	}
	defer p.Close()
	buf := make([]byte, max)
	var sizes []int
	var msgs [][]byte
	for seq, step := 0, 0; seq < n; step++ {
		h := mix(uint64(pub)<<40 ^ uint64(step) ^ 0x9ad) // by step: a gap frame may go alone
		switch h % 8 {
		case 0, 1: // a gap frame, and as many messages as fit with it
			lost := uint32(1 + (h>>8)%64)
			sizes = sizes[:0]
			for i := seq; i < min(n, seq+4); i++ {
				sizes = append(sizes, msgSize(pub, i, max))
			}
			b, err := p.ClaimBatchLost(ctx, lost, sizes)
			if err != nil {
				return err
			}
			for i := range b.Len() {
				copy(b.Buf(i), encodeMsg(buf, pub, seq+i, sizes[i]))
			}
			if err := p.CommitBatch(b); err != nil {
				return err
			}
			gaps.Add(uint64(lost))
			seq += b.Len()
		case 2: // a batch
			msgs = msgs[:0]
			for i := seq; i < min(n, seq+5); i++ {
				msgs = append(msgs, encodeMsg(make([]byte, max), pub, i, msgSize(pub, i, max)))
			}
			k, err := p.PublishBatch(ctx, msgs)
			if err != nil {
				return err
			}
			seq += k
		default:
			if err := p.Publish(ctx, encodeMsg(buf, pub, seq, msgSize(pub, seq, max))); err != nil {
				return err
			}
			seq++
		}
	}
	return nil
}

// FuzzPaddingReclaimed: as TestPaddingReclaimedWhileRead, a publisher laps
// the subscriber while it loads a padding frame's fields, claiming a
// frame (a data frame of any size that fits, or a gap frame) right where
// the padding was; around that, any mix of messages and gap frames in a
// small overwrite ring, and reads at any points. The subscriber must
// count exactly: received + Lost is every message published plus those
// the gap frames stand for, in order, ending at the tail. nth picks which
// look at a padding frame the lap happens at; claim, the frame claimed
// there; each op publishes a message of op%201 bytes, a gap frame (op%4
// == 0) or, 0xff, reads what is ready.
func FuzzPaddingReclaimed(f *testing.F) {
	f.Add(uint8(0), uint8(0), []byte{200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 0xff, 199, 198, 0xff, 0xff})
	f.Add(uint8(1), uint8(9), []byte{180, 8, 180, 180, 180, 0xff, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 180, 0xff})
	f.Add(uint8(2), uint8(64), []byte{37, 150, 4, 0xff, 150, 150, 150, 150, 150, 150, 150, 150, 150, 150, 150, 150, 0xff, 12, 0xff})
	f.Fuzz(func(t *testing.T, nth, claim uint8, ops []byte) {
		fuzzWatchdog(t, "FuzzPaddingReclaimed")
		ctx := context.Background()
		r, pub, sub := newNumbered(t, Config{Capacity: 4096, Policy: PolicyOverwrite, MaxMessage: 200})
		p, s := pub.p, sub.s
		start := s.Position()
		var gaps uint64
		var b Batch
		out, looks := false, 0
		batch := func(lost uint32, sizes []int) {
			var err error
			if b, err = p.ClaimBatchLost(ctx, lost, sizes); err != nil {
				t.Fatal(err)
			}
			out = true
			gaps += uint64(lost)
		}
		commit := func() {
			if !out {
				return
			}
			for i := range b.Len() {
				if len(b.Buf(i)) >= 4 {
					binary.LittleEndian.PutUint32(b.Buf(i), uint32(pub.sent+i))
				}
			}
			if err := p.CommitBatch(b); err != nil {
				t.Fatal(err)
			}
			pub.sent += b.Len()
			out = false
		}
		testHookPadding = func() {
			if looks++; looks != int(nth%8)+1 {
				return
			}
			at := s.Position()
			tail := pos(atomic.LoadUint64(&r.queues[0].Tail))
			d := udist(at.Units()+r.capUnits, tail.units())
			if out || d >= 1<<31 {
				return // the subscriber was lapped already, or a claim is open
			}
			pub.advance(uint64(d) << unitShift)
			room := r.capacity - r.offset(at.Units()) - FrameHeaderLen
			if claim&1 != 0 {
				batch(uint32(1+claim>>1), nil)
			} else {
				batch(0, []int{int(min(uint64(claim>>1), room))})
			}
		}
		t.Cleanup(func() { testHookPadding = nil })
		for _, op := range ops {
			if op == 0xff {
				sub.drain()
				continue
			}
			commit()
			if op%4 == 0 {
				batch(uint32(1+op>>2), []int{int(op) % 201})
				commit()
				continue
			}
			pub.publish(int(op) % 201)
		}
		for range 2 { // a claim made while the subscriber drains is committed next round
			commit()
			sub.drain()
		}
		tail := pos(atomic.LoadUint64(&r.queues[0].Tail))
		want := uint64(pub.sent) + gaps
		if s.Position() != tail || uint64(sub.received)+s.Lost() != want || uint64(tail.Seq()-start.Seq()) != want || s.Gaps() > gaps {
			t.Fatalf("subscriber at %v, tail %v: received %d + lost %d (gaps %d) = %d, want %d (%d messages, %d lost upstream)",
				s.Position(), tail, sub.received, s.Lost(), s.Gaps(), uint64(sub.received)+s.Lost(), want, pub.sent, gaps)
		}
	})
}
