package mirror

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestUnshareReleasesSlot: a block channel's slot for a peer holds the
// ring while the link is down, but a share the plan removes is gone at
// once: the channel is idle again on both hosts (the Kubernetes node
// reconciler removes a channel only then) long before Hold.
func TestUnshareReleasesSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		plan func(peer Peer) Plan
	}{
		{"share removed", func(peer Peer) Plan { return Plan{Peers: []Peer{peer}} }},
		{"peer removed", func(Peer) Plan { return Plan{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := newCluster(t, channel.Config{Policy: channel.PolicyBlock, Capacity: 64 << 10},
				func(o *Options) { o.Hold = time.Hour }, "a", "b")
			tl := subscribe(ctx, t, mapRing(t, c.hosts[1]), false)
			c.linksUp()
			if err := publish(ctx, mapRing(t, c.hosts[0]), 1, 100, 0); err != nil {
				t.Fatal(err)
			}
			expect(t, 100, map[string]*tally{"b": tl})
			cancel() // the subscriber on b leaves; the mappings go at cleanup
			a, b := c.hosts[0], c.hosts[1]
			if err := a.m.Apply(tc.plan(Peer{Name: "b", Addr: b.addr})); err != nil {
				t.Fatal(err)
			}
			if err := b.m.Apply(tc.plan(Peer{Name: "a", Addr: a.addr})); err != nil {
				t.Fatal(err)
			}
			// The mirror leaves both rings: only the test's subscriber
			// on b (closed at cleanup) is still a member.
			want := map[*host]uint64{a: 0, b: 1}
			waitFor(t, 20*time.Second, func() error {
				for h, n := range want {
					ch, err := h.reg.Channel(testNS, testCh)
					if err != nil {
						return err
					}
					if st := ch.StatsNoWait(); st.Subscribers+st.Publishers != n {
						return fmt.Errorf("%s: %d subscribers and %d publishers attached, want %d members", h.name, st.Subscribers, st.Publishers, n)
					}
				}
				return nil
			})
		})
	}
}
