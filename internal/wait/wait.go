// Package wait polls a condition in tests instead of sleeping a guessed
// time: machines here are shared and their speed varies, so a test waits
// for what it needs, up to a generous timeout.
package wait

import (
	"testing"
	"time"
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
