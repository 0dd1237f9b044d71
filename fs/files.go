package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
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
)

// fileSpec says what a name inside a channel directory is.
type fileSpec struct {
	name   string
	kind   fileKind
	queue  int
	oldest bool
}

var pubsubFiles = []fileSpec{
	{name: "ring", kind: kindRing},
	{name: "pub", kind: kindPub},
	{name: "publines", kind: kindPubLines},
	{name: "sub", kind: kindSub},
	{name: "sub.oldest", kind: kindSub, oldest: true},
	{name: "msg", kind: kindMsg},
	{name: "msg.oldest", kind: kindMsg, oldest: true},
	{name: "config", kind: kindConfig},
	{name: "stats", kind: kindStats},
	{name: "ctl", kind: kindCtl},
	{name: "error", kind: kindError},
}

var streamFiles = []fileSpec{
	{name: "ring", kind: kindRing},
	{name: "up.pub", kind: kindPub, queue: 0},
	{name: "up.publines", kind: kindPubLines, queue: 0},
	{name: "up.sub", kind: kindSub, queue: 0},
	{name: "up.msg", kind: kindMsg, queue: 0},
	{name: "down.pub", kind: kindPub, queue: 1},
	{name: "down.publines", kind: kindPubLines, queue: 1},
	{name: "down.sub", kind: kindSub, queue: 1},
	{name: "down.msg", kind: kindMsg, queue: 1},
	{name: "config", kind: kindConfig},
	{name: "stats", kind: kindStats},
	{name: "ctl", kind: kindCtl},
	{name: "error", kind: kindError},
}

func filesFor(typ channel.Type) []fileSpec {
	if typ == channel.TypeStream {
		return streamFiles
	}
	return pubsubFiles
}

func lookupFile(typ channel.Type, name string) (fileSpec, bool) {
	for _, s := range filesFor(typ) {
		if s.name == name {
			return s, true
		}
	}
	return fileSpec{}, false
}

// dataPerm derives the data-file bits from a channel directory's mode:
// whoever may read or write the directory may read or write its data.
func dataPerm(dirMode uint32) uint32 { return dirMode & 0o666 }

func filePerm(dirMode uint32, k fileKind) uint32 {
	switch k {
	case kindRing:
		return dataPerm(dirMode)
	case kindPub, kindPubLines:
		return dirMode & 0o222
	case kindSub, kindMsg:
		return dirMode & 0o444
	case kindCtl:
		return dirMode & 0o200
	}
	return 0o444
}

func fileAttr(a *fuse.Attr, ch *Channel, s fileSpec) {
	m := ch.Meta()
	a.Mode = syscall.S_IFREG | filePerm(m.Mode, s.kind)
	a.Uid, a.Gid = m.UID, m.GID
	a.Nlink = 1
	// Times: the channel's creation (its epoch is wall-clock ns); stats
	// changes all the time, so it says now.
	t := time.Unix(0, int64(ch.Config().Epoch))
	if s.kind == kindStats {
		t = time.Now()
	}
	a.SetTimes(&t, &t, &t)
	if s.kind == kindRing {
		a.Size = uint64(ch.Config().Size())
		if ch.Config().Capacity == 0 {
			a.Size = 0
		}
	}
}

// fileNode is one file of a channel directory.
type fileNode struct {
	gofs.Inode
	xattrless
	ch   *Channel
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

// Setattr accepts truncation as a no-op, so that "echo x > pub" (open with
// O_TRUNC) works; owner and mode follow the channel directory.
func (n *fileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
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
	if s, ok := lookupFile(n.ch.Config().Type, n.spec.name); !ok || s != n.spec {
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
	case kindCtl:
		if acc == syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		return &ctlHandle{ch: n.ch}, fuse.FOPEN_DIRECT_IO, 0
	case kindRing:
		ring, seg, errno := n.ch.acquire()
		if errno != 0 {
			return nil, 0, errno
		}
		return &ringHandle{ch: n.ch, seg: seg, size: int64(ring.Config().Size())}, 0, 0
	case kindPub, kindPubLines:
		if acc == syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		ring, _, errno := n.ch.acquire()
		if errno != 0 {
			return nil, 0, errno
		}
		p, err := ring.NewPublisher(channel.PublisherOptions{Queue: n.spec.queue})
		if err != nil {
			n.ch.release()
			return nil, 0, n.ch.errno(err)
		}
		h := &pubHandle{ch: n.ch, pub: p, lines: n.spec.kind == kindPubLines, nonblock: nonblock, max: int(ring.Config().MaxMessage)}
		return h, fuse.FOPEN_DIRECT_IO, 0
	case kindSub, kindMsg:
		if acc != syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		ring, _, errno := n.ch.acquire()
		if errno != 0 {
			return nil, 0, errno
		}
		h := &subHandle{ch: n.ch, lines: n.spec.kind == kindSub, nonblock: nonblock, max: int(ring.Config().MaxMessage)}
		var err error
		if ring.Config().Type == channel.TypeStream {
			h.rd, err = ring.NewReader(channel.ReaderOptions{Queue: n.spec.queue})
		} else {
			from := channel.StartNewest
			if n.spec.oldest {
				from = channel.StartOldest
			}
			h.sub, err = ring.NewSubscriber(channel.SubscriberOptions{From: from})
		}
		if err != nil {
			n.ch.release()
			return nil, 0, n.ch.errno(err)
		}
		h.scratch = make([]byte, 0, h.max)
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	return nil, 0, syscall.EINVAL
}

// text renders config, stats or error at open: each open is a snapshot.
func (n *fileNode) text() []byte {
	ch := n.ch
	var b strings.Builder
	switch n.spec.kind {
	case kindConfig:
		c, m := ch.Config(), ch.Meta()
		if c.Capacity != 0 {
			fmt.Fprintf(&b, "type %s\npolicy %s\ncapacity %d\nmax_message %d\nmember_slots %d\nlease %s\n",
				c.Type, c.Policy, c.Capacity, c.MaxMessage, c.MemberSlots, leaseString(c.Lease))
		}
		fmt.Fprintf(&b, "mode %04o\nuid %d\ngid %d\nepoch %d\nsize %d\nbacking %s\npassthrough %d\n",
			m.Mode, m.UID, m.GID, c.Epoch, c.Size(), ch.BackingPath(), b2i(ch.reg.Passthrough()))
		if c.Capacity == 0 {
			b.Reset()
			fmt.Fprintf(&b, "mode %04o\nuid %d\ngid %d\nbacking %s\nbroken 1\n", m.Mode, m.UID, m.GID, ch.BackingPath())
		}
	case kindStats:
		s := ch.Stats()
		fmt.Fprintf(&b, "messages %d\nbytes %d\npublishers %d\nsubscribers %d\nlag_max %d\nlost %d\nreaped %d\nepoch %d\nbroken %d\n",
			s.Messages, s.Bytes, s.Publishers, s.Subscribers, s.LagMax, s.Lost, s.Reaped, s.Epoch, b2i(s.Broken))
	case kindError:
		if e := ch.LastError(); e != "" {
			b.WriteString(e)
			b.WriteByte('\n')
		}
		if ch.Broken() {
			fmt.Fprintf(&b, "broken: %s\n", ch.brokenReason())
		}
	}
	return []byte(b.String())
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (ch *Channel) brokenReason() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.brokenAt
}

// errno maps a channel error to the errno a file client sees; a corrupt
// ring marks the channel broken.
func (ch *Channel) errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, channel.ErrWouldBlock):
		return syscall.EAGAIN
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.Is(err, channel.ErrTooLarge):
		return syscall.EMSGSIZE
	case errors.Is(err, channel.ErrNoSlot):
		return syscall.EUSERS
	case errors.Is(err, channel.ErrExclusive):
		return syscall.EBUSY
	case errors.Is(err, channel.ErrEvicted):
		return syscall.ENOTCONN
	case errors.Is(err, channel.ErrClosed):
		return syscall.EBADF
	case errors.Is(err, channel.ErrCorrupt), errors.Is(err, channel.ErrBadMagic), errors.Is(err, channel.ErrVersion):
		ch.markBroken(err)
		return syscall.EIO
	}
	ch.log("io").WithError(err).Warn("unexpected channel error")
	return syscall.EIO
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
type ctlHandle struct{ ch *Channel }

var _ = (gofs.FileWriter)((*ctlHandle)(nil))

func (h *ctlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := h.ch.Reconfigure(string(data)); errno != 0 {
		return 0, errno
	}
	return uint32(len(data)), 0
}

// ringHandle serves the ring file. With passthrough the kernel reads,
// writes and maps the shm file directly; otherwise reads and writes come
// through the agent (mmap then needs the backing file: see config).
type ringHandle struct {
	ch   *Channel
	seg  *shm.Segment
	size int64
	once sync.Once
}

var (
	_ = (gofs.FilePassthroughFder)((*ringHandle)(nil))
	_ = (gofs.FileReader)((*ringHandle)(nil))
	_ = (gofs.FileWriter)((*ringHandle)(nil))
	_ = (gofs.FileReleaser)((*ringHandle)(nil))
)

func (h *ringHandle) PassthroughFd() (int, bool) {
	f := h.seg.File()
	if f == nil {
		return 0, false
	}
	return int(f.Fd()), true
}

func (h *ringHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	mem := h.seg.Bytes()
	if mem == nil {
		return nil, syscall.EIO
	}
	if off < 0 || off >= h.size {
		return fuse.ReadResultData(nil), 0
	}
	end := min(h.size, off+int64(len(dest)))
	n := copy(dest, mem[off:end])
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *ringHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	mem := h.seg.Bytes()
	if mem == nil {
		return 0, syscall.EIO
	}
	if off < 0 || off+int64(len(data)) > h.size {
		return 0, syscall.EFBIG
	}
	return uint32(copy(mem[off:], data)), 0
}

func (h *ringHandle) Release(ctx context.Context) syscall.Errno {
	h.once.Do(h.ch.release)
	return 0
}

// pubHandle publishes what is written: one message per write(2), or one
// per line.
type pubHandle struct {
	ch       *Channel
	lines    bool
	nonblock bool
	max      int

	mu      sync.Mutex
	pub     *channel.Publisher
	partial []byte
	closed  bool
}

var (
	_ = (gofs.FileWriter)((*pubHandle)(nil))
	_ = (gofs.FileFlusher)((*pubHandle)(nil))
	_ = (gofs.FileReleaser)((*pubHandle)(nil))
)

func (h *pubHandle) publish(ctx context.Context, msg []byte) syscall.Errno {
	if len(msg) > h.max {
		return syscall.EMSGSIZE
	}
	var err error
	if h.nonblock {
		err = h.pub.TryPublish(msg)
	} else {
		err = h.pub.Publish(ctx, msg)
	}
	if err != nil {
		return h.ch.errno(err)
	}
	h.ch.wrote.Add(uint64(len(msg)))
	return 0
}

func (h *pubHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, syscall.EBADF
	}
	if !h.lines {
		if errno := h.publish(ctx, data); errno != 0 {
			return 0, errno
		}
		return uint32(len(data)), 0
	}
	// Line mode: bytes up to each newline complete a message (the newline
	// is not part of it). On an error, report the bytes consumed so far so
	// a retry does not publish a line twice.
	done := 0
	for done < len(data) {
		i := indexByte(data[done:], '\n')
		if i < 0 {
			if len(h.partial)+len(data)-done > h.max {
				h.partial = h.partial[:0]
				return partialResult(done, syscall.EMSGSIZE)
			}
			h.partial = append(h.partial, data[done:]...)
			done = len(data)
			break
		}
		line := data[done : done+i]
		if len(h.partial) > 0 {
			line = append(h.partial, line...)
		}
		if errno := h.publish(ctx, line); errno != 0 {
			if errno == syscall.EMSGSIZE {
				h.partial = h.partial[:0] // drop the oversized line, keep going next time
				done += i + 1
			}
			return partialResult(done, errno)
		}
		h.partial = h.partial[:0]
		done += i + 1
	}
	return uint32(done), 0
}

func partialResult(done int, errno syscall.Errno) (uint32, syscall.Errno) {
	if done > 0 {
		return uint32(done), 0
	}
	return 0, errno
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// Flush runs at every close(2): a trailing partial line is published then.
func (h *pubHandle) Flush(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lines || len(h.partial) == 0 || h.closed {
		return 0
	}
	msg := h.partial
	h.partial = nil
	return h.publish(ctx, msg)
}

func (h *pubHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0
	}
	h.closed = true
	h.pub.Close()
	h.ch.release()
	return 0
}

// subHandle delivers messages: in line mode as many whole messages as fit
// the read buffer, each ending in a newline; in message mode exactly one
// raw message per read.
type subHandle struct {
	ch       *Channel
	lines    bool
	nonblock bool
	max      int

	mu      sync.Mutex
	sub     *channel.Subscriber // pubsub
	rd      *channel.Reader     // stream
	scratch []byte
	pending []byte // a message taken from the ring but not yet delivered
	has     bool
	closed  bool
}

var (
	_ = (gofs.FileReader)((*subHandle)(nil))
	_ = (gofs.FileReleaser)((*subHandle)(nil))
)

func (h *subHandle) next(ctx context.Context, block bool) ([]byte, error) {
	if h.has {
		return h.pending, nil
	}
	var msg []byte
	var err error
	switch {
	case h.sub != nil && block:
		msg, err = h.sub.Next(ctx, h.scratch)
	case h.sub != nil:
		msg, err = h.sub.TryNext(h.scratch)
	case block:
		msg, err = h.rd.Next(ctx, h.scratch)
	default:
		msg, err = h.rd.TryNext(h.scratch)
	}
	if err != nil {
		return nil, err
	}
	h.scratch = msg[:0]
	h.pending, h.has = msg, true
	return msg, nil
}

func (h *subHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, syscall.EBADF
	}
	out := dest[:0]
	for {
		first := len(out) == 0
		// A stream message is gone from the queue once taken: after the
		// first one, take another only if it is sure to fit.
		if !first && h.rd != nil && !h.has && len(dest)-len(out) < h.max+1 {
			break
		}
		msg, err := h.next(ctx, first && !h.nonblock)
		if err != nil {
			if !first {
				break // deliver what we have; the error comes back next time
			}
			return nil, h.ch.errno(err)
		}
		if !h.lines {
			if len(msg) == 0 {
				h.has = false // a 0-byte read would mean end of file: skip it
				continue
			}
			if len(msg) > len(dest) {
				return nil, syscall.EMSGSIZE
			}
			h.has = false
			return fuse.ReadResultData(append(out, msg...)), 0
		}
		need := len(msg)
		nl := len(msg) == 0 || msg[len(msg)-1] != '\n'
		if nl {
			need++
		}
		if need > len(dest)-len(out) {
			if first {
				return nil, syscall.EMSGSIZE
			}
			break
		}
		out = append(out, msg...)
		if nl {
			out = append(out, '\n')
		}
		h.has = false
	}
	return fuse.ReadResultData(out), 0
}

func (h *subHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0
	}
	h.closed = true
	if h.sub != nil {
		h.ch.lost.Add(h.sub.Lost())
		h.sub.Close()
	} else {
		h.rd.Close()
	}
	h.ch.release()
	return 0
}
