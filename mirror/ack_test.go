package mirror

import (
	"testing"
	"time"
)

// A receiver acknowledges pubsub batches once they fill an eighth of the
// inbox or the oldest is 2 ms old; stream batches and batches of no
// records at once; nothing when it handled nothing.
func TestAckDelay(t *testing.T) {
	const inbox = 1 << 20
	for _, tc := range []struct {
		name  string
		sizes []uint64
		now   bool
		age   time.Duration
		due   bool
	}{
		{name: "nothing handled", due: false},
		{name: "one small batch, fresh", sizes: []uint64{4096}, due: false},
		{name: "batches short of an eighth", sizes: []uint64{inbox / 16, inbox/16 - 1}, due: false},
		{name: "an eighth of the inbox", sizes: []uint64{inbox / 16, inbox / 16}, due: true},
		{name: "oldest batch 2 ms old", sizes: []uint64{100}, age: ackAfter, due: true},
		{name: "stream or empty batch", sizes: []uint64{100}, now: true, due: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a ackDelay
			for i, n := range tc.sizes {
				a.add(n, tc.now && i == len(tc.sizes)-1)
			}
			a.first = a.first.Add(-tc.age)
			if got := a.due(inbox); got != tc.due {
				t.Errorf("due = %v, want %v (%+v)", got, tc.due, a)
			}
		})
	}
}
