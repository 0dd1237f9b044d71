package remote

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/rdma"
)

// A block channel published on a and subscribed on a and b loses nothing
// and duplicates nothing through each fault, once it is over: every
// subscriber gets the whole run, in order, intact.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T, c *cluster, ch string)
	}{
		{"link down and up", func(t *testing.T, c *cluster, ch string) {
			c.node("b").h.LinkDown(t)
			c.linkNotUp("a", "b") // the silent link noticed (--mirror-timeout)
			c.node("b").h.LinkUp(t)
		}},
		{"30 percent of packets dropped", func(t *testing.T, c *cluster, ch string) {
			c.node("b").h.DropShare(t, 30)
			c.progress("b", ch, 500) // the link carries on through the loss
			c.node("b").h.DropShare(t, 0)
		}},
		{"TCP connections reset", func(t *testing.T, c *cluster, ch string) {
			var before uint64
			// The link may be between connections (a back-off): reset
			// once it has one.
			wait.Eventually(t, 60*time.Second, func() error {
				c.linksUp()
				before = c.node("a").links()["b"].reconnects
				if n := c.node("a").h.ResetTCP(t, mirrorPort); n < 1 {
					return fmt.Errorf("reset %d connections, want the link's", n)
				}
				return nil
			})
			c.reconnected("a", "b", before)
		}},
		{"remote agent killed and restarted", func(t *testing.T, c *cluster, ch string) {
			c.node("b").restart()
		}},
		{"origin agent killed and restarted", func(t *testing.T, c *cluster, ch string) {
			c.node("a").restart()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ch := running(t, []string{"a", "b"}, "demo", "faults", "--capacity", "256K")
			c.flowing("a", ch)

			const n, size, rate = 12000, 64, 3000
			count, sz := fmt.Sprint(n), fmt.Sprint(size)
			subA := c.node("a").member(ch, "-mode", "mmap-sub", "-count", count, "-size", sz)
			subB := c.node("b").member(ch, "-mode", "mmap-sub", "-count", count, "-size", sz)
			pub := c.node("a").member(ch, "-mode", "mmap-pub", "-count", count, "-size", sz, "-rate", fmt.Sprint(rate))
			c.progress("b", ch, n/5) // the fault strikes mid-run
			tc.fault(t, c, ch)
			checkRun(t, "publisher on a", result(t, "publisher on a", pub), 0, n, size)
			checkRun(t, "subscriber on a", result(t, "subscriber on a", subA), 0, n, size)
			checkRun(t, "subscriber on b", result(t, "subscriber on b", subB), 0, n, size)
		})
	}
}

// A remote agent killed while its block ring is full (a subscriber there
// reads nothing) has part of a batch in its ring and waits for room for
// the rest; after a new agent takes over (and the holder is gone) b's
// other subscriber gets the whole run once, in order, intact.
func TestRemoteKilledRingFull(t *testing.T) {
	c, ch := running(t, []string{"a", "b"}, "demo", "full", "--capacity", "64K")
	c.flowing("a", ch)

	const n, size = 20000, 64
	count, sz := fmt.Sprint(n), fmt.Sprint(size)
	subB := c.node("b").member(ch, "-mode", "mmap-sub", "-count", count, "-size", sz)
	holder := c.node("b").member(ch, "-mode", "mmap-sub", "-count", "1", "-hang-after", "0")
	// No rate: a's batches carry hundreds of messages.
	pub := c.node("a").member(ch, "-mode", "mmap-pub", "-count", count, "-size", sz)
	// b's ring is full (64 KiB of 80-byte frames behind the holder), so is
	// b's spool, and b acknowledges nothing more: a's ring fills behind
	// b's slot, and b's importer waits for room.
	wait.Eventually(t, 60*time.Second, func() error {
		if lag := c.node("b").stat(ch, "lag_max"); lag < 800 {
			return fmt.Errorf("b's holder is %d messages behind, waiting for a full ring", lag)
		}
		if lag := c.node("a").stat(ch, "lag_max"); lag < 800 {
			return fmt.Errorf("b's slot in a's ring is %d messages behind, waiting for a full ring", lag)
		}
		return nil
	})
	c.node("b").restart()
	holder.Kill()
	checkRun(t, "publisher on a", result(t, "publisher on a", pub), 0, n, size)
	checkRun(t, "subscriber on b", result(t, "subscriber on b", subB), 0, n, size)
}

// On an overwrite channel, what a remote subscriber misses because a's
// ring lapped the link, while the link is down or while it crawls
// through dropped packets, it counts in its own lost count: what it
// received plus what it lost is exactly what was published, its loss
// holds at least the link's, and what it received is in order and
// intact.
func TestOverwriteLossExact(t *testing.T) {
	for _, tc := range []struct {
		name        string
		fault, mend func(t *testing.T, c *cluster)
	}{
		{"link down", func(t *testing.T, c *cluster) {
			c.node("b").h.LinkDown(t)
			c.linkNotUp("a", "b")
		}, func(t *testing.T, c *cluster) { c.node("b").h.LinkUp(t) }},
		{"link up, 30 percent of packets dropped", func(t *testing.T, c *cluster) {
			c.node("b").h.DropShare(t, 30)
		}, func(t *testing.T, c *cluster) { c.node("b").h.DropShare(t, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ch := running(t, []string{"a", "b"}, "demo", "lossy", "--policy", "overwrite", "--capacity", "64K")
			c.flowing("a", ch)

			const n, size = 20000, 64
			sub := c.node("b").member(ch, "-mode", "mmap-sub", "-until-stop", "-list", "-count", fmt.Sprint(n+1), "-size", fmt.Sprint(size))
			before := c.node("b").links()["a"].losses
			tc.fault(t, c)
			result(t, "publisher on a", c.node("a").member(ch, "-mode", "mmap-pub", "-count", fmt.Sprint(n), "-size", fmt.Sprint(size)))
			tc.mend(t, c)
			c.linksUp()
			a := c.node("a")
			wait.Eventually(t, 60*time.Second, func() error {
				if l := a.links()["b"]; l.lag != 0 {
					return fmt.Errorf("a's link to b has a lag of %d", l.lag)
				}
				return nil
			})
			a.run(shimmyBin, "pub", "--mount", a.mount, ch, "stop")
			r := result(t, "subscriber on b", sub)
			link := c.node("b").links()["a"].losses - before
			if r.Corrupt != 0 || uint64(r.Count)+r.Lost != n || link == 0 || r.Lost < link {
				t.Errorf("subscriber on b: %d received + %d lost, want %d in all; its link lost %d, which it must count too (%d corrupt)",
					r.Count, r.Lost, n, link, r.Corrupt)
			}
			for i := 1; i < len(r.Seqs); i++ {
				if r.Seqs[i] <= r.Seqs[i-1] {
					t.Fatalf("subscriber on b: message %d after %d", r.Seqs[i], r.Seqs[i-1])
				}
			}
		})
	}
}

// A peer whose certificate another CA signed is refused, and the refusal
// logged; nothing published on a reaches b.
func TestImposterRefused(t *testing.T) {
	c := newCluster(t, "a", "b")
	b := c.node("b")
	// b's identity is right, its CA is not the cluster's.
	other := filepath.Join(c.base, "other-ca")
	c.shimmy("certs", "ca", "--out", other)
	if err := os.RemoveAll(b.tls); err != nil {
		t.Fatal(err)
	}
	c.shimmy("certs", "node", "--name", "b", "--ca-dir", other, "--out", b.tls)
	c.start()
	ch := c.share("demo", "secret", "--capacity", "64K")
	// a dials b (its name sorts first): b's listener refuses a's
	// certificate, a refuses the certificate b answers with.
	a := c.node("a")
	wait.Eventually(t, 60*time.Second, func() error {
		inB, inA := strings.Count(b.log(), "refused a peer"), strings.Count(a.log(), rdma.ErrAuth.Error())
		if inB < 2 || inA < 2 {
			return fmt.Errorf("refusals logged: by b's listener %d, by a's dials %d; want at least 2 each", inB, inA)
		}
		return nil
	})
	a.run(shimmyBin, "pub", "--mount", a.mount, ch, "for a only")
	for _, n := range []*node{a, b} {
		for peer, l := range n.links() {
			if l.state == "up" {
				t.Errorf("%s's link to %s is up", n.name, peer)
			}
		}
	}
	if got := b.stat(ch, "messages"); got != 0 {
		t.Errorf("b's replica has %d messages from a peer it never authenticated", got)
	}
}

// progress waits until the replica of ch on host name has at least more
// messages than when called.
func (c *cluster) progress(name, ch string, more uint64) {
	c.t.Helper()
	n := c.nodes[name]
	from := n.stat(ch, "messages")
	wait.Eventually(c.t, 60*time.Second, func() error {
		if got := n.stat(ch, "messages"); got < from+more {
			return fmt.Errorf("%s's %s has %d messages, waiting for %d", name, ch, got, from+more)
		}
		return nil
	})
}

// linkNotUp waits until host name reports its link to peer down.
func (c *cluster) linkNotUp(name, peer string) {
	c.t.Helper()
	wait.Eventually(c.t, 60*time.Second, func() error {
		if l := c.nodes[name].links()[peer]; l.state == "up" {
			return fmt.Errorf("%s's link to %s is still up", name, peer)
		}
		return nil
	})
}

// reconnected waits until host name has reconnected to peer since the
// count before, and the link is up.
func (c *cluster) reconnected(name, peer string, before uint64) {
	c.t.Helper()
	wait.Eventually(c.t, 60*time.Second, func() error {
		if l := c.nodes[name].links()[peer]; l.reconnects <= before || l.state != "up" {
			return fmt.Errorf("%s's link to %s: %+v (reconnects before %d)", name, peer, l, before)
		}
		return nil
	})
}
