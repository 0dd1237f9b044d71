package channel

import (
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A poller is one thread asleep in futex_waitv(2) on the words of up to
// pollerWords parks at once, for the goroutines waiting on them. Before,
// every word with a waiting goroutine kept a thread asleep in futex(2):
// an agent serving a blocked file reader on each of a thousand channels
// kept a thousand threads. Now a process keeps at most maxDirect threads
// asleep on a word for themselves (the fastest wake-up, which a client
// with one subscriber keeps) and one poller thread per pollerWords words
// with waiting goroutines.
type poller struct {
	ctl uint32 // a private futex word: bumped to make the thread look at parks again

	mu      sync.Mutex
	parks   []pollEntry
	running bool
}

// pollEntry is a park in a poller's set; tok tells a park's attachment
// from a later one.
type pollEntry struct {
	pk  *park
	tok uint64
}

const (
	// futex_waitv takes at most 128 words; one is the poller's own.
	pollerWords = 127
	// maxDirect bounds the threads of a process asleep on a word for
	// themselves.
	maxDirect = 4
	// timeoutSlack: a poller wakes the goroutines of every park whose
	// safety timeout is due within this long (or a quarter of it) in one
	// pass.
	timeoutSlack = 100 * time.Millisecond
)

var (
	pollers   sync.Mutex // guards pollerSet
	pollerSet []*poller
	direct    atomic.Int32 // goroutines asleep on a word for themselves
)

// attachPoller adds pk (whose mu the caller holds, with pk.pl nil) to a
// poller with room.
func attachPoller(pk *park) {
	pollers.Lock()
	var pl *poller
	for _, p := range pollerSet {
		p.mu.Lock()
		if len(p.parks) < pollerWords {
			pl = p
			break
		}
		p.mu.Unlock()
	}
	if pl == nil {
		pl = &poller{}
		pollerSet = append(pollerSet, pl)
		pl.mu.Lock()
	}
	pollers.Unlock()
	pk.tok++
	pk.pl = pl
	pl.parks = append(pl.parks, pollEntry{pk, pk.tok})
	start := !pl.running
	pl.running = true
	pl.mu.Unlock()
	if start {
		go pl.run()
	} else {
		pl.kick()
	}
}

// detach removes pk's attachment tok.
func (pl *poller) detach(pk *park, tok uint64) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for i, e := range pl.parks {
		if e.pk == pk && e.tok == tok {
			last := len(pl.parks) - 1
			pl.parks[i] = pl.parks[last]
			pl.parks[last] = pollEntry{}
			pl.parks = pl.parks[:last]
			return
		}
	}
}

// kick makes the thread build its set again.
func (pl *poller) kick() {
	atomic.AddUint32(&pl.ctl, 1)
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(&pl.ctl)), futexOpWakePrivate, 1, 0, 0, 0)
}

// run is the poller thread. Each pass waits on every park's word against
// the value its goroutines last saw, then wakes the goroutines of every
// park whose word moved or whose safety timeout passed, and drops parks
// no goroutine waits on any more. It leaves when it has no parks.
func (pl *poller) run() {
	var (
		set  []pollEntry
		ws   []futexWaitv
		drop []pollEntry
	)
	for {
		pl.mu.Lock()
		if len(pl.parks) == 0 {
			pl.running = false
			pl.mu.Unlock()
			return
		}
		set = append(set[:0], pl.parks...)
		ctl := atomic.LoadUint32(&pl.ctl)
		pl.mu.Unlock()

		ws = append(ws[:0], futexWaitv{val: uint64(ctl), uaddr: uint64(uintptr(unsafe.Pointer(&pl.ctl))), flags: futex32 | futexPrivate})
		deadline := nanotime() + int64(maxSleep)
		for _, e := range set {
			e.pk.mu.Lock()
			if e.pk.pl == pl && e.pk.tok == e.tok {
				deadline = min(deadline, e.pk.deadline)
				// Shared: the word is in a ring other processes wake.
				ws = append(ws, futexWaitv{val: uint64(e.pk.v), uaddr: uint64(uintptr(unsafe.Pointer(e.pk.word))), flags: futex32})
			}
			e.pk.mu.Unlock()
		}
		futexWaitMany(ws, deadline)
		now := nanotime()
		drop = drop[:0]
		for _, e := range set {
			if pl.pass(e, now) {
				drop = append(drop, e)
			}
		}
		for _, e := range drop {
			pl.detach(e.pk, e.tok)
		}
	}
}

// pass looks at one park after a wait: its goroutines are woken if its
// word moved or its timeout is due. It reports whether the park leaves
// the set: no goroutine waits on it any more, or its word faults. It reads
// the word before it wakes them, so that a waker that comes after their
// re-check always finds the poller waiting on the value before its bump.
func (pl *poller) pass(e pollEntry, now int64) (drop bool) {
	pk := e.pk
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.pl != pl || pk.tok != e.tok {
		return false // closed, or dropped and attached again: not this entry
	}
	// A word the agent waits on lives in a tenant's ring: a ring shrunk
	// under it faults the load, and the park leaves the set.
	w, ok := loadGuarded(pk.word)
	// A timeout due soon is taken in this pass: the parks' deadlines are
	// spread out, and each would be a wake-up of its own.
	due := now + min(int64(timeoutSlack), int64(pk.d)/4)
	if ok && w == pk.v && due < pk.deadline && pk.n > 0 {
		return false
	}
	close(pk.gen)
	pk.gen = make(chan struct{})
	pk.v, pk.deadline = w, now+int64(pk.d)
	if pk.n > 0 && ok {
		return false
	}
	pk.pl = nil
	if ok {
		atomic.AddUint32(pk.waiters, ^uint32(0))
	}
	return true
}

// loadGuarded loads a word of shared memory; ok is false if it faults.
func loadGuarded(p *uint32) (v uint32, ok bool) {
	ok = faultSafe(func() { v = atomic.LoadUint32(p) })
	return v, ok
}

// faultSafe runs f, which touches ring memory from a goroutine of this
// package's own (a poller, heartbeats, a wake-up on cancel): a ring shrunk
// under the mapping faults f, which is reported instead of crashing the
// process.
func faultSafe(f func()) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if _, isRuntime := p.(runtime.Error); !isRuntime {
				panic(p)
			}
			ok = false
		}
	}()
	f()
	return true
}

// futexWaitv is struct futex_waitv (linux/futex.h).
type futexWaitv struct {
	val      uint64
	uaddr    uint64
	flags    uint32
	reserved uint32
}

const (
	futex32      = 2   // FUTEX_32: a 32-bit word
	futexPrivate = 128 // FUTEX_PRIVATE_FLAG

	futexOpWakePrivate = 1 | futexPrivate // FUTEX_WAKE_PRIVATE: the poller's own word
)

// haveWaitv reports whether futex_waitv(2) works here. It came in Linux
// 5.16, and a container's seccomp profile may refuse it (EPERM): without
// it every waiting goroutine sleeps on its word itself, one thread each,
// as before pollers. Asked with no words, a kernel that has it says EINVAL.
var haveWaitv = sync.OnceValue(func() bool {
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX_WAITV, 0, 0, 0, 0, 0, 0)
	return errno == unix.EINVAL
})

// futexWaitMany sleeps until one of the words in ws differs from its value
// (at once if one already does), one is woken, or the monotonic clock
// reaches deadline.
func futexWaitMany(ws []futexWaitv, deadline int64) {
	ts := unix.NsecToTimespec(deadline)
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX_WAITV, uintptr(unsafe.Pointer(&ws[0])), uintptr(len(ws)), 0, uintptr(unsafe.Pointer(&ts)), unix.CLOCK_MONOTONIC, 0)
}
