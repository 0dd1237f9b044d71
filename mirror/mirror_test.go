package mirror

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// expect waits until every tally counted want messages without error.
func expect(t *testing.T, want int, tallies map[string]*tally) {
	t.Helper()
	waitFor(t, 60*time.Second, func() error {
		for name, tl := range tallies {
			got, err := tl.count()
			if err != nil {
				t.Fatalf("subscriber on %s: %v", name, err)
			}
			if got != want {
				return fmt.Errorf("subscriber on %s has %d of %d messages", name, got, want)
			}
		}
		return nil
	})
}

// TestPubSubFanOut: messages published on A reach subscribers on A, B
// and C, once each, in order, intact.
func TestPubSubFanOut(t *testing.T) {
	for _, policy := range []channel.Policy{channel.PolicyBlock, channel.PolicyOverwrite} {
		t.Run(policy.String(), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := newCluster(t, channel.Config{Policy: policy, Capacity: 1 << 20}, nil, "a", "b", "c")
			tallies := map[string]*tally{}
			for _, h := range c.hosts {
				tallies[h.name], _ = subscribe(ctx, t, mapRing(t, h), false)
			}
			c.linksUp()
			const n = 5000
			if err := publish(ctx, mapRing(t, c.hosts[0]), 1, n, 0); err != nil {
				t.Fatal(err)
			}
			expect(t, n, tallies)
			st := c.hosts[1].m.Stats()
			if len(st) != 2 || st[0].Peer != "a" || st[0].Messages < n || st[0].Losses != 0 {
				t.Fatalf("b's link stats %+v", st)
			}
		})
	}
}
