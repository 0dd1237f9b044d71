// Package heldsleep sleeps in a system call without handing the Go
// processor (P) back to the scheduler, as a C thread sleeps: the wake-up
// of a sleeping subscriber or of a paced publisher costs what it costs in
// C.
//
// Why: a goroutine that sleeps in an ordinary system call (syscall.Syscall)
// lets the runtime's sysmon take its P away once the call has lasted a
// sysmon tick (20 µs or more) and the goroutine has not been through the
// scheduler for 10 ms, which is always true of a loop that only sleeps
// and polls. Leaving the call then means finding another P and waking
// sysmon, and the taken P is handed to a thread started for it: with Go
// 1.26 on two vCPUs, a futex wake-up measured 15-20 µs to the woken
// goroutine against 6 µs for C, and 6.5 µs once the sleep held its P.
//
// The cost, and how it stays bounded: while a goroutine sleeps held, its
// P runs nothing else. So at most GOMAXPROCS/2 goroutines of a process
// sleep held at once (none with GOMAXPROCS 1), the others sleep the
// ordinary way, and one held sleep lasts at most MaxHold, half the
// runtime's own time slice (sysmon signals a goroutine that has kept its
// P for a whole one anyway); the rest of a longer sleep is an ordinary one. The
// runtime still reaches a held sleeper: to stop the world, scan its stack
// or preempt it, it signals the thread, the sleep returns EINTR (a signal
// with a handler interrupts a timed futex or clock_nanosleep), and the
// remainder is slept the ordinary way, where the runtime may take the P.
// With GODEBUG=asyncpreemptoff=1 there is no such signal, and a garbage
// collection may wait up to MaxHold for a held sleeper.
package heldsleep

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxHold bounds one held sleep: half the scheduler's time slice (a
// running goroutine keeps its P for 10 ms before the runtime preempts
// it), so that a sleeper that yields before each sleep once every few
// milliseconds is never preempted in one.
const MaxHold = 5 * time.Millisecond

// YieldEvery: a sleeper yields the processor before a sleep if it has
// not for this long (YieldIfDue). A goroutine that only sleeps and polls
// never passes through the scheduler otherwise, and the runtime preempts
// one that has not for 10 ms with a signal: one that comes during a held
// sleep ends it, and the wake-up after that pays for getting a processor
// back, and the preemption itself after it. With held sleeps of at most
// MaxHold, a sleeper that yields this often is never preempted.
const YieldEvery = 4 * time.Millisecond

// YieldIfDue yields the processor if YieldEvery has passed since *last
// (a clock reading of runtime.nanotime, kept by the caller per goroutine),
// records when it did, and reports whether it did. Call it just before a
// sleep, where a yield costs nothing on the way to the next message.
func YieldIfDue(last *int64) bool {
	now := nanotime()
	if now-*last < int64(YieldEvery) {
		return false
	}
	Yield()
	*last = nanotime()
	return true
}

// Scheduling policies that take a time slice (linux/sched.h).
const (
	schedOther = 0
	schedBatch = 3
)

// schedAttr is struct sched_attr (linux/sched/types.h), version 1.
type schedAttr struct {
	size     uint32
	policy   uint32
	flags    uint64
	nice     int32
	priority uint32
	runtime  uint64 // SCHED_OTHER and SCHED_BATCH: the requested time slice, ns
	deadline uint64
	period   uint64
	utilMin  uint32
	utilMax  uint32
}

// threadAttr reads the calling thread's scheduling attributes.
func threadAttr() (schedAttr, error) {
	var a schedAttr
	if _, _, e := unix.RawSyscall6(unix.SYS_SCHED_GETATTR, 0, uintptr(unsafe.Pointer(&a)), unsafe.Sizeof(a), 0, 0, 0); e != 0 {
		return a, fmt.Errorf("sched_getattr: %w", e)
	}
	return a, nil
}

// AskSlice asks the kernel for a time slice of d for the calling thread:
// sched_setattr's sched_runtime, which Linux's EEVDF scheduler (6.12 and
// later) honours for SCHED_OTHER and SCHED_BATCH threads, clamped to
// 0.1-100 ms (the default here is 1.4 ms); older kernels ignore it. A
// thread with a shorter slice gets earlier deadlines, so when it is woken
// on the CPU of the thread that woke it, it runs at once instead of after
// the waker's next sleep: a sleeping subscriber's 16 B p50 here, 10.6-18
// µs with the default slice and 6.3-6.5 µs with 100 µs (POSIX mq's
// receiver, woken straight from mq_send, 5.9-6.1 µs). Its share of the
// CPU does not change; when it competes for one, it runs in shorter turns.
// The thread's policy, nice value and other attributes are kept, a
// real-time or SCHED_IDLE thread is left alone, and the threads it
// creates inherit the slice. Errors (a seccomp filter, an old kernel) are
// reported and change nothing.
func AskSlice(d time.Duration) error {
	a, err := threadAttr()
	if err != nil {
		return err
	}
	if a.policy != schedOther && a.policy != schedBatch || a.runtime == uint64(d) {
		return nil
	}
	a.size, a.runtime = uint32(unsafe.Sizeof(a)), uint64(d)
	if _, _, e := unix.RawSyscall(unix.SYS_SCHED_SETATTR, 0, uintptr(unsafe.Pointer(&a)), 0); e != 0 {
		return fmt.Errorf("sched_setattr: %w", e)
	}
	return nil
}

// Yield passes through the scheduler, which is what keeps the runtime from
// preempting a goroutine that only polls and sleeps, and lets the
// goroutines queued on its processor run. It avoids runtime.Gosched's side
// effect: Gosched queues the goroutine globally and wakes an idle
// processor's thread to look for work, which then runs on another vCPU. A
// paced publisher's Gosched every YieldEvery took 15-25 µs from the busy
// subscriber on the other vCPU each time (the busy 16 B p99 of 17-28 µs;
// 0.3-0.7 µs with Yield). Yield requeues the goroutine on its own
// processor (the runtime's goyield), waking nothing. With one processor,
// goroutines queued globally (by the netpoller, or leaving a system call)
// would then wait 61 such yields for a turn; there Gosched wakes no
// thread anyway (no processor is idle) and is used instead.
func Yield() {
	if runtime.GOMAXPROCS(0) == 1 {
		runtime.Gosched()
		return
	}
	goyield()
}

// Futex operations (linux/futex.h), without FUTEX_PRIVATE_FLAG: the words
// live in shared memory.
const (
	futexOpWait       = 0
	futexOpWake       = 1
	futexOpWaitBitset = 9
	futexOpWakeBitset = 10
)

var (
	hold  = MaxHold     // MaxHold; tests lengthen it
	held  atomic.Int32  // goroutines sleeping held now
	begun atomic.Uint64 // held sleeps begun (Count)
	limit = sync.OnceValue(func() int32 { return int32(runtime.GOMAXPROCS(0) / 2) })
)

// acquire reserves a held sleep, if the process has one to spare.
func acquire() bool {
	if held.Add(1) <= limit() {
		begun.Add(1)
		return true
	}
	held.Add(-1)
	return false
}

func release() { held.Add(-1) }

// FutexWait sleeps while *word == val, for at most d (a shared, not a
// process-private, futex).
func FutexWait(word *uint32, val uint32, d time.Duration) { FutexWaitBitset(word, val, d, 0) }

// FutexWaitBitset is FutexWait woken only by the wake-ups whose bitset
// shares a bit with bits (FUTEX_WAIT_BITSET); 0 is every wake-up
// (FUTEX_WAIT).
func FutexWaitBitset(word *uint32, val uint32, d time.Duration, bits uint32) {
	op := uintptr(futexOpWait)
	if bits != 0 {
		op = futexOpWaitBitset
	}
	if d > 0 && acquire() {
		start := nanotime()
		ts := timeout(op, start, min(d, hold))
		_, _, e := unix.RawSyscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), op, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, uintptr(bits))
		release()
		if e != unix.ETIMEDOUT && e != unix.EINTR {
			return // woken, or the word had moved
		}
		// Timed out within a longer sleep, or signalled by the runtime:
		// sleep on where the runtime may take the P.
		if d -= time.Duration(nanotime() - start); d <= 0 {
			return
		}
	}
	FutexWaitPlainBitset(word, val, d, bits)
}

// FutexWaitPlain is FutexWait as an ordinary system call, which the
// runtime may take the P from while it lasts: for a process that sleeps
// on behalf of others (the agent serving its tenants' reads), whose
// processors its clients' waits must not take.
func FutexWaitPlain(word *uint32, val uint32, d time.Duration) { FutexWaitPlainBitset(word, val, d, 0) }

// FutexWaitPlainBitset is FutexWaitPlain woken as FutexWaitBitset is.
func FutexWaitPlainBitset(word *uint32, val uint32, d time.Duration, bits uint32) {
	op := uintptr(futexOpWait)
	if bits != 0 {
		op = futexOpWaitBitset
	}
	ts := timeout(op, nanotime(), max(d, 0))
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), op, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, uintptr(bits))
}

// timeout is the timeout of a futex wait of d from now (a clock
// reading): FUTEX_WAIT takes a relative one, FUTEX_WAIT_BITSET an
// absolute one on CLOCK_MONOTONIC, the clock of nanotime.
func timeout(op uintptr, now int64, d time.Duration) unix.Timespec {
	if op == futexOpWaitBitset {
		return unix.NsecToTimespec(now + int64(d))
	}
	return unix.NsecToTimespec(int64(d))
}

// Count returns how many held sleeps this process has begun.
func Count() uint64 { return begun.Load() }

// Limit returns how many goroutines of this process may sleep held at
// once: GOMAXPROCS/2 when first asked.
func Limit() int { return int(limit()) }

// FutexWake wakes up to n sleepers on word. FUTEX_WAKE never blocks, so
// it is a raw system call: no scheduler bookkeeping around it.
func FutexWake(word *uint32, n int) {
	_, _, _ = unix.RawSyscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexOpWake, uintptr(n), 0, 0, 0)
}

// FutexWakeBitset wakes up to n sleepers on word whose bitset shares a
// bit with bits (FUTEX_WAKE_BITSET): those of FutexWait, and those of
// FutexWaitBitset that asked for one of bits. It returns how many it woke.
func FutexWakeBitset(word *uint32, n int, bits uint32) int {
	r, _, e := unix.RawSyscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexOpWakeBitset, uintptr(n), 0, 0, uintptr(bits))
	if e != 0 {
		return 0
	}
	return int(r)
}

// Until sleeps until the CLOCK_MONOTONIC time t (ns, the clock of
// runtime.nanotime), with clock_nanosleep(TIMER_ABSTIME) as a C program
// paces itself.
func Until(t int64) {
	for {
		now := nanotime()
		if t <= now {
			return
		}
		ts := unix.NsecToTimespec(t)
		if t-now <= int64(hold) && acquire() {
			_, _, e := unix.RawSyscall6(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
			release()
			if e != unix.EINTR {
				return
			}
		}
		// Far off, no held sleep to spare, or signalled by the runtime:
		// the ordinary way, then look again (a signal interrupts it too).
		if t-nanotime() > int64(hold) {
			ts = unix.NsecToTimespec(t - int64(hold))
		}
		_ = unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
	}
}

// goyield is runtime.Gosched without the global queue and the wakep:
// the runtime keeps it for linkname users (go.dev/issue/67401).
//
//go:linkname goyield runtime.goyield
func goyield()

//go:linkname nanotime runtime.nanotime
func nanotime() int64
