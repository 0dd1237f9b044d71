package fs

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/internal/heldsleep"
)

// TestTenantWaitHoldsNoProcessor: a tenant's blocked read sleeps in the
// agent the ordinary way, never as a held sleep that would keep one of
// the agent's Go processors for as long as the tenant waits.
func TestTenantWaitHoldsNoProcessor(t *testing.T) {
	if heldsleep.Limit() == 0 {
		t.Skipf("GOMAXPROCS %d: this process has no held sleep to take, so the test could not fail", runtime.GOMAXPROCS(0))
	}
	cases := []struct {
		name, config, read, write, want string
	}{
		{name: "pubsub sub", read: "sub", write: "pub", want: "hello\n"},
		{name: "stream reader", config: "type stream\n", read: "up.sub", write: "up.pub", want: "hello\n"},
	}
	f := mountFS(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("ch%d", i)
			dir := f.mkchan(t, "ns", name)
			if c.config != "" {
				configure(t, dir, c.config)
			}
			ch, err := f.reg.Channel("ns", name)
			if err != nil {
				t.Fatal(err)
			}
			h, err := ch.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()

			fd := open(t, filepath.Join(dir, c.read), unix.O_RDONLY)
			before := heldsleep.Count()
			done := make(chan string, 1)
			go func() {
				b := make([]byte, 100)
				n, _ := read(fd, b)
				done <- string(b[:n])
			}()
			// The agent's reader has announced its sleep on the ring.
			eventually(t, 5*time.Second, func() error {
				if w := h.Ring().QueueStats(0).DataWaiters; w == 0 {
					return fmt.Errorf("no reader asleep on the ring")
				}
				return nil
			})
			mustWrite(t, open(t, filepath.Join(dir, c.write), unix.O_WRONLY), "hello")
			if got := <-done; got != c.want {
				t.Errorf("read %q, want %q", got, c.want)
			}
			if n := heldsleep.Count() - before; n != 0 {
				t.Errorf("the agent slept held %d times for a tenant's read: it kept one of its Go processors while the tenant waited", n)
			}
		})
	}
}
