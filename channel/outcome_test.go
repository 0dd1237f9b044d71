package channel

import (
	"context"
	"testing"
)

// TestClaimOutcome: what a restarted publisher learns of the claim it
// recorded before it died, in every state the claim can be in.
func TestClaimOutcome(t *testing.T) {
	ctx := context.Background()
	msg := make([]byte, 100)
	for _, tc := range []struct {
		name string
		// after makes the claim of p (a batch of three) into the state
		// under test and returns the slot and position to ask about.
		after func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int)
		want  ClaimOutcome
		close bool // after closed the publisher
	}{
		{"committed", func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int) {
			commit(t, p, b)
			return p.Slot(), b.Position(), 0
		}, ClaimCommitted, false},
		{"open", func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int) {
			return p.Slot(), b.Position(), 0
		}, ClaimOpen, false},
		{"padded by Close", func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int) {
			slot := p.Slot()
			p.Close()
			return slot, b.Position(), 0
		}, ClaimPadded, true},
		{"committed, then lapped", func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int) {
			commit(t, p, b)
			other, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			for i := 0; i < 2*int(r.Config().Capacity)/len(msg); i++ {
				if err := other.Publish(ctx, msg); err != nil {
					t.Fatal(err)
				}
			}
			return p.Slot(), b.Position(), 0
		}, ClaimUnknown, false},
		{"committed by another slot", func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int) {
			commit(t, p, b)
			return p.Slot() + 1, b.Position(), 0
		}, ClaimUnknown, false},
		{"a position the tail has not reached", func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int) {
			commit(t, p, b)
			tail := r.QueueStats(0).Tail
			return p.Slot(), MakePosition(tail.Seq(), tail.Units()+4), 0
		}, ClaimUnknown, false},
		{"no such queue", func(t *testing.T, r *Ring, p *Publisher, b Batch) (uint32, Position, int) {
			commit(t, p, b)
			return p.Slot(), b.Position(), 1
		}, ClaimUnknown, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: 4096})
			// A message first: the claim under test does not start the ring.
			warm, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := warm.Publish(ctx, msg); err != nil {
				t.Fatal(err)
			}
			warm.Close()
			p, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.close {
				defer p.Close()
			}
			b, err := p.ClaimBatch(ctx, []int{len(msg), len(msg), len(msg)})
			if err != nil {
				t.Fatal(err)
			}
			slot, at, q := tc.after(t, r, p, b)
			if got := r.ClaimOutcome(q, at, slot); got != tc.want {
				t.Fatalf("ClaimOutcome = %d, want %d", got, tc.want)
			}
		})
	}
}

func commit(t *testing.T, p *Publisher, b Batch) {
	t.Helper()
	if err := p.CommitBatch(b); err != nil {
		t.Fatal(err)
	}
}
