package channel

import (
	"errors"
	"fmt"
	"testing"
)

// TestStartAt: a subscriber opened at another's Position reads on from
// there; a position the ring no longer holds starts at the oldest message
// and counts the ones in between as lost; PublisherSlot names the writer.
func TestStartAt(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   Policy
		publish  int // messages of 256 B into a 4 KiB ring after the mark
		wantLost bool
	}{
		{"block, retained", PolicyBlock, 5, false},
		{"overwrite, retained", PolicyOverwrite, 5, false},
		{"overwrite, lapped", PolicyOverwrite, 64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: 4096, Policy: tc.policy})
			p, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			msg := func(i int) []byte { return fmt.Appendf(make([]byte, 0, 256), "%0256d", i)[:256] }
			if err := p.TryPublish(msg(0)); err != nil {
				t.Fatal(err)
			}
			s, err := r.NewSubscriber(SubscriberOptions{From: StartOldest})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.TryPeek(); err != nil {
				t.Fatal(err)
			}
			if got := s.PublisherSlot(); got != p.Slot() {
				t.Fatalf("PublisherSlot %d, publisher's slot %d", got, p.Slot())
			}
			s.Done()
			mark := s.Position()
			s.Close()
			for i := 1; i <= tc.publish; i++ {
				if err := p.TryPublish(msg(i)); err != nil {
					t.Fatal(err)
				}
			}
			s2, err := r.NewSubscriber(SubscriberOptions{From: StartAt, At: mark})
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			var got []string
			for {
				b, err := s2.TryNext(nil)
				if errors.Is(err, ErrWouldBlock) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(b))
			}
			if uint64(len(got))+s2.Lost() != uint64(tc.publish) {
				t.Fatalf("read %d and lost %d of %d", len(got), s2.Lost(), tc.publish)
			}
			if (s2.Lost() != 0) != tc.wantLost {
				t.Fatalf("lost %d, want loss: %v", s2.Lost(), tc.wantLost)
			}
			first := tc.publish - len(got) + 1
			for i, m := range got {
				if m != string(msg(first+i)) {
					t.Fatalf("message %d is %.8q..., want %d", i, m, first+i)
				}
			}
		})
	}
}
