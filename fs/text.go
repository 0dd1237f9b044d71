package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/registry"
)

// text renders config, stats or error at open: each open is a snapshot.
func (n *fileNode) text() []byte {
	ch := n.ch
	switch n.spec.kind {
	case kindConfig:
		return chanfile.NewConfigFile(ch, n.root.reg.Passthrough()).Format()
	case kindStats:
		return chanfile.FormatStats(ch.Stats())
	case kindError:
		return chanfile.FormatError(ch.LastError(), ch.BrokenReason())
	}
	return nil
}

// textHandle serves a snapshot taken at open.
type textHandle struct{ data []byte }

var _ = (gofs.FileReader)((*textHandle)(nil))

func (h *textHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.data[off:min(int64(len(h.data)), off+int64(len(dest)))]), 0
}

// ctlHandle collects what is written and applies it as one change when
// the writer closes (FLUSH): "printf 'a\nb\n' > ctl" re-creates the ring
// once, and fails as a whole, although printf writes line by line. Each
// write is checked at once against the channel, so a bad line fails its
// write(2) (which every shell reports) and the whole batch with it.
type ctlHandle struct {
	ch *registry.Channel

	mu      sync.Mutex
	pending []byte
	failed  error // a refused write poisons the batch until the next close
}

// maxCtl bounds the text one open of ctl collects.
const maxCtl = 16 << 10

var (
	_ = (gofs.FileWriter)((*ctlHandle)(nil))
	_ = (gofs.FileFlusher)((*ctlHandle)(nil))
)

func (h *ctlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	text := append(h.pending[:len(h.pending):len(h.pending)], data...)
	err := h.failed
	if err == nil && len(text) > maxCtl {
		err = fmt.Errorf("%w: more than %d bytes written to ctl", registry.ErrInvalidConfig, maxCtl)
	}
	if err == nil {
		var c registry.Change
		if c, err = chanfile.ParseCtl(string(text)); err == nil {
			err = h.ch.CheckChange(c)
		}
		if err != nil {
			h.ch.RefuseChange(err)
		}
	}
	if err != nil {
		h.failed, h.pending = err, nil
		return 0, toErrno(err)
	}
	h.pending = text
	return uint32(len(data)), 0
}

// Flush applies what was written since the last close, once; an error
// (the batch was refused, or the channel became busy since) is close(2)'s.
func (h *ctlHandle) Flush(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	text, failed := h.pending, h.failed
	h.pending, h.failed = nil, nil
	if failed != nil {
		return toErrno(failed)
	}
	if len(text) == 0 {
		return 0
	}
	c, err := chanfile.ParseCtl(string(text))
	if err == nil {
		_, err = h.ch.Reconfigure(c)
	} else {
		h.ch.RefuseChange(err)
	}
	return toErrno(err)
}
