package channel

import (
	"context"
	"errors"
	"fmt"
	"testing"
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
