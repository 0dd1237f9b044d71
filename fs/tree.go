// Package fs is the FUSE adapter of the node agent: it serves the
// registry's namespaces and channels as directories, and in each channel
// the mmap-able ring file, the data files that publish and subscribe with
// read(2)/write(2), and the files that describe and configure the channel
// (their names and text are package chanfile's). docs/filesystem.md
// describes the layout for users; package registry keeps the state.
//
// Files: tree.go (directories), files.go (the file table and its nodes),
// data.go (ring and data-file handles), text.go (config, stats, error and
// ctl), errno.go (registry and ring errors as errnos), mount.go.
package fs

import (
	"context"
	"errors"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/registry"
)

// xattrless answers every extended-attribute read with ENOSYS, which makes
// the kernel stop asking for the whole mount (otherwise it looks up
// security.capability before every write).
type xattrless struct{}

func (xattrless) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// Root is the mount's root directory: one subdirectory per namespace.
type Root struct {
	gofs.Inode
	xattrless
	fixedNames
	reg     *registry.Registry
	log     logrus.FieldLogger
	closing *closing
	started time.Time
	readers *readers
}

// NewRoot returns the root node serving reg; nil log: logrus's standard
// logger.
func NewRoot(reg *registry.Registry, log logrus.FieldLogger) *Root {
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Root{reg: reg, log: log.WithField("component", "fs"), closing: newClosing(), started: time.Now(), readers: newReaders()}
}

// Registry returns the registry the tree serves.
func (r *Root) Registry() *registry.Registry { return r.reg }

var (
	_ = (gofs.NodeGetxattrer)((*Root)(nil))
	_ = (gofs.NodeLookuper)((*Root)(nil))
	_ = (gofs.NodeReaddirer)((*Root)(nil))
	_ = (gofs.NodeMkdirer)((*Root)(nil))
	_ = (gofs.NodeRmdirer)((*Root)(nil))
	_ = (gofs.NodeGetattrer)((*Root)(nil))
)

func (r *Root) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, registry.Attr{Mode: 0o755}, r.started)
	return 0
}

func (r *Root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ns, err := r.reg.Namespace(name)
	if err != nil {
		return nil, toErrno(err)
	}
	return r.nsInode(ctx, name, ns, out), 0
}

func (r *Root) nsInode(ctx context.Context, name string, ns *registry.Namespace, out *fuse.EntryOut) *gofs.Inode {
	dirAttr(&out.Attr, ns.Attr(), r.started)
	if c := r.GetChild(name); c != nil {
		if n, ok := c.Operations().(*nsNode); ok && n.ns == ns {
			return c
		}
	}
	return r.NewInode(ctx, &nsNode{root: r, ns: ns}, gofs.StableAttr{Mode: syscall.S_IFDIR})
}

func (r *Root) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var es []fuse.DirEntry
	for _, ns := range r.reg.Namespaces() {
		es = append(es, fuse.DirEntry{Name: ns.Name, Mode: syscall.S_IFDIR})
	}
	return listDir(r.StableAttr().Ino, es), 0
}

func (r *Root) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ns, err := r.reg.CreateNamespace(name, callerAttr(ctx, mode))
	if err != nil {
		return nil, toErrno(err)
	}
	return r.nsInode(ctx, name, ns, out), 0
}

func (r *Root) Rmdir(ctx context.Context, name string) syscall.Errno {
	return toErrno(r.reg.RemoveNamespace(name))
}

// nsNode is a namespace directory: one subdirectory per channel.
type nsNode struct {
	gofs.Inode
	xattrless
	fixedNames
	root *Root
	ns   *registry.Namespace
}

var (
	_ = (gofs.NodeGetxattrer)((*nsNode)(nil))
	_ = (gofs.NodeLookuper)((*nsNode)(nil))
	_ = (gofs.NodeReaddirer)((*nsNode)(nil))
	_ = (gofs.NodeMkdirer)((*nsNode)(nil))
	_ = (gofs.NodeRmdirer)((*nsNode)(nil))
	_ = (gofs.NodeGetattrer)((*nsNode)(nil))
	_ = (gofs.NodeSetattrer)((*nsNode)(nil))
)

func (n *nsNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, n.ns.Attr(), n.root.started)
	return 0
}

func (n *nsNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if err := n.ns.SetAttr(func(a *registry.Attr) { applySetattr(a, in) }); err != nil {
		return toErrno(err)
	}
	dirAttr(&out.Attr, n.ns.Attr(), n.root.started)
	return 0
}

func (n *nsNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if name == chanfile.Quota {
		quotaAttr(&out.Attr)
		if c := n.GetChild(name); c != nil {
			return c, 0
		}
		return n.NewInode(ctx, &quotaNode{ns: n.ns}, gofs.StableAttr{Mode: syscall.S_IFREG}), 0
	}
	ch, err := n.ns.Channel(name)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.chInode(ctx, name, ch, out), 0
}

func (n *nsNode) chInode(ctx context.Context, name string, ch *registry.Channel, out *fuse.EntryOut) *gofs.Inode {
	dirAttr(&out.Attr, ch.Attr(), chanTime(ch.Config()))
	if c := n.GetChild(name); c != nil {
		if cn, ok := c.Operations().(*chanNode); ok && cn.ch == ch {
			return c
		}
	}
	return n.NewInode(ctx, &chanNode{root: n.root, ch: ch}, gofs.StableAttr{Mode: syscall.S_IFDIR})
}

func (n *nsNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	es := []fuse.DirEntry{{Name: chanfile.Quota, Mode: syscall.S_IFREG}}
	for _, ch := range n.ns.Channels() {
		es = append(es, fuse.DirEntry{Name: ch.Name, Mode: syscall.S_IFDIR})
	}
	return listDir(n.StableAttr().Ino, es), 0
}

func (n *nsNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ch, err := n.ns.CreateChannel(name, registry.CreateOptions{Attr: callerAttr(ctx, mode)})
	if err != nil {
		return nil, toErrno(err)
	}
	return n.chInode(ctx, name, ch, out), 0
}

// Rmdir of a channel whose only holders are files closed a moment ago
// waits (briefly, interruptibly) for the kernel's asynchronous RELEASE of
// them, then removes it.
func (n *nsNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	err := n.ns.RemoveChannel(name)
	if errors.Is(err, registry.ErrBusy) {
		if ch, cerr := n.ns.Channel(name); cerr == nil && n.root.closing.wait(ctx, ch) {
			err = n.ns.RemoveChannel(name)
		}
	}
	return toErrno(err)
}

// chanNode is a channel directory: its files depend on the channel type.
type chanNode struct {
	gofs.Inode
	xattrless
	fixedNames
	root *Root
	ch   *registry.Channel
}

var (
	_ = (gofs.NodeGetxattrer)((*chanNode)(nil))
	_ = (gofs.NodeLookuper)((*chanNode)(nil))
	_ = (gofs.NodeReaddirer)((*chanNode)(nil))
	_ = (gofs.NodeGetattrer)((*chanNode)(nil))
	_ = (gofs.NodeSetattrer)((*chanNode)(nil))
)

func (n *chanNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, n.ch.Attr(), chanTime(n.ch.Config()))
	return 0
}

func (n *chanNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if err := n.ch.SetAttr(func(a *registry.Attr) { applySetattr(a, in) }); err != nil {
		return toErrno(err)
	}
	dirAttr(&out.Attr, n.ch.Attr(), chanTime(n.ch.Config()))
	return 0
}

func (n *chanNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	spec, ok := lookupFile(n.ch, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	fileAttr(&out.Attr, n.ch, spec)
	if c := n.GetChild(name); c != nil {
		if fn, ok := c.Operations().(*fileNode); ok && fn.spec == spec {
			return c, 0
		}
	}
	return n.NewInode(ctx, &fileNode{root: n.root, ch: n.ch, spec: spec}, gofs.StableAttr{Mode: syscall.S_IFREG}), 0
}

func (n *chanNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var es []fuse.DirEntry
	for _, s := range filesFor(n.ch) {
		es = append(es, fuse.DirEntry{Name: s.name, Mode: syscall.S_IFREG})
	}
	return listDir(n.StableAttr().Ino, es), 0
}

// listDir lists es after "." (inode ino) and ".." as ls -a expects. The
// entries need an inode number: readers skip entries whose number is 0.
// ".." says 1, the root's, the only parent whose number is fixed.
func listDir(ino uint64, es []fuse.DirEntry) gofs.DirStream {
	dots := []fuse.DirEntry{{Name: ".", Mode: syscall.S_IFDIR, Ino: ino}, {Name: "..", Mode: syscall.S_IFDIR, Ino: 1}}
	return gofs.NewListDirStream(append(dots, es...))
}

// callerAttr: the uid and gid of the process behind a FUSE request, and
// the mode it asked for.
func callerAttr(ctx context.Context, mode uint32) registry.Attr {
	a := registry.Attr{Mode: mode & 0o7777}
	if c, ok := fuse.FromContext(ctx); ok {
		a.UID, a.GID = c.Uid, c.Gid
	}
	return a
}

// dirAttr: a directory's owner and mode, and its times: t (the agent's
// start for the root and namespaces, the ring's creation for a channel).
func dirAttr(a *fuse.Attr, m registry.Attr, t time.Time) {
	a.Mode = syscall.S_IFDIR | m.Mode&0o7777
	a.SetTimes(&t, &t, &t)
	a.Uid, a.Gid = m.UID, m.GID
	a.Nlink = 2
}

// applySetattr takes mode and owner changes; the kernel has already
// checked the caller's right to make them (default_permissions).
func applySetattr(m *registry.Attr, in *fuse.SetAttrIn) {
	if mode, ok := in.GetMode(); ok {
		m.Mode = mode & 0o7777
	}
	if uid, ok := in.GetUID(); ok {
		m.UID = uid
	}
	if gid, ok := in.GetGID(); ok {
		m.GID = gid
	}
}
