// Package wait polls a condition in tests instead of sleeping a guessed
// time: machines here are shared and their speed varies, so a test waits
// for what it needs, up to a generous timeout.
package wait

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Until calls f until it returns nil or timeout passes, backing off from
// 1 ms to 50 ms between calls, and returns f's last error.
func Until(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Eventually is Until that fails the test with f's last error.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	if err := Until(timeout, f); err != nil {
		t.Fatalf("still failing after %v: %v", timeout, err)
	}
}

// InFutex waits until the thread tid of this process is asleep in
// futex(2) on word (its /proc syscall file names the call it is blocked
// in and its first argument): a goroutine locked to its thread has
// announced its sleep and is in the kernel, where only a wake-up or its
// timeout ends it. (A locked thread whose goroutine is not running also
// sleeps in futex, on a word of the runtime's.)
func InFutex(t testing.TB, tid int, word *uint32) {
	t.Helper()
	path := fmt.Sprintf("/proc/self/task/%d/syscall", tid)
	want := fmt.Sprintf("%d %#x ", unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)))
	Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(b), want) {
			return fmt.Errorf("thread %d is not asleep in futex on %p: %s", tid, word, strings.TrimSpace(string(b)))
		}
		return nil
	})
}
