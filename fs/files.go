package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	cf "github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

type fileKind int

const (
	kindRing fileKind = iota
	kindPub
	kindPubLines
	kindSub
	kindMsg
	kindConfig
	kindStats
	kindCtl
	kindError
	kindLost
)

// fileSpec says what a name inside a channel directory is.
type fileSpec struct {
	name   string
	kind   fileKind
	queue  int
	oldest bool
}

var pubsubFiles = []fileSpec{
	{name: cf.Ring, kind: kindRing},
	{name: cf.Pub, kind: kindPub},
	{name: cf.PubLines, kind: kindPubLines},
	{name: cf.Sub, kind: kindSub},
	{name: cf.SubOldest, kind: kindSub, oldest: true},
	{name: cf.Msg, kind: kindMsg},
	{name: cf.MsgOldest, kind: kindMsg, oldest: true},
	{name: cf.Config, kind: kindConfig},
	{name: cf.Stats, kind: kindStats},
	{name: cf.Lost, kind: kindLost},
	{name: cf.Ctl, kind: kindCtl},
	{name: cf.Error, kind: kindError},
}

var streamFiles = []fileSpec{
	{name: cf.Ring, kind: kindRing},
	{name: cf.StreamFile(0, cf.Pub), kind: kindPub, queue: 0},
	{name: cf.StreamFile(0, cf.PubLines), kind: kindPubLines, queue: 0},
	{name: cf.StreamFile(0, cf.Sub), kind: kindSub, queue: 0},
	{name: cf.StreamFile(0, cf.Msg), kind: kindMsg, queue: 0},
	{name: cf.StreamFile(1, cf.Pub), kind: kindPub, queue: 1},
	{name: cf.StreamFile(1, cf.PubLines), kind: kindPubLines, queue: 1},
	{name: cf.StreamFile(1, cf.Sub), kind: kindSub, queue: 1},
	{name: cf.StreamFile(1, cf.Msg), kind: kindMsg, queue: 1},
	{name: cf.Config, kind: kindConfig},
	{name: cf.Stats, kind: kindStats},
	{name: cf.Ctl, kind: kindCtl},
	{name: cf.Error, kind: kindError},
}

// filesFor lists the files of a channel. A SysV channel has no ring file:
// its segment has no file to serve (FUSE passthrough needs one).
func filesFor(ch *registry.Channel) []fileSpec {
	files := pubsubFiles
	if ch.Config().Type == channel.TypeStream {
		files = streamFiles
	}
	if ch.Backing().Kind != registry.BackingSysV {
		return files
	}
	out := make([]fileSpec, 0, len(files))
	for _, s := range files {
		if s.kind != kindRing {
			out = append(out, s)
		}
	}
	return out
}

func lookupFile(ch *registry.Channel, name string) (fileSpec, bool) {
	for _, s := range filesFor(ch) {
		if s.name == name {
			return s, true
		}
	}
	return fileSpec{}, false
}

func filePerm(dirMode uint32, k fileKind) uint32 {
	switch k {
	case kindRing:
		return registry.DataMode(dirMode)
	case kindPub, kindPubLines:
		return dirMode & 0o222
	case kindSub, kindMsg:
		return dirMode & 0o444
	case kindCtl:
		return dirMode & 0o200
	}
	return 0o444
}

func fileAttr(a *fuse.Attr, ch *registry.Channel, s fileSpec) {
	m := ch.Attr()
	cfg := ch.Config()
	a.Mode = syscall.S_IFREG | filePerm(m.Mode, s.kind)
	a.Uid, a.Gid = m.UID, m.GID
	a.Nlink = 1
	// Times: the channel's creation; stats changes all the time, so it
	// says now.
	t := chanTime(cfg)
	if s.kind == kindStats {
		t = time.Now()
	}
	a.SetTimes(&t, &t, &t)
	switch {
	case s.kind == kindRing && cfg.Capacity != 0:
		a.Size = uint64(cfg.Size())
	case s.kind == kindPub || s.kind == kindPubLines:
		a.Size = pubSize
	}
}

// chanTime is when the channel's ring was made (its epoch is wall-clock ns).
func chanTime(cfg channel.Config) time.Time { return time.Unix(0, int64(cfg.Epoch)) }

// fileNode is one file of a channel directory.
type fileNode struct {
	gofs.Inode
	xattrless
	root *Root
	ch   *registry.Channel
	spec fileSpec
}

var (
	_ = (gofs.NodeGetxattrer)((*fileNode)(nil))
	_ = (gofs.NodeGetattrer)((*fileNode)(nil))
	_ = (gofs.NodeSetattrer)((*fileNode)(nil))
	_ = (gofs.NodeOpener)((*fileNode)(nil))
)

func (n *fileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fileAttr(&out.Attr, n.ch, n.spec)
	return 0
}

// Setattr accepts truncation of the data and text files as a no-op, so
// that "echo x > pub" (open with O_TRUNC) works; the ring's size is the
// channel's (ctl changes it), so resizing it is EPERM. Owner and mode
// follow the channel directory.
func (n *fileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok && n.spec.kind == kindRing && size != uint64(n.ch.Config().Size()) {
		return syscall.EPERM
	}
	if _, ok := in.GetMode(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetUID(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetGID(); ok {
		return syscall.EPERM
	}
	fileAttr(&out.Attr, n.ch, n.spec)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// The name may have changed meaning if the channel was re-typed.
	if s, ok := lookupFile(n.ch, n.spec.name); !ok || s != n.spec {
		if !n.ch.Broken() {
			return nil, 0, syscall.ESTALE
		}
	}
	acc := flags & syscall.O_ACCMODE
	nonblock := flags&syscall.O_NONBLOCK != 0
	switch n.spec.kind {
	case kindConfig, kindStats, kindError:
		if acc != syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		return &textHandle{data: n.text()}, fuse.FOPEN_DIRECT_IO, 0
	case kindLost:
		if acc != syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		return &textHandle{data: n.root.readers.lostText(n.ch, callerTgid(ctx))}, fuse.FOPEN_DIRECT_IO, 0
	case kindCtl:
		if acc == syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		return &ctlHandle{ch: n.ch}, fuse.FOPEN_DIRECT_IO, 0
	case kindRing:
		return n.openRing()
	case kindPub, kindPubLines:
		if acc == syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		return n.openPub(nonblock)
	case kindSub, kindMsg:
		if acc != syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		return n.openSub(ctx, nonblock)
	}
	return nil, 0, syscall.EINVAL
}
