package channel

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname

	"github.com/shimmy-dev/shimmy/internal/heldsleep"
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
	// and itself a wake-up (6-25 µs here, more when the vCPU was idle): a
	// reader that sleeps between two batches of a fast publisher costs it
	// that per batch. Spinning about as long as a wake-up costs bounds
	// the waste at twice the optimum. A member whose last sleep lasted
	// longer than SpinFor skips spinning (Spins and SpinFor) and yielding
	// on its next wait, until a sleep is shorter again: at a low rate the
	// spin never catches a message, and the CPU it burns costs the
	// sleeper its place in the kernel's queue when it is woken on a busy
	// host.
	SpinFor time.Duration
	// Yields: runtime.Gosched calls before sleeping (skipped, like the
	// spin, after a sleep longer than SpinFor). A yield with an idle
	// processor in the process wakes a thread to look for work: several
	// µs of the other CPUs' time each, here.
	Yields  int
	NoSleep bool // never sleep: poll forever (lowest latency, burns a core)
	// YieldEvery makes a spinning member yield the processor about this
	// often while it spins (0: never). The Go runtime preempts a goroutine
	// that ran 10 ms without passing through the scheduler, with a signal
	// that interrupts the poll loop at a random point and costs tens of
	// µs here (the busy subscriber's p99 and p99.9); a goroutine that
	// yields first is never preempted. These yields requeue the goroutine
	// on its own processor and wake no other thread (heldsleep.Yield),
	// where runtime.Gosched, with an idle processor in the process, woke
	// one to look for work: about 30 µs of not polling here, and that
	// thread's run on another vCPU. Still yield as seldom as keeps the
	// runtime from preempting: just under its 10 ms. The time is measured
	// across waits: a subscriber that finds a message every few µs never
	// sleeps and is never rescheduled otherwise.
	YieldEvery time.Duration
	// Slice asks the kernel for this time slice for the thread that sleeps
	// held (heldsleep.AskSlice; 0 leaves the thread as it is). With the
	// default slice (1.4 ms here) a woken member on its waker's CPU mostly
	// waits for the waker to go to sleep, about 13 µs more here; with a
	// short slice it runs at once. The thread's share of the CPU is the
	// same, in shorter turns when it competes for one; the threads it
	// creates inherit the slice.
	Slice time.Duration
	// NoHold sleeps as an ordinary system call, which gives the process's
	// Go processor back to the runtime while it lasts, instead of a held
	// sleep that keeps it for a faster wake-up (internal/heldsleep; at
	// most GOMAXPROCS/2 at once per process). For a process that waits on
	// behalf of others: the agent's file readers and writers set it, so
	// that its tenants' waits never take its processors.
	NoHold bool
}

// Predefined idle strategies.
var (
	// IdleDefault spins for about a wake-up's cost (20 µs), yields, then
	// sleeps on the futex, in a thread with a 100 µs slice (the shortest
	// the kernel grants).
	IdleDefault = Idle{Spins: 200, SpinFor: 20 * time.Microsecond, Yields: 20, Slice: 100 * time.Microsecond}
	// IdleBusy polls and never sleeps, yielding the processor every 9
	// ms, before the runtime would preempt it mid-poll (YieldEvery says
	// what a yield costs). It spends a core per waiting member. For the
	// steadiest tail give it a process of its own with GOMAXPROCS=1
	// (the process's other goroutines, the lease heartbeat among them,
	// then run at the yields) and pin it (taskset) to a core of its own;
	// with more busy members than GOMAXPROCS, the process's other
	// goroutines wait up to 9 ms for one.
	IdleBusy = Idle{Spins: 1 << 30, NoSleep: true, YieldEvery: 9 * time.Millisecond}
	// IdleSleep sleeps at once.
	IdleSleep = Idle{}
)

// maxSleep bounds the safety timeout of a futex sleep (see
// Ring.sleepFor).
const maxSleep = 500 * time.Millisecond

// sleepFor is the safety timeout of one sleep: min(Lease/4, maxSleep).
// Wake-ups do the work; the timeout is there because the trust model lets
// any peer skip them (a Python client cannot call futex, a hostile one can
// zero the waiter counts), and because a reader stuck on a dead
// publisher's claim must look again every Lease/4 (and a publisher
// blocked by a dead subscriber within about a lease) when no agent reaps.
func (r *Ring) sleepFor() time.Duration { return min(r.cfg.Lease/4, maxSleep) }

// waiter runs one wait loop of an idle strategy.
type waiter struct {
	idle     Idle
	n        int   // pauses so far
	yields   int   // of them, yields
	until    int64 // SpinFor: spin until this clock reading; 0: not started
	spinDone bool
	noSpin   bool  // SpinFor: the last sleep outlasted it; kept across waits
	yielded  int64 // YieldEvery and heldsleep.YieldIfDue: clock reading at the last yield, kept across waits
	ctx      context.Context
	lease    *member
	sleep    time.Duration // safety timeout of one sleep
	bits     uint32        // futex bitset of its sleeps (0: every wake-up ends them)
}

// newWaiter returns a waiter for idle, ready to wait.
func newWaiter(idle Idle, lease *member) waiter {
	w := waiter{idle: idle, lease: lease, sleep: lease.r.sleepFor()}
	w.reset()
	return w
}

func (w *waiter) reset() {
	w.n, w.yields, w.until = 0, 0, 0
	w.spinDone = w.idle.Spins <= 0 && w.idle.SpinFor <= 0 || w.noSpin
	if w.noSpin && !w.idle.NoSleep {
		w.yields = w.idle.Yields
	}
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
// wake-up between the check and the sleep is never lost; without ready
// pause never sleeps (it returns for the caller to look again).
func (w *waiter) pause(pk *park, ready func() bool) error {
	w.n++
	if !w.spinDone {
		w.spun()
	}
	switch {
	case !w.spinDone:
		if w.idle.YieldEvery > 0 && w.n&63 == 0 {
			w.yieldIfDue()
		}
		if w.idle.NoSleep && w.n&0xffff == 0 {
			return w.check()
		}
		return nil
	case w.yields < w.idle.Yields || w.idle.NoSleep:
		w.yields++
		runtime.Gosched()
		return w.check()
	}
	if err := w.check(); err != nil || ready == nil {
		return err
	}
	held := !w.idle.NoHold
	// The yield keeps the runtime from preempting a held sleep. After it
	// (at the first sleep, then every few ms, in case the goroutine moved
	// to another thread) the sleeping thread asks for its slice.
	if held && heldsleep.YieldIfDue(&w.yielded) && w.idle.Slice > 0 {
		_ = heldsleep.AskSlice(w.idle.Slice) // best effort: the wake-up works without it
	}
	if w.idle.SpinFor <= 0 {
		pk.wait(w.ctx, ready, w.sleep, held, w.bits)
		return nil
	}
	slept := nanotime()
	pk.wait(w.ctx, ready, w.sleep, held, w.bits)
	w.noSpin = nanotime()-slept > int64(w.idle.SpinFor)
	return nil
}

// yieldIfDue yields the processor if YieldEvery has passed since the
// last yield (or since spinning first began).
func (w *waiter) yieldIfDue() {
	now := nanotime()
	switch {
	case w.yielded == 0:
		w.yielded = now
	case now-w.yielded >= int64(w.idle.YieldEvery):
		heldsleep.Yield()
		w.yielded = nanotime()
	}
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
func wake(word, waiters *uint32) { wakeN(word, waiters, 1<<31-1) }

// Quiet wake-ups, which the commits of a quiet publisher
// (PublisherOptions.Quiet) make, and the sleepers deaf to them
// (SubscriberOptions.DeafToQuiet). A quiet wake-up is FUTEX_WAKE_BITSET
// naming every bit but waitDeaf, and a deaf sleeper waits
// (FUTEX_WAIT_BITSET) on waitDeaf alone: every other sleeper (FUTEX_WAIT:
// all bits) is woken by both kinds, and a deaf one by every ordinary
// FUTEX_WAKE. A quiet waker adds quietStep to the word where others add
// 1, so that a deaf sleeper whose futex call returned (its held part
// timed out, the word had moved before it slept, a signal) tells from the
// word's low bits whether anyone but quiet wakers moved it, and if not
// sleeps on: an ordinary waker that comes after that look moves the
// low bits under its next futex call, which then returns at once.
const (
	waitDeaf  uint32 = 1
	wakeQuiet        = ^waitDeaf
	quietStep uint32 = 1 << 16
)

// wakeQuietly is wake for a quiet publisher's commit: sleepers deaf to
// it stay asleep.
func wakeQuietly(word, waiters *uint32) {
	if atomic.LoadUint32(waiters) == 0 {
		return
	}
	atomic.AddUint32(word, quietStep)
	heldsleep.FutexWakeBitset(word, 1<<31-1, wakeQuiet)
}

// sleepOn sleeps while word holds v, at most d, woken by the wake-ups
// that share a bit with bits; a deaf sleeper (bits waitDeaf) sleeps on
// across quiet wakers' moves of the word (a multiple of quietStep since
// it last looked). A word moved by quietStep 65536 times between two
// looks, or by 65536 ordinary wakers whose wake-ups all came before its
// futex call, costs it at most the timeout d.
func sleepOn(word *uint32, v uint32, d time.Duration, held bool, bits uint32) {
	deadline := nanotime() + int64(d)
	for {
		futexWait(word, v, d, held, bits)
		if bits != waitDeaf {
			return
		}
		now, w := nanotime(), atomic.LoadUint32(word)
		if (w-v)%quietStep != 0 || now >= deadline {
			return
		}
		v, d = w, time.Duration(deadline-now)
	}
}

// wakeN bumps word and wakes up to n sleepers if anyone announced a sleep:
// competing stream readers, of which one takes each new record.
func wakeN(word, waiters *uint32, n int) {
	if atomic.LoadUint32(waiters) == 0 {
		return
	}
	atomic.AddUint32(word, 1)
	futexWakeN(word, n)
}

// park is where the goroutines of this process wait on one futex word.
// Each sleeper on a futex is an OS thread, and a blocking system call
// keeps the runtime's processor until the runtime takes it back: a
// thousand subscribers asleep in one process were a thousand threads that
// every publish woke at once, and they starved the heartbeat goroutine
// past the lease. So one goroutine at most sleeps on the word itself (as
// before: the fastest wake-up, for the common case of one waiter), and
// only while the process has fewer than maxDirect such sleepers; the
// others wait on a channel that a poller (poller.go) closes each time the
// word moves, whatever their number and however many words they wait on.
type park struct {
	word, waiters *uint32

	mu     sync.Mutex
	gen    chan struct{} // closed when the poller sees the word move (or time out)
	n      int           // goroutines waiting on gen
	direct bool          // a goroutine sleeps on word itself
	closed bool          // the ring closed: no poller any more

	// The poller's attachment, while pl is set: it waits on word against
	// v (announced in waiters) and wakes gen at deadline at the latest.
	pl       *poller
	tok      uint64
	v        uint32
	d        time.Duration
	deadline int64

	hook ctxHook // the direct sleeper's context's wake-up, kept across sleeps
}

// ctxHook wakes a park's sleepers when a context ends (context.AfterFunc):
// a cancelled caller must not sleep out its timeout. A direct sleeper's
// hook stays registered across its sleeps with the same context, until
// another context replaces it or the park closes: one registration per
// sleep cost 450 ns and 5 allocations, on the way back from each wake-up
// (where it was stopped).
type ctxHook struct {
	ctx  context.Context
	stop func() bool
	ran  chan struct{} // closed once the wake-up has run
}

// hookOn registers the wake-up of word for the end of ctx.
func hookOn(ctx context.Context, word *uint32) ctxHook {
	h := ctxHook{ctx: ctx, ran: make(chan struct{})}
	h.stop = context.AfterFunc(ctx, func() {
		faultSafe(func() { atomic.AddUint32(word, 1) })
		futexWake(word)
		close(h.ran)
	})
	return h
}

// release unregisters the hook; the wake-up touches the ring, so it is
// over (or will never run) when release returns.
func (h ctxHook) release() {
	if h.stop != nil && !h.stop() {
		<-h.ran
	}
}

// watch makes sure the park's hook wakes its sleepers when ctx ends; false
// once the park is closed (its memory may go away: the caller hooks its
// own sleep instead).
func (pk *park) watch(ctx context.Context) bool {
	pk.mu.Lock()
	if pk.closed {
		pk.mu.Unlock()
		return false
	}
	if pk.hook.ctx == ctx {
		pk.mu.Unlock()
		return true
	}
	old := pk.hook
	pk.hook = hookOn(ctx, pk.word)
	pk.mu.Unlock()
	old.release()
	return true
}

func newPark(word, waiters *uint32) *park {
	return &park{word: word, waiters: waiters, gen: make(chan struct{})}
}

// wait sleeps until word changes, ctx is done, or d passes, unless ready
// reports true after the sleep was announced; held: a direct sleep may
// keep the Go processor (Idle.NoHold). A goroutine that sleeps on the
// word itself does so with the futex bitset bits (0: all); one that waits
// through the poller is woken by every wake-up.
func (pk *park) wait(ctx context.Context, ready func() bool, d time.Duration, held bool, bits uint32) {
	var done <-chan struct{}
	if ctx != nil {
		done = ctx.Done()
	}
	pk.mu.Lock()
	if pk.closed || !haveWaitv() {
		pk.mu.Unlock()
		pk.sleepDirect(ctx, done, ready, d, false, held, bits)
		return
	}
	if !pk.direct && direct.Add(1) <= maxDirect {
		pk.direct = true
		pk.mu.Unlock()
		pk.sleepDirect(ctx, done, ready, d, true, held, bits)
		return
	}
	if !pk.direct {
		direct.Add(-1)
	}
	if pk.pl == nil {
		// Announced, and the word read, before this goroutine's re-check:
		// a waker that comes after the re-check bumps the word after v
		// was read, and the poller's wait returns at once.
		atomic.AddUint32(pk.waiters, 1)
		pk.v, pk.d = atomic.LoadUint32(pk.word), d
		pk.deadline = nanotime() + int64(d)
		attachPoller(pk)
	}
	pk.n++
	gen := pk.gen
	pk.mu.Unlock()
	if !ready() {
		select {
		case <-gen:
		case <-done:
		}
	}
	pk.mu.Lock()
	pk.n--
	pk.mu.Unlock()
}

// sleepDirect sleeps on the word itself; counted: as the park's direct
// sleeper.
func (pk *park) sleepDirect(ctx context.Context, done <-chan struct{}, ready func() bool, d time.Duration, counted, held bool, bits uint32) {
	atomic.AddUint32(pk.waiters, 1)
	v := atomic.LoadUint32(pk.word)
	if !ready() {
		switch {
		case done == nil:
			sleepOn(pk.word, v, d, held, bits)
		case counted && pk.watch(ctx):
			// A hook that ran before v was read moved the word before
			// that, and closed done before it ran.
			select {
			case <-done:
			default:
				sleepOn(pk.word, v, d, held, bits)
			}
		default:
			h := hookOn(ctx, pk.word)
			sleepOn(pk.word, v, d, held, bits)
			h.release()
		}
	}
	atomic.AddUint32(pk.waiters, ^uint32(0))
	if counted {
		pk.mu.Lock()
		pk.direct = false
		pk.mu.Unlock()
		direct.Add(-1)
	}
}

// close detaches the park from its poller before the ring's memory goes
// away, and wakes the goroutines waiting on it (they sleep on the word
// themselves from now on, bounded by their timeout).
func (pk *park) close() {
	pk.mu.Lock()
	pk.closed = true
	hook := pk.hook
	pk.hook = ctxHook{}
	pl, tok := pk.pl, pk.tok
	if pl != nil {
		pk.pl = nil
		atomic.AddUint32(pk.waiters, ^uint32(0))
		close(pk.gen)
		pk.gen = make(chan struct{})
	}
	pk.mu.Unlock()
	hook.release()
	if pl != nil {
		pl.detach(pk, tok)
		pl.kick()
	}
}

// futexWait sleeps while *word == val, at most d, woken by the wake-ups
// that share a bit with bits (0: all), holding the Go processor for the
// first part of the sleep when the process has one to spare: the wake-up
// of a sleeping subscriber then costs what it costs a C thread
// (internal/heldsleep says why and what it costs). held false: the
// ordinary way (Idle.NoHold).
func futexWait(word *uint32, val uint32, d time.Duration, held bool, bits uint32) {
	if held {
		heldsleep.FutexWaitBitset(word, val, d, bits)
	} else {
		heldsleep.FutexWaitPlainBitset(word, val, d, bits)
	}
}

func futexWake(word *uint32) { futexWakeN(word, 1<<31-1) }

func futexWakeN(word *uint32, n int) { heldsleep.FutexWake(word, n) }
