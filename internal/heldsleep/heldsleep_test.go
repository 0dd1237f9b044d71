package heldsleep

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/internal/wait"
)

// sleeper runs FutexWait(word, 0, d) in a goroutine and reports when it
// returns.
func sleeper(word *uint32, d time.Duration) <-chan time.Duration {
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		FutexWait(word, 0, d)
		done <- time.Since(start)
	}()
	return done
}

// asleep waits until n goroutines are in a held sleep (the count is
// taken just before the system call), and returns the most it saw at once.
func asleep(t *testing.T, n int32) int32 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	most := int32(0)
	for most < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines sleeping held, want %d", most, n)
		}
		runtime.Gosched()
		most = max(most, held.Load())
	}
	for range 1000 {
		most = max(most, held.Load())
		runtime.Gosched()
	}
	return most
}

func needProcs(t *testing.T) {
	if limit() < 1 {
		t.Skipf("GOMAXPROCS %d: no held sleeps (needs 2 or more)", runtime.GOMAXPROCS(0))
	}
}

func TestFutexWait(t *testing.T) {
	t.Run("woken", func(t *testing.T) {
		var word uint32
		done := sleeper(&word, time.Minute)
		asleepOrOrdinary(t)
		select {
		case <-done:
			t.Fatal("returned before the wake-up")
		default:
		}
		atomic.AddUint32(&word, 1)
		FutexWake(&word, 1)
		<-done
	})
	t.Run("word moved", func(t *testing.T) {
		word := uint32(1)
		if d := <-sleeper(&word, time.Minute); d > 30*time.Second {
			t.Fatalf("slept %v on a word that differed from the value", d)
		}
	})
	t.Run("timeout past the held part", func(t *testing.T) {
		var word uint32
		if d := <-sleeper(&word, 3*hold); d < 3*hold {
			t.Fatalf("slept %v, want the whole %v", d, 3*hold)
		}
	})
}

// asleepOrOrdinary gives a sleeper time to fall asleep whichever way it
// sleeps.
func asleepOrOrdinary(t *testing.T) {
	t.Helper()
	if limit() >= 1 {
		asleep(t, 1)
	}
	time.Sleep(20 * time.Millisecond)
}

// A held sleep keeps its processor, but the runtime still reaches it: a
// garbage collection (which stops the world and scans every stack) ends
// long before the held sleep would, and the sleeper goes on sleeping.
// (With GODEBUG=asyncpreemptoff=1 the collection waits, and this fails.)
func TestRuntimeReachesHeldSleeper(t *testing.T) {
	needProcs(t)
	hold = time.Minute
	var word uint32
	done := sleeper(&word, 2*time.Minute)
	t.Cleanup(func() {
		atomic.AddUint32(&word, 1)
		FutexWake(&word, 1)
		<-done
		hold = MaxHold
	})
	asleep(t, 1)
	gc := make(chan struct{})
	go func() { runtime.GC(); close(gc) }()
	select {
	case <-gc:
	case <-time.After(30 * time.Second):
		t.Fatal("the garbage collection waited for the held sleep")
	}
	select {
	case d := <-done:
		t.Fatalf("the sleeper returned after %v without a wake-up", d)
	default:
	}
}

// At most GOMAXPROCS/2 goroutines sleep held: the rest sleep the ordinary
// way and are woken all the same.
func TestHeldLimit(t *testing.T) {
	needProcs(t)
	hold = time.Minute
	t.Cleanup(func() { hold = MaxHold })
	n := int(limit()) + 2
	var word uint32
	dones := make([]<-chan time.Duration, n)
	for i := range dones {
		dones[i] = sleeper(&word, time.Minute)
	}
	if most := asleep(t, limit()); most != limit() {
		t.Fatalf("%d goroutines slept held at once, limit %d", most, limit())
	}
	atomic.AddUint32(&word, 1)
	FutexWake(&word, n)
	for _, d := range dones {
		<-d
	}
	if got := held.Load(); got != 0 {
		t.Fatalf("%d held sleeps left after every sleeper returned", got)
	}
}

func TestUntil(t *testing.T) {
	for _, d := range []time.Duration{0, 100 * time.Microsecond, 2 * time.Millisecond, hold + 5*time.Millisecond} {
		t0 := nanotime()
		Until(t0 + int64(d))
		if got := nanotime() - t0; got < int64(d) {
			t.Errorf("Until(now+%v) returned after %v", d, time.Duration(got))
		}
	}
}

// A sleeper with a bitset is woken only by the wake-ups that share a bit
// with it; a plain sleeper (bits 0) by every one. The quiet wake-up of
// package channel names every bit but one; a sleeper deaf to it waits on
// that one alone.
func TestFutexBitset(t *testing.T) {
	const deaf, quiet = uint32(1), ^uint32(1)
	// One futex call for the whole sleep: a held sleep that timed out
	// and went on the ordinary way would leave a gap between the two
	// calls where a wake-up finds no sleeper.
	hold = time.Minute
	t.Cleanup(func() { hold = MaxHold })
	for _, tc := range []struct {
		name       string
		sleep      uint32 // the sleeper's bitset (0: FUTEX_WAIT)
		wake       uint32 // the first wake-up's bitset
		wokenFirst int
	}{
		{"plain sleeper, quiet wake-up", 0, quiet, 1},
		{"plain sleeper, all bits", 0, ^uint32(0), 1},
		{"deaf sleeper, quiet wake-up", deaf, quiet, 0},
		{"deaf sleeper, all bits", deaf, ^uint32(0), 1},
		{"deaf sleeper, its bit", deaf, deaf, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var word uint32
			tids := make(chan int, 1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				tids <- unix.Gettid()
				FutexWaitBitset(&word, 0, time.Minute, tc.sleep)
			}()
			t.Cleanup(func() {
				atomic.AddUint32(&word, 1)
				FutexWake(&word, 1)
				<-done
			})
			wait.InFutex(t, <-tids, &word)
			if got := FutexWakeBitset(&word, 1, tc.wake); got != tc.wokenFirst {
				t.Fatalf("the wake-up with bitset %#x woke %d sleepers, want %d", tc.wake, got, tc.wokenFirst)
			}
			if tc.wokenFirst == 0 {
				if got := FutexWakeBitset(&word, 1, ^uint32(0)); got != 1 {
					t.Fatalf("a wake-up of all bits after it woke %d sleepers, want 1", got)
				}
			}
			<-done
		})
	}
}

// FUTEX_WAIT_BITSET takes an absolute deadline: a bitset sleep lasts its
// timeout, held (shorter than MaxHold) or longer than a held sleep.
func TestFutexBitsetTimeout(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, MaxHold + 3*time.Millisecond} {
		var word uint32
		t0 := nanotime()
		FutexWaitBitset(&word, 0, d, 1)
		if got := time.Duration(nanotime() - t0); got < d {
			t.Errorf("a bitset sleep of %v returned after %v", d, got)
		}
	}
}

// switches sums the voluntary context switches of the process's threads:
// a thread woken to look for work switches out when it finds none.
func switches(b *testing.B) int64 {
	dirs, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, d := range dirs {
		raw, err := os.ReadFile("/proc/self/task/" + d.Name() + "/status")
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "voluntary_ctxt_switches" {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n
}

// BenchmarkYield compares Yield with runtime.Gosched in a process with an
// idle processor, one yield every 50 µs of polling, as a busy subscriber
// or a paced publisher yields: the time per poll-and-yield, and the
// threads' voluntary context switches per yield (a Gosched wakes a thread
// to look for work, which sleeps again; Yield wakes none).
func BenchmarkYield(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skipf("GOMAXPROCS %d: Yield is Gosched with one processor", runtime.GOMAXPROCS(0))
	}
	for _, bc := range []struct {
		name  string
		yield func()
	}{{"gosched", runtime.Gosched}, {"yield", Yield}} {
		b.Run(bc.name, func(b *testing.B) {
			before := switches(b)
			for b.Loop() {
				for end := nanotime() + 50_000; nanotime() < end; {
				}
				bc.yield()
			}
			b.ReportMetric(float64(switches(b)-before)/float64(b.N), "wakes/op")
		})
	}
}

// mustAttr reads the calling thread's scheduling attributes.
func mustAttr(t *testing.T) schedAttr {
	t.Helper()
	a, err := threadAttr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAskSlice: the calling thread gets the slice it asks for, keeping its
// policy and nice value; a SCHED_IDLE thread is left alone.
func TestAskSlice(t *testing.T) {
	const slice = 100 * time.Microsecond
	for _, tc := range []struct {
		name      string
		policy    uint32
		nice      int32
		wantSlice bool
	}{
		{"SCHED_OTHER", schedOther, 0, true},
		{"SCHED_OTHER, nice 5", schedOther, 5, true},
		{"SCHED_BATCH", schedBatch, 0, true},
		{"SCHED_IDLE", 5, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			go func() { // a thread of its own, which exits with the goroutine
				defer close(done)
				runtime.LockOSThread()
				a := mustAttr(t)
				a.size, a.policy, a.nice = uint32(unsafe.Sizeof(a)), tc.policy, tc.nice
				if _, _, e := unix.RawSyscall(unix.SYS_SCHED_SETATTR, 0, uintptr(unsafe.Pointer(&a)), 0); e != 0 {
					t.Errorf("set up the thread: sched_setattr: %v", e)
					return
				}
				before := mustAttr(t)
				if err := AskSlice(slice); err != nil {
					t.Errorf("AskSlice: %v", err)
					return
				}
				got := mustAttr(t)
				if got.policy != tc.policy || got.nice != tc.nice {
					t.Errorf("policy %d nice %d after AskSlice, want %d and %d", got.policy, got.nice, tc.policy, tc.nice)
				}
				switch {
				case !tc.wantSlice && got.runtime != before.runtime:
					t.Errorf("slice %d ns, want it left at %d", got.runtime, before.runtime)
				case tc.wantSlice && got.runtime != uint64(slice):
					t.Errorf("slice %d ns, want %d (kernel %s: EEVDF slices need 6.12)", got.runtime, uint64(slice), kernelRelease())
				}
			}()
			<-done
		})
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
