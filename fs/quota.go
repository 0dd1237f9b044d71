package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/registry"
)

// quotaNode is a namespace's .quota file: everyone may read its limits
// and usage; only root may write new limits (docs/limits.md).
type quotaNode struct {
	gofs.Inode
	xattrless
	ns *registry.Namespace
}

var (
	_ = (gofs.NodeGetxattrer)((*quotaNode)(nil))
	_ = (gofs.NodeGetattrer)((*quotaNode)(nil))
	_ = (gofs.NodeSetattrer)((*quotaNode)(nil))
	_ = (gofs.NodeOpener)((*quotaNode)(nil))
)

func quotaAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o644 // root's, whoever owns the namespace
	a.Nlink = 1
}

func (n *quotaNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	quotaAttr(&out.Attr)
	return 0
}

// Setattr takes the truncation of "echo ... > .quota" and refuses the rest.
func (n *quotaNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); !ok || in.Valid&^(fuse.FATTR_SIZE|fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) != 0 {
		return syscall.EPERM
	}
	quotaAttr(&out.Attr)
	return 0
}

func (n *quotaNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY {
		return &textHandle{data: chanfile.FormatQuota(n.ns.Quota(), n.ns.Usage(), n.ns.QuotaError())}, fuse.FOPEN_DIRECT_IO, 0
	}
	// The kernel checks the mode with default_permissions; without it (a
	// mount without allow_other) the caller is checked here.
	if c, ok := fuse.FromContext(ctx); !ok || c.Uid != 0 {
		return nil, 0, syscall.EACCES
	}
	return &quotaHandle{ns: n.ns}, fuse.FOPEN_DIRECT_IO, 0
}

// quotaHandle applies each write as a block of "key value" lines.
type quotaHandle struct{ ns *registry.Namespace }

var _ = (gofs.FileWriter)((*quotaHandle)(nil))

func (h *quotaHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	q, err := chanfile.ParseQuota(string(data), h.ns.Quota())
	if err == nil {
		err = h.ns.SetQuota(q)
	}
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(len(data)), 0
}
