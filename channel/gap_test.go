package channel

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// gapStep is one thing a publisher does in TestGapFrames: publish msgs
// messages (with a gap frame for lost messages first when lost != 0), or
// abandon such a claim (Close with it outstanding).
type gapStep struct {
	lost    uint32
	msgs    int
	abandon bool
}

// TestGapFrames: a subscriber counts in Lost (and Gaps) exactly what the
// gap frames it passes stand for, besides what it loses to overwrite, and
// received + Lost is every message published or lost upstream: nothing
// twice, no overcount, whether it keeps up or is lapped over the gaps.
// An abandoned gap claim is passed without a loss and without breaking
// the sequence.
func TestGapFrames(t *testing.T) {
	ctx := context.Background()
	msg := make([]byte, 40)
	for _, tc := range []struct {
		name      string
		policy    Policy
		steps     []gapStep
		readEvery int // the subscriber reads after each step (0: only at the end)
		gaps      uint64
		lapped    bool // the subscriber must have lost some to overwrite
	}{
		{"gap then messages", PolicyBlock, []gapStep{{msgs: 3}, {lost: 5, msgs: 2}, {msgs: 1}}, 1, 5, false},
		{"gap alone", PolicyOverwrite, []gapStep{{msgs: 2}, {lost: 9}, {msgs: 2}}, 1, 9, false},
		{"gaps back to back", PolicyOverwrite, []gapStep{{lost: 1}, {lost: 1 << 30}, {lost: 3, msgs: 4}}, 1, 1<<30 + 4, false},
		{"abandoned gap claim", PolicyBlock, []gapStep{{msgs: 1}, {lost: 7, msgs: 2, abandon: true}, {msgs: 2}}, 1, 0, false},
		{"abandoned lone gap", PolicyOverwrite, []gapStep{{lost: 7, abandon: true}, {msgs: 2}}, 1, 0, false},
		{"lapped over gaps", PolicyOverwrite, []gapStep{{msgs: 10}, {lost: 11, msgs: 1}, {msgs: 200}, {lost: 13, msgs: 3}, {msgs: 200}}, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: 4096, Policy: tc.policy})
			s, err := r.NewSubscriber(SubscriberOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var received, published, abandoned uint64
			var buf []byte
			drain := func() {
				for {
					buf, err = s.TryNext(buf)
					if errors.Is(err, ErrWouldBlock) {
						return
					}
					if err != nil {
						t.Fatalf("after %d messages: %v", received, err)
					}
					received++
				}
			}
			for _, st := range tc.steps {
				p, err := r.NewPublisher(PublisherOptions{})
				if err != nil {
					t.Fatal(err)
				}
				sizes := make([]int, st.msgs)
				for i := range sizes {
					sizes[i] = len(msg)
				}
				for done := 0; done < st.msgs || st.lost != 0; {
					b, err := p.ClaimBatchLost(ctx, st.lost, sizes[done:])
					if err != nil {
						t.Fatal(err)
					}
					if st.abandon {
						abandoned += uint64(st.lost) + uint64(b.Len())
						break
					}
					if err := p.CommitBatch(b); err != nil {
						t.Fatal(err)
					}
					published += uint64(st.lost) + uint64(b.Len())
					st.lost, done = 0, done+b.Len()
				}
				p.Close()
				if tc.readEvery != 0 {
					drain()
				}
			}
			drain()
			if got := received + s.Lost(); got != published {
				t.Errorf("received %d + lost %d = %d, want %d (published and lost upstream)", received, s.Lost(), got, published)
			}
			if tc.lapped && s.Lost() == s.Gaps() {
				t.Errorf("lost %d, all of it in gaps: the subscriber was never lapped", s.Lost())
			}
			if !tc.lapped && s.Gaps() != tc.gaps {
				t.Errorf("Gaps() = %d, want %d", s.Gaps(), tc.gaps)
			}
			if got := atomic.LoadUint64(&r.slot(s.m.idx).Lost); got != s.Lost() {
				t.Errorf("slot Lost = %d, Lost() = %d", got, s.Lost())
			}
			if seq := uint64(r.QueueStats(0).Tail.Seq()); seq != published+abandoned {
				t.Errorf("tail sequence %d, want %d published and %d abandoned", seq, published, abandoned)
			}
		})
	}
}

// TestGapRefused: gap frames only in pubsub rings of version 2 or later,
// below 2^31 messages each.
func TestGapRefused(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		cfg     Config
		version uint32
		lost    uint32
	}{
		{"stream", Config{Type: TypeStream}, Version, 1},
		{"version 1", Config{}, 1, 1},
		{"2^31 messages", Config{}, Version, 1 << 31},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := asVersion(t, newRing(t, tc.cfg), tc.version)
			p, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if _, err := p.ClaimBatchLost(ctx, tc.lost, []int{8}); !errors.Is(err, ErrConfig) {
				t.Fatalf("ClaimBatchLost = %v, want ErrConfig", err)
			}
		})
	}
}

// TestGapClaimOutcome: a batch that starts with a gap frame tells a
// restarted publisher what became of it, as any batch does.
func TestGapClaimOutcome(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		sizes []int
		after func(p *Publisher, b Batch)
		want  ClaimOutcome
	}{
		{"committed", []int{10, 20}, func(p *Publisher, b Batch) { p.CommitBatch(b) }, ClaimCommitted},
		{"committed alone", nil, func(p *Publisher, b Batch) { p.CommitBatch(b) }, ClaimCommitted},
		{"open", []int{10}, func(p *Publisher, b Batch) {}, ClaimOpen},
		{"padded by Close", []int{10}, func(p *Publisher, b Batch) { p.Close() }, ClaimPadded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: 4096, Policy: PolicyOverwrite})
			p, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.Publish(ctx, []byte("first")); err != nil {
				t.Fatal(err)
			}
			b, err := p.ClaimBatchLost(ctx, 4, tc.sizes)
			if err != nil {
				t.Fatal(err)
			}
			slot := p.Slot()
			tc.after(p, b)
			if got := r.ClaimOutcome(0, b.Position(), slot); got != tc.want {
				t.Fatalf("ClaimOutcome = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestGapHostile: what a client may write where a gap frame goes. Only a
// version 2 ring's zero-length padding with Slot SlotGap counts, and
// only a forward step below 2^31: anything else is plain padding (or a
// sequence the next frame's check refuses), never a loss.
func TestGapHostile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version uint32
		length  uint32 // padding length after the header
		slot    uint16
		step    uint32 // Seq minus the frame's own sequence
		lost    uint64
	}{
		{"gap", Version, 0, SlotGap, 1<<31 - 1, 1<<31 - 1},
		{"step of 2^31", Version, 0, SlotGap, 1 << 31, 0},
		{"step back", Version, 0, SlotGap, 1<<32 - 1, 0},
		{"longer padding", Version, 16, SlotGap, 2, 0},
		{"plain padding", Version, 0, SlotPadding, 1, 0},
		{"version 1", 1, 0, SlotGap, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := asVersion(t, newRing(t, Config{Capacity: 4096, Policy: PolicyOverwrite}), tc.version)
			s, err := r.NewSubscriber(SubscriberOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// The client's frame: a claim made by hand, as any client can.
			t0 := pos(atomic.LoadUint64(&r.queues[0].Tail))
			units := (FrameHeaderLen + uint64(tc.length)) >> unitShift
			off := r.offset(t0.units())
			fh := r.frame(0, off)
			fh.Seq, fh.Slot = t0.seq()+tc.step, tc.slot
			atomic.StoreUint64(&r.queues[0].Tail, uint64(mkpos(t0.seq()+tc.step, t0.units()+uint32(units))))
			atomic.StoreUint64(r.commitWord(0, off), commitWord(t0.units(), FlagPadding|tc.length))
			if _, err := s.TryNext(nil); !errors.Is(err, ErrWouldBlock) {
				t.Fatalf("TryNext = %v, want ErrWouldBlock past the frame", err)
			}
			if s.Lost() != tc.lost || s.Gaps() != tc.lost {
				t.Fatalf("Lost() = %d, Gaps() = %d, want %d", s.Lost(), s.Gaps(), tc.lost)
			}
		})
	}
}

// asVersion returns r opened again as a ring of ABI version v (as an
// older agent formatted it).
func asVersion(t *testing.T, r *Ring, v uint32) *Ring {
	t.Helper()
	if v == r.Version() {
		return r
	}
	atomic.StoreUint32(&r.desc().Version, v)
	o, err := Open(r.mem)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// TestGapClaimReaped: a publisher dies holding a claim that starts with a
// gap frame; the reaper's padding steps subscribers over the whole claim
// (the gap's sequences and its frames), counting nothing, and they read
// on without a corrupt sequence.
func TestGapClaimReaped(t *testing.T) {
	ctx := context.Background()
	r := newRing(t, Config{Capacity: 4096, Policy: PolicyOverwrite, Lease: stallLease}) // long enough for the live members on a loaded machine
	s, err := r.NewSubscriber(SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dead, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.ClaimBatchLost(ctx, 1000, []int{10, 20}); err != nil {
		t.Fatal(err)
	}
	r.untrack(dead.m) // no more heartbeats: it died
	p, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Publish(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		r.Reap()
		msg, err := s.TryNext(nil)
		if err != nil {
			return err
		}
		if string(msg) != "after" || s.Lost() != 0 {
			t.Fatalf("read %q with %d lost, want \"after\" and none", msg, s.Lost())
		}
		return nil
	})
}
