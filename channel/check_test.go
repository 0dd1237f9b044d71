package channel

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name    string
		typ     Type
		corrupt func(r *Ring)
	}{
		{"healthy pubsub", TypePubSub, nil},
		{"healthy stream", TypeStream, nil},
		{"magic", TypePubSub, func(r *Ring) { r.desc().Magic = 1 }},
		{"capacity", TypePubSub, func(r *Ring) { r.desc().Capacity = 1 << 20 }},
		{"epoch", TypeStream, func(r *Ring) { r.desc().Epoch++ }},
		{"limit a lap behind", TypePubSub, func(r *Ring) { r.queues[0].Limit = uint64(uint32(r.queues[0].Tail) - r.capUnits - 1) }},
		{"head ahead of tail", TypeStream, func(r *Ring) { r.queues[1].Head = r.queues[1].Tail + 16 }},
		{"release behind a lap", TypeStream, func(r *Ring) { r.queues[0].Release -= uint64(r.capUnits) + 1 }},
		{"more messages than units", TypeStream, func(r *Ring) { r.queues[0].Tail += 1 << 40 }},
		{"slot state", TypePubSub, func(r *Ring) { r.slot(3).State = 77 }},
		{"slot role", TypePubSub, func(r *Ring) {
			s := r.slot(5)
			s.Role = 9
			atomic.StoreUint32(&s.State, MemberActive)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Type: tc.typ, Capacity: 4096})
			p, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			next := func() error {
				if tc.typ == TypeStream {
					rd, err := r.NewReader(ReaderOptions{})
					if err != nil {
						return err
					}
					defer rd.Close()
					_, err = rd.Next(context.Background(), nil)
					return err
				}
				return nil
			}
			var sub *Subscriber
			if tc.typ == TypePubSub {
				if sub, err = r.NewSubscriber(SubscriberOptions{}); err != nil {
					t.Fatal(err)
				}
				next = func() error { _, err := sub.Next(context.Background(), nil); return err }
			}
			// Wrap many times so the counters are far from their start.
			for i := 0; i < 100; i++ {
				if err := p.Publish(context.Background(), make([]byte, 100)); err != nil {
					t.Fatal(err)
				}
				if err := next(); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Check(); err != nil {
				t.Fatalf("healthy ring: %v", err)
			}
			if tc.corrupt == nil {
				return
			}
			tc.corrupt(r)
			err = r.Check()
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Check after corrupting %s = %v, want ErrCorrupt", tc.name, err)
			}
			t.Log(err)
		})
	}
}
