package wait

import (
	"errors"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	n := 0
	if err := Until(time.Minute, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, n)
	}
	want := errors.New("never")
	if err := Until(10*time.Millisecond, func() error { return want }); err != want {
		t.Fatalf("Until = %v, want the last error %v", err, want)
	}
}
