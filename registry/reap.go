package registry

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
)

// Reaping (docs/limits.md): a pass visits only the channels that are due,
// on a few workers, outside every registry lock, for at most reapBudget;
// a channel whose visit is slow (a crafted ring) holds one worker and is
// skipped by later passes until it returns, and nobody waits for it.
const (
	reapWorkers = 4
	reapBudget  = 50 * time.Millisecond
)

// mapping is a channel's mapped ring, shared by the channel and whoever
// borrowed it to read the ring outside the channel's lock (the reaper,
// stats): it is unmapped when the last of them lets go, so a channel can
// be removed or reconfigured while a slow reader still uses the old ring.
type mapping struct {
	seg  *shm.Segment
	ring *channel.Ring
	refs atomic.Int64
}

func newMapping(seg *shm.Segment, ring *channel.Ring) *mapping {
	m := &mapping{seg: seg, ring: ring}
	m.refs.Store(1) // the channel's own
	return m
}

// release drops one reference; the last one unmaps.
func (m *mapping) release() error {
	if m.refs.Add(-1) != 0 {
		return nil
	}
	m.ring.Close()
	return m.seg.Close()
}

// borrow returns the channel's mapping with a reference the caller must
// release, or nil if it has none (broken, removed).
func (ch *Channel) borrow() *mapping {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.m == nil {
		return nil
	}
	ch.m.refs.Add(1)
	return ch.m
}

// guard runs f over shared memory that its owner may have shrunk under
// the mapping (truncating the backing file): a fault, or a runtime error
// from values no honest client writes, comes back as an error for the
// channel instead of crashing the agent.
func guard(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			re, ok := p.(runtime.Error)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("%w: fault reading the ring: %v", channel.ErrCorrupt, re)
		}
	}()
	return f()
}

// reapHook, when set by a test, runs at the start of every visit: a
// stand-in for a ring whose reap is slow.
var reapHook func(*Channel)

// due reports whether the reaper should visit the channel at now.
func (ch *Channel) due(now int64) bool { return ch.nextReap.Load() <= now }

// reap visits the channel: checks the ring, evicts dead members, stamps
// the agent's heartbeat, and schedules the next visit: soon while the ring
// has members (their leases may expire), once a lease while it has none.
func (ch *Channel) reap(pid uint32, interval time.Duration) {
	if ch.broken.Load() || !ch.reaping.CompareAndSwap(false, true) {
		return
	}
	defer ch.reaping.Store(false)
	m := ch.borrow()
	if m == nil {
		return
	}
	defer m.release()
	if reapHook != nil {
		reapHook(ch)
	}
	next := interval
	err := guard(func() error {
		if err := m.ring.Check(); err != nil {
			return err
		}
		if n := m.ring.Reap(); n > 0 {
			ch.log("reap").Debugf("reaped %d dead members", n)
		}
		m.ring.SetAgentHeartbeat(pid)
		if lease := m.ring.Config().Lease; len(m.ring.Members()) == 0 && lease > interval {
			next = lease
		}
		return nil
	})
	if err != nil {
		ch.MarkBroken(err)
		return
	}
	ch.nextReap.Store(time.Now().Add(next).UnixNano())
}

// Reap runs one reaping pass over the channels that are due (see reap).
// It returns when they are all visited or after reapBudget, whichever is
// first; a visit still running then finishes on its own.
func (r *Registry) Reap() { r.reapPass(DefaultReapInterval) }

// DefaultReapInterval is how often RunReaper visits a channel that has
// members, unless told otherwise.
const DefaultReapInterval = 100 * time.Millisecond

func (r *Registry) reapPass(interval time.Duration) {
	now := time.Now().UnixNano()
	var due []*Channel
	r.eachChannel(func(ch *Channel) {
		if ch.due(now) && !ch.reaping.Load() {
			due = append(due, ch)
		}
	})
	if len(due) == 0 {
		return
	}
	pid := uint32(os.Getpid())
	deadline := time.Now().Add(reapBudget)
	var next atomic.Int64
	var left atomic.Int32
	done := make(chan struct{})
	workers := min(reapWorkers, len(due))
	left.Store(int32(workers))
	for range workers {
		go func() {
			defer func() {
				if left.Add(-1) == 0 {
					close(done)
				}
			}()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(due)) || time.Now().After(deadline) {
					return
				}
				due[i].reap(pid, interval)
			}
		}()
	}
	t := time.NewTimer(reapBudget)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// eachChannel calls f for every channel, in no order, without sorting
// or copying them all (the reaper runs it every interval).
func (r *Registry) eachChannel(f func(*Channel)) {
	r.mu.Lock()
	nss := make([]*Namespace, 0, len(r.nss))
	for _, ns := range r.nss {
		nss = append(nss, ns)
	}
	r.mu.Unlock()
	for _, ns := range nss {
		ns.mu.Lock()
		for _, ch := range ns.channels {
			f(ch)
		}
		ns.mu.Unlock()
	}
}
