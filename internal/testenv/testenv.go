// Package testenv holds what the tests of several packages do alike: a
// fresh tmpfs directory for rings, a logger that stays quiet, and raw file
// I/O on the mount that retries EINTR.
package testenv

import (
	"os"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ShmDir makes a fresh directory under /dev/shm (tmpfs, where rings live),
// removed at cleanup. A machine without /dev/shm skips the test.
func ShmDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", prefix)
	if err != nil {
		t.Skipf("no /dev/shm here: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// QuietLog is a logger that shows warnings and errors only.
func QuietLog() *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return l
}

// Open opens path with raw syscalls, which keep test file descriptors away
// from the Go poller, retrying EINTR (the Go runtime preempts with
// signals, which FUSE turns into interrupts) as libc's callers do. The
// descriptor is closed at cleanup: a test that closes it itself uses
// OpenOwned, or the cleanup closes whatever file has its number by then.
func Open(t testing.TB, path string, flags int) int {
	t.Helper()
	fd := OpenOwned(t, path, flags)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// OpenOwned is Open for a test that closes the descriptor itself.
func OpenOwned(t testing.TB, path string, flags int) int {
	t.Helper()
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		return fd
	}
}

// Read is read(2), retried on EINTR.
func Read(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Read(fd, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// Write is write(2), retried on EINTR.
func Write(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// MustWrite writes s in one write(2) and fails t unless all of it went.
func MustWrite(t testing.TB, fd int, s string) {
	t.Helper()
	n, err := Write(fd, []byte(s))
	if err != nil || n != len(s) {
		t.Fatalf("write %q: %d, %v", s, n, err)
	}
}

// MustRead reads once into a buffer of size bytes and fails t on error.
func MustRead(t testing.TB, fd int, size int) string {
	t.Helper()
	buf := make([]byte, size)
	n, err := Read(fd, buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n])
}
