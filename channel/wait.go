package channel

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// monotonic returns CLOCK_MONOTONIC in nanoseconds: the clock leases use,
// shared by every process on the host (and by containers without a time
// namespace). It is the runtime's vDSO read: unix.ClockGettime is a real
// system call, which cost a busy subscriber most of its time.
func monotonic() int64 { return nanotime() }

//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Idle says how a member waits for data or space: spin, then yield the
// processor, then sleep on the futex word in the shared header, woken by
// the other side only when someone sleeps.
type Idle struct {
	Spins   int  // busy polls before yielding
	Yields  int  // runtime.Gosched calls before sleeping
	NoSleep bool // never sleep: poll forever (lowest latency, burns a core)
}

// Predefined idle strategies.
var (
	// IdleDefault spins briefly, yields, then sleeps on the futex.
	IdleDefault = Idle{Spins: 200, Yields: 20}
	// IdleBusy polls and never sleeps.
	IdleBusy = Idle{Spins: 1 << 30, NoSleep: true}
	// IdleSleep sleeps at once.
	IdleSleep = Idle{}
)

// maxSleep bounds one futex sleep so that a waiter re-checks its lease,
// reaps dead members and sees a cancelled context.
const maxSleep = 50 * time.Millisecond

// waiter runs one wait loop of an idle strategy.
type waiter struct {
	idle  Idle
	n     int
	ctx   context.Context
	lease *member
}

func (w *waiter) reset() { w.n = 0 }

// spinning reports whether the next pause is a busy poll.
func (w *waiter) spinning() bool { return w.n < w.idle.Spins }

// pause waits a little. ready is re-checked after announcing a sleep, so a
// wake-up between the check and the sleep is never lost.
func (w *waiter) pause(word, waiters *uint32, ready func() bool) error {
	w.n++
	switch {
	case w.n <= w.idle.Spins:
		if w.idle.NoSleep && w.n&0xffff == 0 {
			return w.check()
		}
		return nil
	case w.n <= w.idle.Spins+w.idle.Yields || w.idle.NoSleep:
		runtime.Gosched()
		return w.check()
	}
	if err := w.check(); err != nil {
		return err
	}
	atomic.AddUint32(waiters, 1)
	v := atomic.LoadUint32(word)
	if ready == nil || !ready() {
		futexWait(word, v, maxSleep)
	}
	atomic.AddUint32(waiters, ^uint32(0))
	return nil
}

func (w *waiter) check() error {
	if w.ctx != nil {
		if err := w.ctx.Err(); err != nil {
			return err
		}
	}
	if w.lease != nil {
		return w.lease.alive()
	}
	return nil
}

// wake bumps word and wakes all sleepers if anyone announced a sleep.
func wake(word, waiters *uint32) {
	if atomic.LoadUint32(waiters) == 0 {
		return
	}
	atomic.AddUint32(word, 1)
	futexWake(word)
}

func futexWait(word *uint32, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	// FUTEX_WAIT without PRIVATE: the word lives in shared memory.
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexOpWait, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

func futexWake(word *uint32) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexOpWake, uintptr(1<<31-1), 0, 0, 0)
}

// Futex operations (linux/futex.h), without FUTEX_PRIVATE_FLAG.
const (
	futexOpWait = 0
	futexOpWake = 1
)
