package fs

import (
	"context"
	"sync"
	"time"

	"github.com/shimmy-dev/shimmy/registry"
)

// releaseWait bounds how long rmdir waits for files closed just before it.
const releaseWait = 2 * time.Second

// closing counts, per channel, the ring and data files that their process
// has closed (FLUSH came, synchronously inside close(2)) but whose RELEASE
// has not come yet: the kernel sends RELEASE asynchronously after close(2)
// returns, so a script's "close; rmdir" would otherwise see EBUSY now and
// then. rmdir waits for those, and only for those.
type closing struct {
	mu      sync.Mutex
	n       map[*registry.Channel]int
	changed chan struct{} // closed and replaced whenever a count drops
}

func newClosing() *closing {
	return &closing{n: map[*registry.Channel]int{}, changed: make(chan struct{})}
}

func (c *closing) add(ch *registry.Channel, d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ch] += d; c.n[ch] <= 0 {
		delete(c.n, ch)
	}
	if d < 0 {
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// wait waits until no file of ch is between close and release, at most
// releaseWait or until ctx ends (the rmdir was interrupted). It reports
// whether none is left (perhaps none ever was: a release may have come
// just before, so the caller tries again either way).
func (c *closing) wait(ctx context.Context, ch *registry.Channel) bool {
	t := time.NewTimer(releaseWait)
	defer t.Stop()
	for {
		c.mu.Lock()
		n, changed := c.n[ch], c.changed
		c.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
}

// closeMark is one open file's place in closing.
type closeMark struct {
	mu      sync.Mutex
	flushed bool
}

// flush notes that a process closed a descriptor of the file; if the
// file was shared (dup, fork) and is used again, use undoes it.
func (o hold) flush() { o.mark(true) }

// use notes that the file is in use (a read or write came).
func (o hold) use() { o.mark(false) }

// released ends the file's place in closing.
func (o hold) released() { o.mark(false) }

func (o hold) mark(flushed bool) {
	m := o.cm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.flushed == flushed {
		return
	}
	m.flushed = flushed
	if flushed {
		o.root.closing.add(o.ch, 1)
	} else {
		o.root.closing.add(o.ch, -1)
	}
}
