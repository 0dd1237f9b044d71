package channel

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// SkipIf passes over the messages of the publisher it is told to skip,
// and only those, with the position after each (where the next starts);
// the others are read whole and in order, and nothing is left over.
func TestSkipIf(t *testing.T) {
	for _, policy := range []Policy{PolicyBlock, PolicyOverwrite} {
		t.Run(policy.String(), func(t *testing.T) {
			r := newRing(t, Config{Capacity: 64 << 10, Policy: policy})
			s, err := r.NewSubscriber(SubscriberOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			local, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			imported, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var want []string
			for i := range 20 {
				p, msg := local, fmt.Sprintf("local %d", i)
				if i%3 == 0 {
					p, msg = imported, fmt.Sprintf("imported %d %s", i, make([]byte, 1000))
				} else {
					want = append(want, msg)
				}
				if err := p.Publish(ctx, []byte(msg)); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			skipped := 0
			for {
				var at Position
				ok, err := s.SkipIf(func(slot uint32, after Position) bool {
					at = after
					return slot == imported.Slot()
				})
				if errors.Is(err, ErrWouldBlock) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					skipped++
					if s.Position() != at {
						t.Fatalf("after a skip at %v, position %v", at, s.Position())
					}
					continue
				}
				msg, _, err := s.AppendNext(nil)
				if err != nil {
					t.Fatal(err)
				}
				if s.Position() != at {
					t.Fatalf("message ends at %v, SkipIf said %v", s.Position(), at)
				}
				got = append(got, string(msg))
			}
			if skipped != 7 || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("skipped %d (want 7), read %q, want %q", skipped, got, want)
			}
		})
	}
}

// SkipTo moves a block slot to where another reader is, in one step: the
// slot then reads on from there, the space behind it is the publishers'
// again (a publisher waiting for it wakes), and a position behind the
// cursor or past the tail is refused.
func TestSkipTo(t *testing.T) {
	r := newRing(t, Config{Capacity: 4 << 10, MaxMessage: 256, Policy: PolicyBlock})
	hold, err := r.NewSubscriber(SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	rd, err := r.NewSubscriber(SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := hold.Position()
	sent := 0
	for ; ; sent++ {
		if err := p.TryPublish(fmt.Appendf(nil, "m%03d", sent)); errors.Is(err, ErrWouldBlock) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	const read = 10
	for range read {
		if _, err := rd.TryNext(nil); err != nil {
			t.Fatal(err)
		}
	}
	published := make(chan error, 1)
	go func() { published <- p.Publish(context.Background(), []byte("after")) }()

	tail := Position(r.QueueStats(0).Tail)
	for _, bad := range []Position{tail + 1<<32 + 16, start - 1<<32 - 16} {
		if err := hold.SkipTo(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("SkipTo(%v) with the cursor at %v and the tail at %v: %v, want ErrConfig", bad, hold.Position(), tail, err)
		}
	}
	if err := hold.SkipTo(hold.Position()); err != nil {
		t.Errorf("SkipTo where it is: %v", err)
	}
	if err := hold.SkipTo(rd.Position()); err != nil {
		t.Fatal(err)
	}
	if hold.Position() != rd.Position() {
		t.Fatalf("slot at %v after SkipTo(%v)", hold.Position(), rd.Position())
	}
	select {
	case err := <-published:
		if err != nil {
			t.Fatalf("the publisher waiting for the space SkipTo freed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher waiting for the space SkipTo freed was not woken")
	}
	msg, err := hold.TryNext(nil)
	if err != nil || string(msg) != fmt.Sprintf("m%03d", read) {
		t.Fatalf("the slot reads on with %q, %v; want m%03d", msg, err, read)
	}
	if sent <= read {
		t.Fatalf("only %d messages filled the ring", sent)
	}
}
