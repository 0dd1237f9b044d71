package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestShrunkRingDataFiles: a ring file shrunk under the agent (its backing
// file truncated) must not crash the agent through the data files: a
// reader blocked on it, new reads and writes, and the closes fail or end
// with EIO, the channel is marked broken, and another channel goes on.
func TestShrunkRingDataFiles(t *testing.T) {
	state := newStateDir(t)
	f := mountAt(t, state, channel.Config{})
	dir := f.mkchan(t, "ns", "shrunk")
	// A short lease: the agent's heartbeats of its file members touch the
	// ring every 10 ms.
	configure(t, dir, "lease 40ms\n")
	good := f.mkchan(t, "ns", "good")
	blocked := openOwned(t, filepath.Join(dir, "sub"), unix.O_RDONLY)
	sub := openOwned(t, filepath.Join(dir, "sub"), unix.O_RDONLY|unix.O_NONBLOCK)
	msg := openOwned(t, filepath.Join(dir, "msg"), unix.O_RDONLY|unix.O_NONBLOCK)
	pub := openOwned(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	lines := openOwned(t, filepath.Join(dir, "publines"), unix.O_WRONLY)
	ring := openOwned(t, filepath.Join(dir, "ring"), unix.O_RDWR)
	res := make(chan error, 1)
	go func() {
		_, err := read(blocked, make([]byte, 4096))
		res <- err
	}()
	if err := os.Truncate(filepath.Join(state, "ns", "shrunk", "ring"), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err != unix.EIO {
			t.Errorf("blocked read of the shrunk ring: %v, want EIO", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked read of the shrunk ring still waiting after 10 s")
	}
	buf := make([]byte, 4096)
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"read sub", func() error { _, err := read(sub, buf); return err }},
		{"read msg", func() error { _, err := read(msg, buf); return err }},
		{"write pub", func() error { _, err := write(pub, []byte("x")); return err }},
		{"write publines", func() error { _, err := write(lines, []byte("x\n")); return err }},
		{"read ring", func() error { _, err := unix.Pread(ring, buf, 0); return err }},
		{"write ring", func() error { _, err := unix.Pwrite(ring, buf[:8], 0); return err }},
	} {
		if err := tc.op(); err != unix.EIO {
			t.Errorf("%s of the shrunk ring: %v, want EIO", tc.name, err)
		}
	}
	for _, fd := range []int{blocked, sub, msg, pub, lines, ring} {
		unix.Close(fd)
	}
	if b := readKV(t, filepath.Join(dir, "stats"))["broken"]; b != "1" {
		t.Errorf("stats of the shrunk channel: broken %q, want 1", b)
	}
	// The agent is alive: another channel carries a message.
	gs := open(t, filepath.Join(good, "sub"), unix.O_RDONLY)
	mustWrite(t, open(t, filepath.Join(good, "pub"), unix.O_WRONLY), "still here")
	if got := mustRead(t, gs, 100); got != "still here\n" {
		t.Errorf("other channel read %q", got)
	}
}
