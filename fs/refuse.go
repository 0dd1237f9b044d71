package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fixedNames refuses every way of adding or removing a name other than
// mkdir and rmdir: a channel directory's files are the channel's, and
// nothing else lives in the mount. Without it go-fuse answers unlink with
// success (the file stays) and create with EROFS on a read-write mount.
type fixedNames struct{}

var (
	_ = (gofs.NodeCreater)((*fixedNames)(nil))
	_ = (gofs.NodeMknoder)((*fixedNames)(nil))
	_ = (gofs.NodeUnlinker)((*fixedNames)(nil))
	_ = (gofs.NodeSymlinker)((*fixedNames)(nil))
	_ = (gofs.NodeLinker)((*fixedNames)(nil))
)

func (fixedNames) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EPERM
}

func (fixedNames) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (fixedNames) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

func (fixedNames) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (fixedNames) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
