package fs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFixedNames: the files of a channel directory cannot be removed and
// no file can be created anywhere in the mount; each refusal is EPERM,
// and the file is still there afterwards.
func TestFixedNames(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"rm config", func() error { return unix.Unlink(filepath.Join(dir, "config")) }},
		{"rm pub", func() error { return unix.Unlink(filepath.Join(dir, "pub")) }},
		{"create in channel", func() error { return touch(filepath.Join(dir, "new")) }},
		{"create in namespace", func() error { return touch(f.path("ns", "new")) }},
		{"create in root", func() error { return touch(f.path("new")) }},
		{"mknod", func() error { return unix.Mknod(filepath.Join(dir, "fifo"), unix.S_IFIFO|0o644, 0) }},
		{"symlink", func() error { return unix.Symlink("config", filepath.Join(dir, "link")) }},
		{"link", func() error { return unix.Link(filepath.Join(dir, "config"), filepath.Join(dir, "link")) }},
	} {
		if err := tc.do(); !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EPERM", tc.name, err)
		}
	}
	for _, name := range []string{"config", "pub"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s after rm: %v", name, err)
		}
	}
	for _, name := range []string{"new", "fifo", "link"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it absent", name, err)
		}
	}
}

func touch(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// TestRingTruncate: the ring's size is the channel's: truncating it is
// EPERM and leaves the ring file and its backing at their size; the data
// files still take O_TRUNC ("echo x > pub").
func TestRingTruncate(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	ring := filepath.Join(dir, "ring")
	before, err := os.Stat(ring)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{0, before.Size() / 2, before.Size() * 2} {
		if err := os.Truncate(ring, size); !errors.Is(err, syscall.EPERM) {
			t.Errorf("truncate ring to %d: %v, want EPERM", size, err)
		}
	}
	if err := os.Truncate(ring, before.Size()); err != nil {
		t.Errorf("truncate ring to its own size: %v", err)
	}
	for _, p := range []string{ring, filepath.Join(f.state, "ns", "ch", "ring")} {
		if st, err := os.Stat(p); err != nil || st.Size() != before.Size() {
			t.Errorf("%s after truncate: %v, %v; want size %d", p, st, err, before.Size())
		}
	}
	sub := open(t, filepath.Join(dir, "msg"), unix.O_RDONLY)
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY|unix.O_TRUNC)
	mustWrite(t, pub, "after")
	if got := mustRead(t, sub, 100); got != "after" {
		t.Errorf("read %q", got)
	}
}

// TestPubLinesOverlong: a line longer than max_message fails with
// EMSGSIZE, the lines around it arrive, and no part of it becomes a
// message, whether it comes in one write or spans several.
func TestPubLinesOverlong(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	configure(t, dir, "capacity 64K\nmax_message 64\n")
	msg := open(t, filepath.Join(dir, "msg"), unix.O_RDONLY|unix.O_NONBLOCK)
	pl := open(t, filepath.Join(dir, "publines"), unix.O_WRONLY)
	long := strings.Repeat("x", 65)

	// In one write: the line before is written, the long one is refused.
	data := "before\n" + long + "\nafter\n"
	n, err := write(pl, []byte(data))
	if err != nil || n != len("before\n") {
		t.Errorf("write: %d, %v; want %d (the line before the long one)", n, err, len("before\n"))
	}
	if _, err := write(pl, []byte(data[n:])); err != unix.EMSGSIZE {
		t.Errorf("write of the long line: %v, want EMSGSIZE", err)
	}
	// A writer that retries sends the long line again: it is dropped up to
	// its newline, and the lines after it are published.
	mustWrite(t, pl, data[n:])
	// Spanning writes: its tail is dropped up to its newline.
	mustWrite(t, pl, long[:40])
	if _, err := write(pl, []byte(long[40:])); err != unix.EMSGSIZE {
		t.Errorf("write making the line too long: %v, want EMSGSIZE", err)
	}
	mustWrite(t, pl, "tail of the long line\nlast\n")
	for _, want := range []string{"before", "after", "last"} {
		if got := mustRead(t, msg, 100); got != want {
			t.Errorf("message %q, want %q", got, want)
		}
	}
	if _, err := read(msg, make([]byte, 100)); err != unix.EAGAIN {
		t.Errorf("after the last line: %v, want EAGAIN (nothing more)", err)
	}
}
