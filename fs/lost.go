package fs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/shimmy-dev/shimmy/registry"
)

// readers are the open sub and msg files of pubsub channels, by channel,
// so that a process reading a channel's lost file learns what its own
// readers of that channel lost (an overwrite channel's stats count only
// the total).
type readers struct {
	mu sync.Mutex
	by map[*registry.Channel]map[*subHandle]struct{}
}

func newReaders() *readers {
	return &readers{by: map[*registry.Channel]map[*subHandle]struct{}{}}
}

func (rs *readers) add(ch *registry.Channel, h *subHandle) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	set := rs.by[ch]
	if set == nil {
		set = map[*subHandle]struct{}{}
		rs.by[ch] = set
	}
	set[h] = struct{}{}
}

func (rs *readers) remove(ch *registry.Channel, h *subHandle) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.by[ch], h)
	if len(rs.by[ch]) == 0 {
		delete(rs.by, ch)
	}
}

// lostText is the lost file for process tgid: the messages lost by the
// readers of ch that it opened and still holds, summed, as of their last
// read.
func (rs *readers) lostText(ch *registry.Channel, tgid uint32) []byte {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var sum uint64
	for h := range rs.by[ch] {
		if h.tgid == tgid {
			sum += h.lost.Load()
		}
	}
	return fmt.Appendf(nil, "%d\n", sum)
}

// callerTgid is the process (thread group) of a request's caller: FUSE
// gives the calling thread.
func callerTgid(ctx context.Context) uint32 {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return c.Pid
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
				return uint32(n)
			}
		}
	}
	return c.Pid
}
