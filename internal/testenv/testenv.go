// Package testenv holds what the tests of several packages do alike: a
// fresh tmpfs directory for rings, the check that FUSE can be mounted, a
// logger that stays quiet, raw file I/O on the mount that retries EINTR,
// and shared mappings of ring files.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/moby/sys/mountinfo"
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

// NeedFUSE skips t unless this process can mount FUSE: as root (mounts
// are made directly, without fusermount) with /dev/fuse.
func NeedFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root here (direct mounts, no fusermount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// MapFile maps the file at path whole, shared and read-write (a ring's
// backing file, or a ring through the mount, to read or damage its bytes
// raw), until cleanup.
func MapFile(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// DeadFUSE mounts a FUSE filesystem of type fsType at dir and closes its
// device without ever serving it: what a crashed agent leaves behind (stat
// of dir fails with ENOTCONN). It is detached at cleanup if still there.
func DeadFUSE(t testing.TB, dir, fsType string) {
	t.Helper()
	NeedFUSE(t)
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	err = unix.Mount("shimmy", dir, fsType, unix.MS_NOSUID|unix.MS_NODEV, opts)
	unix.Close(fd)
	if err != nil {
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if _, err := os.Stat(dir); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("stat of a dead FUSE mount: %v, want ENOTCONN", err)
	}
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

// Tmpfs mounts a tmpfs of size bytes on a fresh directory, unmounted at
// cleanup: a state directory that fills up. Without the right to mount
// (not root) the test is skipped.
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// UnmountBelowAtCleanup detaches, when t ends, every mount at or below
// dir, the topmost of a stack first, until none is left: what an agent
// with a pod directory keeps when it stops (its per-namespace binds and
// the directory's own shared bind). Call it before starting the agent,
// so that it runs after the agent has stopped.
func UnmountBelowAtCleanup(t testing.TB, dir string) {
	t.Cleanup(func() {
		for range 100 {
			ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
			if err != nil || len(ms) == 0 {
				return
			}
			for i := len(ms) - 1; i >= 0; i-- { // mountinfo lists a mount after what it covers
				unix.Unmount(ms[i].Mountpoint, unix.MNT_DETACH)
			}
		}
		t.Errorf("mounts left below %s", dir)
	})
}

// Build compiles the Go package pkg (an import path under this module's
// name, or a directory relative to the test's package) into the file bin,
// for tests that run real processes. The error carries the compiler's output.
func Build(bin, pkg string) error {
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}
