package fs

import (
	"context"
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

// ctlHandle applies each write as a block of "key value" lines.
type ctlHandle struct{ ch *registry.Channel }

var _ = (gofs.FileWriter)((*ctlHandle)(nil))

func (h *ctlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	c, err := chanfile.ParseCtl(string(data))
	if err != nil {
		h.ch.RefuseChange(err)
		return 0, toErrno(err)
	}
	if _, err := h.ch.Reconfigure(c); err != nil {
		return 0, toErrno(err)
	}
	return uint32(len(data)), 0
}
