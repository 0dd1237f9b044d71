package mirror

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// shareKey names what one share keeps in the state directory: a peer's
// files of one channel, both stream queues.
type shareKey struct{ peer, ns, ch string }

func shareOf(peer string, k chanKey) shareKey { return shareKey{peer, k.NS, k.Ch} }

// forgetKinds are the kinds of state.path files a removed share leaves:
// the importer's spool, the exporter's acknowledged position, the stream
// exporter's outbox and take journal. The importer's high-water mark
// (hwm) stays: a peer the plan shares the channel with again resumes
// from it (docs/kubernetes.md), as after a long link cut, rather than
// taking the origin ring's history again, which its ring has.
var forgetKinds = []string{"spool", "acked", "outbox", "take"}

// useFiles marks the files of peer's share of k in use (an importer or an
// exporter about to open them): forgetUnshared leaves them alone until
// doneFiles. It waits for a sweep in progress, which then opens fresh.
func (m *Mirror) useFiles(peer string, k chanKey) {
	m.fmu.Lock()
	m.users[shareOf(peer, k)]++
	m.fmu.Unlock()
}

// doneFiles ends a useFiles; the last one asks Run to sweep, in case the
// plan no longer shares the channel with the peer.
func (m *Mirror) doneFiles(peer string, k chanKey) {
	m.fmu.Lock()
	sk := shareOf(peer, k)
	m.users[sk]--
	last := m.users[sk] <= 0
	if last {
		delete(m.users, sk)
	}
	m.fmu.Unlock()
	if last {
		m.kick()
	}
}

// kick makes Run reconcile (and sweep) again.
func (m *Mirror) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// forgetUnshared deletes the state files (forgetKinds) of shares the plan
// no longer names (as of the last Apply; nothing before the first), once
// no importer or exporter has them open. A spool that holds records not
// yet in the ring, and a stream outbox (or take journal) that holds
// records not yet delivered, are kept until the plan shares the channel
// with the peer again: they hold messages no other host has, which reach
// the channel's members then (also those of a channel made again). The
// import history of a channel that no share names and the registry no
// longer has goes too: a new ring has a new epoch.
func (m *Mirror) forgetUnshared() {
	m.mu.Lock()
	if !m.applied {
		m.mu.Unlock()
		return
	}
	shared := map[shareKey]bool{}
	channels := map[[2]string]bool{}
	for _, pe := range m.plan.Peers {
		for _, sh := range m.plan.sharesWith(pe.Name) {
			shared[shareKey{pe.ID(), sh[0], sh[1]}] = true
			channels[sh] = true
		}
	}
	m.mu.Unlock()
	m.fmu.Lock()
	defer m.fmu.Unlock()
	for sk := range m.state.shares() {
		if shared[sk] || m.users[sk] > 0 {
			continue
		}
		if m.holdsRecords(sk) || !m.dropOutboxes(sk) {
			continue
		}
		for _, kind := range forgetKinds {
			m.state.removeShare(kind, sk)
		}
	}
	m.forgetImports(channels)
}

// channelGone reports whether the registry no longer has the channel.
func (m *Mirror) channelGone(ns, ch string) bool {
	_, err := m.o.Registry.Channel(ns, ch)
	return errors.Is(err, registry.ErrNotFound)
}

// holdsRecords reports whether sk's files hold messages that no other
// host has: records in the spool, or undelivered ones in the outbox or
// the take journal.
func (m *Mirror) holdsRecords(sk shareKey) bool {
	for q := range 2 {
		k := chanKey{NS: sk.ns, Ch: sk.ch, Q: q}
		if b, err := os.ReadFile(m.state.path("hwm", sk.peer, k)); err == nil && decodeHWM(b).spooled() > 0 {
			return true
		}
		m.omu.Lock()
		ob := m.outboxes[holdKey{sk.peer, k}]
		held := ob != nil && ob.len() > 0
		m.omu.Unlock()
		if held {
			return true
		}
		if ob != nil {
			continue // the outbox in memory is the file's truth
		}
		acked := uint64(0)
		if b, err := os.ReadFile(m.state.path("acked", sk.peer, k)); err == nil {
			if r, ok := decodeMark(b); ok {
				acked = r.Seq
			}
		}
		if b, err := os.ReadFile(m.state.path("outbox", sk.peer, k)); err == nil && len(readOutbox(b, acked)) > 0 {
			return true
		}
		// A journal not empty: a take the previous run died in may have
		// been ours.
		if b, err := os.ReadFile(m.state.path("take", sk.peer, k)); err == nil {
			if j, err := channel.NewTakeJournal(b); err == nil && !j.Empty() {
				return true
			}
		}
	}
	return false
}

// dropOutboxes forgets the empty outboxes of sk kept in memory, closing
// their files and journals; false if one holds records.
func (m *Mirror) dropOutboxes(sk shareKey) bool {
	m.omu.Lock()
	defer m.omu.Unlock()
	for q := range 2 {
		hk := holdKey{sk.peer, chanKey{NS: sk.ns, Ch: sk.ch, Q: q}}
		ob := m.outboxes[hk]
		if ob == nil {
			continue
		}
		if ob.len() > 0 {
			return false
		}
		ob.close()
		delete(m.outboxes, hk)
	}
	return true
}

// forgetImports deletes the import history of channels that no share
// names and the registry no longer has.
func (m *Mirror) forgetImports(channels map[[2]string]bool) {
	m.imu.Lock()
	defer m.imu.Unlock()
	for p, keys := range m.state.importHistories() {
		if !slices.ContainsFunc(keys, func(k chanKey) bool { return channels[[2]string{k.NS, k.Ch}] || !m.channelGone(k.NS, k.Ch) }) {
			for _, k := range keys {
				if im := m.imports[k]; im != nil {
					im.claims.close()
				}
				delete(m.imports, k)
			}
			os.Remove(p)
			removeEmptyDirs(filepath.Dir(p), m.state.dir)
		}
	}
}

// shares lists the shares that have files of forgetKinds.
func (s *state) shares() map[shareKey]bool {
	out := map[shareKey]bool{}
	for _, kind := range forgetKinds {
		peers, _ := os.ReadDir(filepath.Join(s.dir, kind))
		for _, pd := range peers {
			peer, err := hex.DecodeString(pd.Name())
			if err != nil || !pd.IsDir() {
				continue
			}
			nss, _ := os.ReadDir(filepath.Join(s.dir, kind, pd.Name()))
			for _, nd := range nss {
				files, _ := os.ReadDir(filepath.Join(s.dir, kind, pd.Name(), nd.Name()))
				for _, f := range files {
					if ch, ok := shareFile(f.Name()); ok {
						out[shareKey{string(peer), nd.Name(), ch}] = true
					}
				}
			}
		}
	}
	return out
}

// shareFile returns the channel of a file state.path names (and of its
// temporary file).
func shareFile(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".tmp")
	i := strings.LastIndexByte(name, '.')
	if i <= 0 {
		return "", false
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return "", false
	}
	return name[:i], true
}

// removeShare deletes sk's files of kind, and the directories that held
// nothing else.
func (s *state) removeShare(kind string, sk shareKey) {
	for q := range 2 {
		p := s.path(kind, sk.peer, chanKey{NS: sk.ns, Ch: sk.ch, Q: q})
		os.Remove(p)
		os.Remove(p + ".tmp")
		removeEmptyDirs(filepath.Dir(p), s.dir)
	}
}

// removeEmptyDirs removes dir and its parents up to (not including) top
// while they are empty.
func removeEmptyDirs(dir, top string) {
	for dir != top && strings.HasPrefix(dir, top) && os.Remove(dir) == nil {
		dir = filepath.Dir(dir)
	}
}
