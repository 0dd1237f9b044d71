package registry

import (
	"container/heap"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
)

// Reaping (docs/limits.md): a pass takes the channels that are due from a
// deadline heap (idle channels cost nothing between their visits) and
// visits them on a few workers, outside every registry lock, for at most
// reapBudget; a channel goes back on the heap when its visit ends, so one
// whose visit is slow (a crafted ring) holds one worker, is not taken
// again meanwhile, and nobody waits for it.
const (
	reapWorkers = 4
	reapBudget  = 50 * time.Millisecond
	// idleReap is how often a ring without members is visited: only an
	// mmap client that joined since can need reaping there, and that
	// client's own peers evict it meanwhile if it dies.
	idleReap = 10 * time.Second
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
// release, or nil if it has none (broken, removed). The bool is true.
func (ch *Channel) borrow() (*mapping, bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.borrowLocked(), true
}

// tryBorrow is borrow, or nil and false if the channel's lock is held.
func (ch *Channel) tryBorrow() (*mapping, bool) {
	if !ch.mu.TryLock() {
		return nil, false
	}
	defer ch.mu.Unlock()
	return ch.borrowLocked(), true
}

func (ch *Channel) borrowLocked() *mapping {
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

// reap visits the channel: checks the ring, evicts dead members, stamps
// the agent's heartbeat, and schedules the next visit: after interval
// while the ring has members (their leases may expire), after idleReap (or
// a lease if longer) while it has none.
func (ch *Channel) reap(pid uint32, interval time.Duration) {
	if ch.broken.Load() {
		return
	}
	m, _ := ch.borrow()
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
		if len(m.ring.Members()) == 0 {
			next = max(idleReap, m.ring.Config().Lease)
		}
		return nil
	})
	if err != nil {
		ch.MarkBroken(err)
		return
	}
	ch.reg.sched.push(ch, time.Now().Add(next))
}

// Reap runs one reaping pass over the channels that are due (see reap).
// It returns when they are all visited or after reapBudget, whichever is
// first; a visit still running then finishes on its own.
func (r *Registry) Reap() { r.reapPass(DefaultReapInterval) }

// DefaultReapInterval is how often RunReaper visits a channel that has
// members, unless told otherwise.
const DefaultReapInterval = 100 * time.Millisecond

func (r *Registry) reapPass(interval time.Duration) {
	due := r.sched.popDue(time.Now())
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
				if i >= int64(len(due)) {
					return
				}
				if time.Now().After(deadline) {
					r.sched.push(due[i], time.Now()) // the next pass's
					continue
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

// schedule is the reaper's deadline heap: each live channel is in it once,
// keyed by its next visit, except while a visit of it runs.
type schedule struct {
	mu sync.Mutex
	h  visitHeap
}

type visit struct {
	at time.Time
	ch *Channel
}

type visitHeap []visit

func (h visitHeap) Len() int           { return len(h) }
func (h visitHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h visitHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *visitHeap) Push(x any)        { *h = append(*h, x.(visit)) }
func (h *visitHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

func (s *schedule) push(ch *Channel, at time.Time) {
	s.mu.Lock()
	heap.Push(&s.h, visit{at, ch})
	s.mu.Unlock()
}

// popDue takes every channel due at now off the heap; removed channels
// are dropped (a visit finds no mapping and does not push them back).
func (s *schedule) popDue(now time.Time) []*Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*Channel
	for len(s.h) > 0 && !s.h[0].at.After(now) {
		due = append(due, heap.Pop(&s.h).(visit).ch)
	}
	return due
}

// Guard runs f, which touches the channel's ring for a front end (a data
// file's open, read, write or close): a fault, because the ring's file
// was shrunk under the mapping, marks the channel broken and comes back as
// an error wrapping ErrBroken instead of crashing the agent.
func (ch *Channel) Guard(f func() error) error { return ch.NoteError(guard(f)) }
