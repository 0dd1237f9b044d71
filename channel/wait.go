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
	Spins int // busy polls before yielding
	// SpinFor keeps busy-polling after the Spins polls, for this long. A sleeper costs its waker a futex system call
	// and itself a wake-up (about 25 µs across cores here, more when the
	// vCPU was idle): a reader that sleeps between two batches of a fast
	// publisher costs it that per batch. Spinning about as long as a
	// wake-up costs bounds the waste at twice the optimum.
	SpinFor time.Duration
	Yields  int  // runtime.Gosched calls before sleeping
	NoSleep bool // never sleep: poll forever (lowest latency, burns a core)
}

// Predefined idle strategies.
var (
	// IdleDefault spins for about a wake-up's cost (20 µs), yields, then
	// sleeps on the futex.
	IdleDefault = Idle{Spins: 200, SpinFor: 20 * time.Microsecond, Yields: 20}
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
	idle     Idle
	n        int   // pauses so far
	yields   int   // of them, yields
	until    int64 // SpinFor: spin until this clock reading; 0: not started
	spinDone bool
	ctx      context.Context
	lease    *member
}

// newWaiter returns a waiter for idle, ready to wait.
func newWaiter(idle Idle, lease *member) waiter {
	w := waiter{idle: idle, lease: lease}
	w.reset()
	return w
}

func (w *waiter) reset() {
	w.n, w.yields, w.until = 0, 0, 0
	w.spinDone = w.idle.Spins <= 0 && w.idle.SpinFor <= 0
}

// spinning reports whether the next pause is a busy poll.
func (w *waiter) spinning() bool { return !w.spinDone }

// spun counts one busy poll and decides whether spinning is over: after
// Spins polls and, with SpinFor, once that long has passed (the clock is
// read every 64th poll).
func (w *waiter) spun() {
	if w.n <= w.idle.Spins {
		return
	}
	if w.idle.SpinFor <= 0 {
		w.spinDone = true
		return
	}
	switch {
	case w.until == 0:
		w.until = nanotime() + int64(w.idle.SpinFor)
	case w.n&63 == 0 && nanotime() >= w.until:
		w.spinDone = true
	}
}

// pause waits a little. ready is re-checked after announcing a sleep, so a
// wake-up between the check and the sleep is never lost.
func (w *waiter) pause(word, waiters *uint32, ready func() bool) error {
	w.n++
	if !w.spinDone {
		w.spun()
	}
	switch {
	case !w.spinDone:
		if w.idle.NoSleep && w.n&0xffff == 0 {
			return w.check()
		}
		return nil
	case w.yields < w.idle.Yields || w.idle.NoSleep:
		w.yields++
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
