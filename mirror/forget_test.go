package mirror

import (
	"context"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/rdma"
)

// TestRemovedShareLeavesNoFiles: a channel shared between a and b moves
// messages both ways, then the plans stop sharing it (and, in one case,
// the channel is deleted on both hosts). Neither host's state directory
// keeps a file of that share but the importers' high-water marks (a
// spool, an acknowledged position, a stream outbox or take journal; the
// import history once the channel is gone), and an agent restart does not
// bring them back. Shared again, the channel resumes from the marks: a
// subscriber on b that stayed gets what a publishes then, and nothing
// twice.
func TestRemovedShareLeavesNoFiles(t *testing.T) {
	block := channel.Config{Policy: channel.PolicyBlock, Capacity: 64 << 10}
	for _, tc := range []struct {
		name   string
		cfg    channel.Config
		delete bool
	}{
		{"block", block, false},
		{"stream", channel.Config{Type: channel.TypeStream, Capacity: 64 << 10}, false},
		{"block, channel deleted", block, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := newCluster(t, tc.cfg, nil, "a", "b")
			a, b := c.hosts[0], c.hosts[1]
			var stayed *tally // b's subscriber, kept across the share's removal
			if tc.cfg.Type == channel.TypePubSub && !tc.delete {
				stayed = subscribe(ctx, t, mapRing(t, b), false)
			}
			c.linksUp()
			// Messages each way, each read on the other host.
			for i, h := range c.hosts {
				o := c.hosts[1-i]
				next, closeMember := member(t, mapRing(t, o), tc.cfg.Type)
				if err := publish(ctx, mapRing(t, h), uint32(i+1), 100, 0); err != nil {
					t.Fatal(err)
				}
				for range 100 {
					if _, err := next(stallTimeout); err != nil {
						t.Fatalf("%s: %v", o.name, err)
					}
				}
				closeMember()
			}
			if left := c.shareFiles(tc.delete); len(left) == 0 {
				t.Fatal("the share keeps no files while it is in the plan: the checks below cannot fail")
			}
			c.share() // the plans keep the peers and share nothing
			if tc.delete {
				for _, h := range c.hosts {
					ns, err := h.reg.Namespace(testNS)
					if err != nil {
						t.Fatal(err)
					}
					waitFor(t, stallTimeout, func() error { return ns.RemoveChannel(testCh) })
				}
			}
			waitFor(t, stallTimeout, func() error { return filesLeft(c.shareFiles(tc.delete)) })
			for _, h := range c.hosts {
				c.stopHost(h)
				c.startRegistry(h)
				c.startMirror(h)
			}
			c.share()
			waitFor(t, stallTimeout, func() error {
				for i, h := range c.hosts {
					if st := h.stat(c.hosts[1-i].name); st.State != StateUp {
						return fmt.Errorf("%s: link %s", h.name, st.State)
					}
				}
				return nil
			})
			if err := filesLeft(c.shareFiles(tc.delete)); err != nil {
				t.Fatalf("after a restart: %v", err)
			}
			if stayed == nil {
				return
			}
			c.share(testCh)
			c.flowsUp(1)
			if err := publish(ctx, mapRing(t, a), 3, 100, 0); err != nil {
				t.Fatal(err)
			}
			expect(t, 300, map[string]*tally{"b": stayed})
		})
	}
}

func filesLeft(files []string) error {
	if len(files) > 0 {
		return fmt.Errorf("the state directories still hold %s", strings.Join(files, ", "))
	}
	return nil
}

// shareFiles lists the files of the share of testNS/testCh in every
// host's mirror state directory but the high-water marks; with history,
// its import history too.
func (c *cluster) shareFiles(history bool) []string {
	var out []string
	for _, h := range c.hosts {
		dir := filepath.Join(h.dir, ".mirror")
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(dir, p)
			parts := strings.Split(rel, string(filepath.Separator))
			name := parts[len(parts)-1]
			switch {
			case len(parts) == 4 && parts[0] != "hwm" && parts[2] == testNS && strings.HasPrefix(name, testCh+"."):
				peer, _ := hex.DecodeString(parts[1])
				out = append(out, fmt.Sprintf("%s: %s (peer %s)", h.name, rel, peer))
			case history && len(parts) == 3 && parts[0] == "imports" && parts[1] == testNS && strings.HasPrefix(name, testCh+"."):
				out = append(out, fmt.Sprintf("%s: %s", h.name, rel))
			}
			return nil
		})
	}
	return out
}

// noTransport stands in for a transport that a mirror never runs with.
type noTransport struct{ rdma.Transport }

// TestRemovedShareKeepsRecords: the files of a share the plan no longer
// names that hold messages no other host has (records in a spool not yet
// in the ring, stream records in an outbox not yet acknowledged, a take
// journal holding a take) are kept; without them, the share's files go
// but its high-water mark.
func TestRemovedShareKeepsRecords(t *testing.T) {
	k := chanKey{NS: testNS, Ch: testCh}
	for _, tc := range []struct {
		name  string
		files func(t *testing.T, s *state)
		kept  []string // kinds whose files stay
	}{
		{"nothing held", func(t *testing.T, s *state) {
			writeHWM(t, s, k, 100, 100)
			writeState(t, s.path("spool", "b", k), make([]byte, 64))
			writeState(t, s.path("outbox", "b", k), outboxFile(t, 3))
			writeMark(t, s.path("acked", "b", k), markRec{streamEpoch, 4, 0})
			writeState(t, s.path("take", "b", k), make([]byte, 4096))
		}, []string{"hwm"}},
		{"spool holds records", func(t *testing.T, s *state) {
			writeHWM(t, s, k, 100, 164)
			writeState(t, s.path("spool", "b", k), make([]byte, 64))
			writeMark(t, s.path("acked", "b", k), markRec{1, 4, 4})
		}, []string{"hwm", "spool", "acked"}},
		{"outbox holds records", func(t *testing.T, s *state) {
			writeState(t, s.path("outbox", "b", k), outboxFile(t, 3))
			writeMark(t, s.path("acked", "b", k), markRec{streamEpoch, 2, 0}) // record 2 not acknowledged
		}, []string{"acked", "outbox"}},
		{"take journal holds a take", func(t *testing.T, s *state) {
			take := make([]byte, 4096)
			take[0] = 2
			writeState(t, s.path("take", "b", k), take)
		}, []string{"take"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, channel.Config{}, nil, "a")
			h := c.hosts[0]
			c.stopHost(h)
			c.startRegistry(h)
			t.Cleanup(func() { h.reg.Close() })
			m, err := New(Options{Registry: h.reg, Transport: noTransport{}, Self: "a", Log: testenv.QuietLog()})
			if err != nil {
				t.Fatal(err)
			}
			tc.files(t, m.state)
			if err := m.Apply(Plan{Peers: []Peer{{Name: "b", Addr: "127.0.0.1:1"}}}); err != nil {
				t.Fatal(err)
			}
			m.forgetUnshared()
			var got []string
			for _, kind := range []string{"hwm", "spool", "acked", "outbox", "take"} {
				if _, err := os.Stat(m.state.path(kind, "b", k)); err == nil {
					got = append(got, kind)
				}
			}
			if !slices.Equal(got, tc.kept) {
				t.Fatalf("files left: %v, want %v", got, tc.kept)
			}
		})
	}
}

func writeState(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeMark(t *testing.T, path string, r markRec) {
	t.Helper()
	b := make([]byte, markLen)
	encodeMark(b, r)
	writeState(t, path, b)
}

// writeHWM stores an import's mark whose spool holds the log from have
// to tail.
func writeHWM(t *testing.T, s *state, k chanKey, have, tail uint64) {
	t.Helper()
	mk, _, err := openHWM(s.path("hwm", "b", k))
	if err != nil {
		t.Fatal(err)
	}
	defer mk.close()
	if err := mk.storeHWM(hwmRec{markRec: markRec{Epoch: 1, Seq: 4, Units: 4}, Tail: tail, Have: have}); err != nil {
		t.Fatal(err)
	}
}

// outboxFile is an outbox's file with records 0 to n-1.
func outboxFile(t *testing.T, n int) []byte {
	t.Helper()
	dir := t.TempDir()
	ob := &outbox{path: filepath.Join(dir, "outbox")}
	if err := ob.rewrite(); err != nil {
		t.Fatal(err)
	}
	defer ob.close()
	for range n {
		if _, err := ob.add([]byte("record")); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(ob.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
