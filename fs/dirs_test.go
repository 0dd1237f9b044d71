package fs

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDirTimesAndDots: directories carry real times (not 1970) and list
// "." and "..", as ls -la expects.
func TestDirTimesAndDots(t *testing.T) {
	start := time.Now().Add(-time.Minute)
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	for _, p := range []string{f.mnt, f.path("ns"), dir} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mt := st.ModTime(); mt.Before(start) || mt.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s: mtime %v, want about now", p, mt)
		}
		d, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		names, err := d.Readdirnames(-1) // Go drops . and ..: count them via the raw entries below
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		raw := rawNames(t, p)
		if len(raw) != len(names)+2 || raw[0] != "." || raw[1] != ".." {
			t.Errorf("%s: entries %v, want . and .. then %v", p, raw, names)
		}
	}
}

// rawNames lists a directory with getdents, "." and ".." included.
func rawNames(t *testing.T, dir string) []string {
	t.Helper()
	fd := openOwned(t, dir, 0)
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return names
		}
		// unix.ParseDirent drops "." and "..": walk the linux_dirent64
		// records (ino 8, off 8, reclen 2, type 1, name) by hand.
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			name := b[19:reclen]
			names = append(names, string(name[:bytes.IndexByte(name, 0)]))
			b = b[reclen:]
		}
	}
}
