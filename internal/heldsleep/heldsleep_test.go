package heldsleep

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
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
