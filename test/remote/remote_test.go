package remote

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/internal/netnstest"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// Messages published on a reach subscribers on a, b and c once each, in
// order and intact: mmap subscribers on every host, a file subscriber on
// the remote side.
func TestPubSubFanOut(t *testing.T) {
	c, ch := running(t, []string{"a", "b", "c"}, "demo", "fan", "--capacity", "1M")
	c.flowing("a", ch)

	const n, size = 20000, 64
	count, sz := fmt.Sprint(n), fmt.Sprint(size)
	subs := map[string]*netnstest.Proc{}
	for _, name := range c.names {
		subs[name+" mmap"] = c.node(name).member(ch, "-mode", "mmap-sub", "-count", count, "-size", sz)
	}
	subs["c file"] = c.node("c").member(ch, "-mode", "file-sub", "-file", chanfile.Msg, "-count", count, "-size", sz)
	pub := c.node("a").member(ch, "-mode", "mmap-pub", "-count", count, "-size", sz)
	checkRun(t, "publisher on a", result(t, "pub", pub), 0, n, size)
	for who, p := range subs {
		checkRun(t, "subscriber "+who, result(t, who, p), 0, n, size)
	}
	for _, name := range []string{"b", "c"} {
		if l := c.node(name).links()["a"]; l.messages < n || l.losses != 0 {
			t.Errorf("%s's link to a: %+v, want at least %d messages and no losses", name, l, n)
		}
	}
}

// Publishers on a and b at once: every subscriber, on a, b and c, gets
// both runs whole, each publisher's messages in its order.
func TestTwoPublishers(t *testing.T) {
	c, ch := running(t, []string{"a", "b", "c"}, "demo", "two", "--capacity", "1M")
	c.flowing("a", ch)
	c.flowing("b", ch)

	const n, size = 10000, 48
	runs := map[string]int{"a": 0, "b": 1_000_000} // first message number of each publisher
	subs := map[string]*netnstest.Proc{}
	for _, name := range c.names {
		subs[name] = c.node(name).member(ch, "-mode", "mmap-sub", "-count", fmt.Sprint(2*n), "-size", fmt.Sprint(size), "-list")
	}
	var pubs []*netnstest.Proc
	for name, first := range runs {
		pubs = append(pubs, c.node(name).member(ch, "-mode", "mmap-pub", "-count", fmt.Sprint(n), "-size", fmt.Sprint(size), "-start", fmt.Sprint(first)))
	}
	for _, p := range pubs {
		result(t, "publisher", p)
	}
	for name, p := range subs {
		r := result(t, "subscriber on "+name, p)
		if r.Corrupt != 0 || r.Count != 2*n {
			t.Errorf("subscriber on %s: %d messages (want %d), %d corrupt", name, r.Count, 2*n, r.Corrupt)
		}
		for pub, first := range runs {
			if err := checkSeqs(r.Seqs, first, n); err != nil {
				t.Errorf("subscriber on %s, messages of %s: %v", name, pub, err)
			}
		}
	}
}

// checkSeqs checks that seqs holds first..first+n-1 once each, in order
// (other numbers interleaved are ignored).
func checkSeqs(seqs []int, first, n int) error {
	next := first
	for _, s := range seqs {
		if s < first || s >= first+n {
			continue
		}
		if s != next {
			return fmt.Errorf("message %d where %d was due", s, next)
		}
		next++
	}
	if next != first+n {
		return fmt.Errorf("%d of %d messages", next-first, n)
	}
	return nil
}

// A stream written on a and read on b and c: every record reaches exactly
// one reader, none is lost.
func TestStreamReadersOnTwoHosts(t *testing.T) {
	c, ch := running(t, []string{"a", "b", "c"}, "demo", "work", "--type", "stream", "--capacity", "256K")

	const n, size = 20000, 32
	readers := map[string]*netnstest.Proc{}
	for _, name := range []string{"b", "c"} {
		readers[name] = c.node(name).member(ch, "-mode", "mmap-read", "-queue", "0", "-until-stop", "-list", "-count", fmt.Sprint(n+1), "-size", fmt.Sprint(size))
	}
	// Stops after the run. Each host's reader gets its host's share of
	// a's records in a's order (no record crosses two links), so a stop
	// comes after all of them.
	w := c.node("a").member(ch, "-mode", "mmap-pub", "-queue", "0", "-count", fmt.Sprint(n), "-size", fmt.Sprint(size), "-stops", "2")
	result(t, "writer on a", w)
	takenOnce(t, c, "a", ch, n, readers)
}

// takenOnce writes stops on host from until every stream reader has ended
// (a reader ends at its first stop, and which host a stop goes to is up to
// the exporters: both may go to one), then checks that the readers took
// each of the n records exactly once between them, intact.
func takenOnce(t *testing.T, c *cluster, from, ch string, n int, readers map[string]*netnstest.Proc) {
	t.Helper()
	for name, p := range readers {
		for ended := false; !ended; {
			select {
			case <-p.Done():
				ended = true
			case <-time.After(time.Second):
				result(t, "stop writer on "+from+" (for "+name+")", c.node(from).member(ch, "-mode", "mmap-pub", "-queue", "0", "-count", "0", "-stops", "1"))
			}
		}
	}
	seen := make([]int, n)
	for name, p := range readers {
		r := result(t, "reader on "+name, p)
		if r.Corrupt != 0 {
			t.Errorf("reader on %s: %d corrupt records", name, r.Corrupt)
		}
		t.Logf("reader on %s took %d records", name, r.Count)
		for _, s := range r.Seqs {
			if s < 0 || s >= n {
				t.Fatalf("reader on %s: record %d was never written", name, s)
			}
			seen[s]++
		}
	}
	for s, k := range seen {
		if k != 1 {
			t.Errorf("record %d was read %d times", s, k)
		}
	}
}

// The agent of the host a stream is written on is killed (SIGKILL) and
// restarted three times while a reader there and one on b compete for its
// records (a's reader slower than the writer: records wait, and a's
// exporter takes its share): every record is taken exactly once.
func TestStreamOriginKilled(t *testing.T) {
	c, ch := running(t, []string{"a", "b"}, "demo", "killed", "--type", "stream", "--capacity", "64K")
	const n, size = 30000, 32
	readers := map[string]*netnstest.Proc{
		"a": c.node("a").member(ch, "-mode", "mmap-read", "-queue", "0", "-until-stop", "-list", "-count", fmt.Sprint(n+1), "-size", fmt.Sprint(size), "-rate", "2000"),
		"b": c.node("b").member(ch, "-mode", "mmap-read", "-queue", "0", "-until-stop", "-list", "-count", fmt.Sprint(n+1), "-size", fmt.Sprint(size)),
	}
	w := c.node("a").member(ch, "-mode", "mmap-pub", "-queue", "0", "-count", fmt.Sprint(n), "-size", fmt.Sprint(size), "-rate", "4000", "-stops", "2")
	for i := 0; i < 3; i++ {
		before := c.node("b").stat(ch, "messages")
		wait.Eventually(t, 60*time.Second, func() error {
			if got := c.node("b").stat(ch, "messages"); got < before+500 {
				return fmt.Errorf("b has %d records from a, %d since the last restart", got, got-before)
			}
			return nil
		})
		c.node("a").restart()
	}
	result(t, "writer on a", w)
	takenOnce(t, c, "a", ch, n, readers)
}

// The walkthrough of docs/remote.md, with its commands, its plan file
// (the hosts' addresses put in) and its names.
func TestDocWalkthrough(t *testing.T) {
	c := newCluster(t, "node-a", "node-b") // shimmy certs ca, shimmy certs node
	a, b := c.node("node-a"), c.node("node-b")
	for _, pair := range [][2]*node{{a, b}, {b, a}} {
		plan := fmt.Sprintf(`peers:
  - name: %s
    addr: %s
shares:
  - namespace: demo
    channel: chat
    peers: [%s]
`, pair[1].name, pair[1].h.Addr(mirrorPort), pair[1].name)
		if err := os.WriteFile(pair[0].plan, []byte(plan), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.start()
	for _, n := range []*node{a, b} {
		// As the doc says: no settings, since the running plan already
		// shares it and the mirror may attach before a ctl write.
		n.run(shimmyBin, "create", "--mount", n.mount, "demo/chat")
	}
	c.linksUp()
	sub := b.h.Start(t, shimmyBin, "sub", "--mount", b.mount, "demo/chat", "-n", "1")
	// The sub joins at the newest message at some point after it starts:
	// publish until it has printed one.
	wait.Eventually(t, time.Minute, func() error {
		a.run(shimmyBin, "pub", "--mount", a.mount, "demo/chat", "hello from a")
		select {
		case <-sub.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
			return errors.New("shimmy sub on node-b has printed nothing yet")
		}
	})
	if err := sub.Err(); err != nil || sub.Out.String() != "hello from a\n" {
		t.Errorf("shimmy sub on node-b: %v, printed %q, want \"hello from a\\n\"", err, sub.Out.String())
	}
	out := a.run(shimmyBin, "stat", "--links")
	if f := strings.Fields(strings.Split(out, "\n")[1]); len(f) != 8 || f[0] != "node-b" || f[1] != "up" || f[3] == "0" {
		t.Errorf("shimmy stat --links on node-a:\n%s", out)
	}
}
