// Package ringbench measures the shimmy ring between two processes beside
// the baselines that bound it: a bare single-producer single-consumer ring
// in the same kind of shared memory (the physical limit), a Unix domain
// socket pair, and a bare futex wake-up (the floor of any sleeping waiter).
// The benchmarks live in the test files; this file holds the bare ring and
// the primitives both sides of a benchmark share. docs/ring-benchmarks.md
// describes the method and the results.
package ringbench

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/shimmy-dev/shimmy/internal/heldsleep"
)

// nanotime is the runtime's CLOCK_MONOTONIC read through the vDSO (about
// 20 ns, against a few hundred for the clock_gettime system call that
// unix.ClockGettime makes). Unlike time.Now's monotonic reading it is not
// offset by the process start, so stamps compare across processes.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Bare ring layout: one counter per cache line, because each is written by
// one side and read by the other; data starts on its own page.
const (
	bareTail        = 0   // u64 messages published (producer writes)
	bareHead        = 64  // u64 messages consumed (consumer writes)
	bareDataFutex   = 128 // u32 bumped by the producer when DataWaiters > 0
	bareDataWaiters = 132 // u32 consumer asleep on DataFutex
	bareSpaceFutex  = 192 // u32 bumped by the consumer when SpaceWaiters > 0
	bareSpaceWaits  = 196 // u32 producer asleep on SpaceFutex
	bareData        = 4096
)

// errStopped reports that a waiting side was told to give up (its peer died).
var errStopped = errors.New("ringbench: peer gone")

// Bare is the minimal single-producer single-consumer ring of fixed-size
// slots: the producer fills slot tail%n and stores tail+1; the consumer
// reads slot head%n and stores head+1. Each side caches the other's
// counter and reloads it only when the ring looks full or empty, which is
// what makes such a ring as fast as the cache-coherence traffic allows.
// With sleep set, a side that finds nothing to do sleeps on a futex word,
// announced through a waiter count that the other side checks after every
// store: the same protocol the shimmy ring uses, without anything else.
type Bare struct {
	mem   []byte
	tail  *uint64
	head  *uint64
	slot  uint64 // bytes per slot
	n     uint64 // slots
	sleep bool
	stop  *atomic.Bool // set when the peer is gone; polled while waiting

	pos   uint64 // next message to fill (producer) or read (consumer)
	other uint64 // cached head (producer) or tail (consumer)
}

// BareSize returns the shared-memory bytes of a bare ring of capacity data
// bytes, page aligned.
func BareSize(capacity uint64) int64 { return int64(bareData + capacity) }

// NewBare views mem (zeroed, at least BareSize(capacity) bytes) as a bare
// ring of slots of slotSize bytes (rounded up to 8).
func NewBare(mem []byte, capacity, slotSize uint64, sleep bool, stop *atomic.Bool) (*Bare, error) {
	slot := (slotSize + 7) &^ 7
	if slot == 0 || capacity/slot < 2 || uint64(len(mem)) < bareData+capacity {
		return nil, fmt.Errorf("ringbench: bare ring of %d bytes cannot hold two %d-byte slots in %d bytes of memory", capacity, slot, len(mem))
	}
	b := &Bare{
		mem:   mem,
		tail:  (*uint64)(unsafe.Pointer(&mem[bareTail])),
		head:  (*uint64)(unsafe.Pointer(&mem[bareHead])),
		slot:  slot,
		n:     capacity / slot,
		sleep: sleep,
		stop:  stop,
	}
	return b, nil
}

func (b *Bare) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&b.mem[off])) }

func (b *Bare) at(i uint64) []byte {
	o := bareData + (i%b.n)*b.slot
	return b.mem[o : o+b.slot : o+b.slot]
}

// Claim waits for a free slot and returns it (producer).
func (b *Bare) Claim() ([]byte, error) {
	for spins := 0; b.pos-b.other >= b.n; spins++ {
		b.other = atomic.LoadUint64(b.head)
		if b.pos-b.other < b.n {
			break
		}
		if err := b.wait(spins, bareSpaceFutex, bareSpaceWaits, func() bool { return b.pos-atomic.LoadUint64(b.head) < b.n }); err != nil {
			return nil, err
		}
	}
	return b.at(b.pos), nil
}

// Commit publishes the claimed slot (producer).
func (b *Bare) Commit() {
	b.pos++
	atomic.StoreUint64(b.tail, b.pos)
	if b.sleep {
		wakeIf(b.u32(bareDataFutex), b.u32(bareDataWaiters))
	}
}

// Peek waits for the next message and returns its slot in place (consumer).
func (b *Bare) Peek() ([]byte, error) {
	for spins := 0; b.pos == b.other; spins++ {
		b.other = atomic.LoadUint64(b.tail)
		if b.pos != b.other {
			break
		}
		if err := b.wait(spins, bareDataFutex, bareDataWaiters, func() bool { return atomic.LoadUint64(b.tail) != b.pos }); err != nil {
			return nil, err
		}
	}
	return b.at(b.pos), nil
}

// Done releases the slot returned by Peek (consumer).
func (b *Bare) Done() {
	b.pos++
	atomic.StoreUint64(b.head, b.pos)
	if b.sleep {
		wakeIf(b.u32(bareSpaceFutex), b.u32(bareSpaceWaits))
	}
}

// wait is one round of an idle loop: a busy poll, or a futex sleep
// announced before ready is checked again, so a wake-up is never lost.
func (b *Bare) wait(spins int, word, waiters int, ready func() bool) error {
	if spins&1023 == 1023 && b.stop != nil && b.stop.Load() {
		return errStopped
	}
	if !b.sleep {
		return nil
	}
	w, n := b.u32(word), b.u32(waiters)
	atomic.AddUint32(n, 1)
	v := atomic.LoadUint32(w)
	if !ready() {
		futexWait(w, v, 50*time.Millisecond)
	}
	atomic.AddUint32(n, ^uint32(0))
	if b.stop != nil && b.stop.Load() {
		return errStopped
	}
	return nil
}

// wakeIf bumps word and wakes its sleepers if anyone announced a sleep.
func wakeIf(word, waiters *uint32) {
	if atomic.LoadUint32(waiters) != 0 {
		atomic.AddUint32(word, 1)
		futexWake(word)
	}
}

// futexWait sleeps while *word == val, at most d, as a C thread sleeps:
// in futex(2) without giving the Go processor back
// (internal/heldsleep), as Shimmy's subscribers do. The futex is not
// private: the word lives in memory shared between processes.
func futexWait(word *uint32, val uint32, d time.Duration) { heldsleep.FutexWait(word, val, d) }

// futexWaitSyscall is the same sleep as an ordinary Go system call, which
// the runtime may take the processor from: how Shimmy's subscribers slept
// before (BenchmarkFutexWake/syscall shows what it costs).
func futexWaitSyscall(word *uint32, val uint32, d time.Duration) {
	heldsleep.FutexWaitPlain(word, val, d)
}

// futexWake wakes every sleeper on word.
func futexWake(word *uint32) { heldsleep.FutexWake(word, 1<<31-1) }
