package fs

import (
	"bytes"
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestBigMessages: messages larger than the kernel's 1 MiB piece of a read
// are read whole by a msg reader with a big enough buffer, continued
// across reads by a sub reader with any buffer (so a block channel is
// never held back by them), and never glued to the next message; opening
// readers does not allocate max_message each.
func TestBigMessages(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "big")
	configure(t, dir, "capacity 32M\nmax_message 4M\n")

	// What the agent keeps per open reader: the heap after a GC, with them
	// open (on main each kept a max_message buffer: 128 MiB here).
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var readers []int
	for i := 0; i < 32; i++ {
		readers = append(readers, openOwned(t, filepath.Join(dir, "msg"), unix.O_RDONLY))
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 32<<20 {
		t.Errorf("32 open readers of a channel with max_message 4M hold %d MiB", grew>>20)
	}
	for _, fd := range readers {
		unix.Close(fd)
	}

	msg := open(t, filepath.Join(dir, "msg"), unix.O_RDONLY)
	sub := open(t, filepath.Join(dir, "sub"), unix.O_RDONLY)
	ch, err := f.reg.Channel("ns", "big")
	if err != nil {
		t.Fatal(err)
	}
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, err := h.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pattern := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i%251)
		}
		return b
	}
	msgs := [][]byte{pattern(3<<20+5, 1), pattern(2<<20, 2), []byte("small")}
	for _, m := range msgs {
		if err := p.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	// msg with a buffer larger than every message: one message per read.
	buf := make([]byte, 4<<20)
	for i, m := range msgs {
		n, err := read(msg, buf)
		if err != nil || !bytes.Equal(buf[:n], m) {
			t.Errorf("msg read %d: %d bytes, %v; want %d bytes intact", i, n, err, len(m))
		}
	}
	// msg with a small buffer: EMSGSIZE, and the message stays.
	exact := open(t, filepath.Join(dir, "msg.oldest"), unix.O_RDONLY)
	if _, err := read(exact, make([]byte, 64<<10)); err != unix.EMSGSIZE {
		t.Errorf("3 MiB message into 64 KiB: %v, want EMSGSIZE", err)
	}
	// A buffer of exactly the message's size, a multiple of the piece: the
	// next read says EINTR once instead of gluing the next message on.
	if n, err := read(exact, buf[:3<<20+5]); err != nil || !bytes.Equal(buf[:n], msgs[0]) {
		t.Errorf("exact read of the first: %d, %v", n, err)
	}
	if n, err := read(exact, buf[:2<<20]); err != nil || !bytes.Equal(buf[:n], msgs[1]) {
		t.Errorf("exact read of the second: %d, %v", n, err)
	}
	if _, err := unix.Read(exact, buf); err != unix.EINTR { // testenv's read retries EINTR
		t.Errorf("read after a message that ended a full piece: %v, want EINTR", err)
	}
	if n, err := read(exact, buf); err != nil || string(buf[:n]) != "small" {
		t.Errorf("then: %q, %v", buf[:n], err)
	}

	// sub with cat's 128 KiB buffer: the lines arrive intact, in order.
	var want []byte
	for _, m := range msgs {
		want = append(append(want, m...), '\n')
	}
	var got []byte
	for len(got) < len(want) {
		n, err := read(sub, buf[:128<<10])
		if err != nil {
			t.Fatalf("sub read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("sub: %d bytes, want %d intact", len(got), len(want))
	}
}
