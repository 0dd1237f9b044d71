package fs

import (
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLostFile: a slow file reader of an overwrite channel learns exactly
// how many messages it lost from the channel's lost file, read by its own
// process; every message is either read, in order, or counted lost.
// Another process's lost file does not count it (issue 10 item 11).
func TestLostFile(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ow")
	configure(t, dir, "policy overwrite\ncapacity 4096\n")
	for _, name := range []string{"msg", "sub"} {
		t.Run(name, func(t *testing.T) {
			rd := openOwned(t, filepath.Join(dir, name), unix.O_RDONLY|unix.O_NONBLOCK)
			defer unix.Close(rd)
			if got := lostFile(t, dir); got != 0 {
				t.Fatalf("lost before any message: %d", got)
			}
			const n = 1000 // about 8 laps of a 4 KiB ring of 32-byte frames
			pub := openOwned(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
			for i := uint64(0); i < n; i++ {
				var b [8]byte
				binary.BigEndian.PutUint64(b[:], i)
				mustWrite(t, pub, string(b[:]))
			}
			unix.Close(pub)
			read, next := 0, uint64(0)
			buf := make([]byte, 9)
			for {
				k, err := unix.Read(rd, buf)
				if err == unix.EAGAIN {
					break
				}
				if err != nil || k < 8 {
					t.Fatalf("read: %d bytes, %v", k, err)
				}
				v := binary.BigEndian.Uint64(buf)
				if v < next {
					t.Fatalf("message %d after %d: out of order", v, next)
				}
				next, read = v+1, read+1
			}
			if next != n {
				t.Fatalf("last message read %d, want %d", next-1, n-1)
			}
			if got := lostFile(t, dir); got != uint64(n-read) || read == n {
				t.Errorf("read %d of %d; lost says %d, want %d", read, n, got, n-read)
			}
			out, err := exec.Command("cat", filepath.Join(dir, "lost")).Output()
			if err != nil || string(out) != "0\n" {
				t.Errorf("another process's lost: %q, %v; want 0", out, err)
			}
		})
	}
	if _, err := unix.Open(filepath.Join(dir, "lost"), unix.O_WRONLY, 0); err == nil {
		t.Error("lost opened for writing")
	}
}

// lostFile reads dir/lost from this process.
func lostFile(t *testing.T, dir string) uint64 {
	t.Helper()
	fd := openOwned(t, filepath.Join(dir, "lost"), unix.O_RDONLY)
	defer unix.Close(fd)
	s := mustRead(t, fd, 64)
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("lost says %q", s)
	}
	return v
}
