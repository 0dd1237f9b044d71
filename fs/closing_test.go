package fs

import (
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRmdirAfterClose: a script's "open, close, rmdir" never sees EBUSY
// (300 rounds; on main about 1 in 60 failed under -race),
// although the kernel releases a closed file after close(2) returns.
func TestRmdirAfterClose(t *testing.T) {
	f := mountFS(t)
	f.mkchan(t, "ns", "warm")
	for _, file := range []struct {
		name  string
		flags int
	}{
		{"sub", unix.O_RDONLY},
		{"msg.oldest", unix.O_RDONLY},
		{"pub", unix.O_WRONLY},
		{"publines", unix.O_WRONLY},
		{"ring", unix.O_RDWR},
	} {
		busy := 0
		for i := 0; i < 60; i++ {
			dir := f.mkchan(t, "ns", "ch")
			fd := openOwned(t, filepath.Join(dir, file.name), file.flags)
			if err := unix.Close(fd); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Rmdir(dir); err != nil {
				busy++
				if err != syscall.EBUSY {
					t.Fatalf("rmdir after closing %s: %v", file.name, err)
				}
				eventually(t, releaseWait, func() error { return syscall.Rmdir(dir) })
			}
		}
		if busy > 0 {
			t.Errorf("rmdir right after closing %s: EBUSY in %d of 60 rounds", file.name, busy)
		}
	}
}
