package channel

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestExclusivePublisher(t *testing.T) {
	r := newRing(t, Config{Capacity: 4096, Lease: 50 * time.Millisecond})
	shared, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewPublisher(PublisherOptions{Exclusive: true}); !errors.Is(err, ErrExclusive) {
		t.Fatalf("exclusive join beside a shared publisher: %v, want ErrExclusive", err)
	}
	shared.Close()
	ex, err := r.NewPublisher(PublisherOptions{Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive join on a free queue: %v", err)
	}
	if _, err := r.NewPublisher(PublisherOptions{}); !errors.Is(err, ErrExclusive) {
		t.Fatalf("shared join beside an exclusive publisher: %v, want ErrExclusive", err)
	}
	if _, err := r.NewPublisher(PublisherOptions{Exclusive: true}); !errors.Is(err, ErrExclusive) {
		t.Fatalf("second exclusive join: %v, want ErrExclusive", err)
	}
	sub, err := r.NewSubscriber(SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 1000; i++ { // many laps of a 4 KiB ring
		msg := []byte{byte(i), byte(i >> 8), 1, 2, 3}
		if err := ex.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
		got, err := sub.Next(ctx, nil)
		if err != nil || string(got) != string(msg) {
			t.Fatalf("message %d: %q, %v; want %q", i, got, err, msg)
		}
	}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	// A dead exclusive publisher (its lease runs out: simulate by stopping
	// its heartbeat) gives the queue back when it is reaped.
	ex.m.dead.Store(true) // heartbeats skip it from now on
	eventually(t, 10*time.Second, func() error {
		r.Reap()
		if _, err := r.NewPublisher(PublisherOptions{}); err != nil {
			return err
		}
		return nil
	})

	// A dead exclusive publisher that died holding a claim, with no
	// subscriber to find it: Reap pads the claim and frees the queue, also
	// when the claim starts with padding at the wrap (committed at once:
	// only the data frame after it tells whether the claim was committed)
	// and when it is a batch.
	for _, tc := range []struct {
		name  string
		pre   int // 100-byte messages published before the claim
		batch bool
	}{
		{name: "first"},
		{name: "at-wrap", pre: 25},                    // 25 frames of 128 bytes: a 1 KiB frame no longer fits
		{name: "batch-at-wrap", pre: 28, batch: true}, // a 528-byte first frame no longer fits
	} {
		t.Run(tc.name, func(t *testing.T) {
			r2 := newRing(t, Config{Capacity: 4096, Lease: 50 * time.Millisecond})
			ex2, err := r2.NewPublisher(PublisherOptions{Exclusive: true})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.pre; i++ {
				if err := ex2.Publish(ctx, make([]byte, 100)); err != nil {
					t.Fatal(err)
				}
			}
			max := int(r2.Config().MaxMessage)
			if tc.batch {
				if b, err := ex2.ClaimBatch(ctx, []int{max / 2, max / 4, 1}); err != nil || b.Len() < 2 {
					t.Fatalf("claim batch: %d frames, %v", b.Len(), err)
				}
			} else if _, err := ex2.Claim(ctx, max); err != nil {
				t.Fatal(err)
			}
			if tc.pre > 0 {
				if off := r2.offset(pos(r2.queues[0].Tail).units()); off > r2.capacity/2 {
					t.Fatalf("the claim did not wrap: tail at offset %d", off)
				}
			}
			ex2.m.dead.Store(true)
			eventually(t, 10*time.Second, func() error {
				r2.Reap()
				p, err := r2.NewPublisher(PublisherOptions{Exclusive: true})
				if err != nil {
					return err
				}
				defer p.Close()
				sub, err := r2.NewSubscriber(SubscriberOptions{From: StartOldest})
				if err != nil {
					return err
				}
				defer sub.Close()
				if err := p.Publish(ctx, []byte("after")); err != nil {
					return err
				}
				for i := 0; i <= tc.pre; i++ {
					got, err := sub.Next(ctx, nil)
					if err != nil {
						return fmt.Errorf("after the dead claim: %v", err)
					}
					if string(got) == "after" {
						return nil
					}
				}
				return fmt.Errorf("no message after the dead claim")
			})
		})
	}
}
