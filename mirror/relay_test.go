package mirror

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestStreamNotRelayed: a stream written on a, read on b and c. Each
// host's exporters leave what its importers wrote to its own readers: a
// record of a's never travels a -> b -> c, where it could arrive after a
// later record of the same publisher sent a -> c (a reader that stops at
// the publisher's last record would never see it). Every record is taken
// once, each publisher's in order within each reader, and the link
// between b and c carries nothing.
func TestStreamNotRelayed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Type: channel.TypeStream, Capacity: 64 << 10}, nil, "a", "b", "c")
	c.linksUp()
	var wg sync.WaitGroup
	defer wg.Wait() // before the rings are unmapped
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	l := &ledger{}
	// b's reader is slow: records wait in b's ring, where b's exporter to
	// c could take them.
	takeAll(rctx, t, mapRing(t, c.hosts[1]), l, &wg, true)
	takeAll(rctx, t, mapRing(t, c.hosts[2]), l, &wg, false)
	const n = 5000
	pubs := []uint32{1, 2}
	errs := make(chan error, len(pubs))
	ra := mapRing(t, c.hosts[0])
	pctx, cancelPub := context.WithTimeout(ctx, 60*time.Second)
	defer cancelPub()
	for _, p := range pubs {
		go func() { errs <- publish(pctx, ra, p, n, 0) }()
	}
	for range pubs {
		if err := <-errs; err != nil {
			k, lerr := l.missing(pubs, []int{n, n})
			t.Fatalf("%v (readers: %d records not taken, %v; b-c link: %+v)", err, k, lerr, c.hosts[1].stat("c"))
		}
	}
	waitFor(t, 60*time.Second, func() error {
		k, err := l.missing(pubs, []int{n, n})
		if err != nil {
			t.Fatal(err)
		}
		if k != 0 {
			return fmt.Errorf("%d of %d records not taken", k, 2*n)
		}
		return nil
	})
	for _, pair := range [][2]int{{1, 2}, {2, 1}} {
		h, o := c.hosts[pair[0]], c.hosts[pair[1]]
		if st := h.stat(o.name); st.Messages != 0 {
			t.Errorf("%s's link to %s carried %d records: a's records were relayed", h.name, o.name, st.Messages)
		}
	}
}
