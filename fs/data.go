package fs

import (
	"bytes"
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// hold is an open ring or data file's hold on its channel: the registry
// counts it (the channel is busy while it is open).
type hold struct {
	root *Root
	ch   *registry.Channel
	h    *registry.Handle
	cm   *closeMark
}

func (n *fileNode) hold() (hold, syscall.Errno) {
	h, err := n.ch.Open()
	if err != nil {
		return hold{}, toErrno(err)
	}
	return hold{root: n.root, ch: n.ch, h: h, cm: new(closeMark)}, 0
}

// errno maps an error of the ring to what the file client sees; a corrupt
// ring marks the channel broken (registry.Channel.NoteError).
func (o hold) errno(err error) syscall.Errno {
	e := toErrno(o.ch.NoteError(err))
	if e == syscall.EIO && !o.ch.Broken() {
		o.root.log.WithFields(logrus.Fields{"ns": o.ch.NS, "channel": o.ch.Name, "op": "io"}).WithError(err).Warn("unexpected channel error")
	}
	return e
}

// guarded runs f, which touches the ring's memory, under the channel's
// fault guard (registry.Channel.Guard): a ring shrunk under the agent's
// mapping makes the call fail with EIO and the channel broken instead of
// crashing the agent.
func (o hold) guarded(f func() syscall.Errno) syscall.Errno {
	var errno syscall.Errno
	if err := o.ch.Guard(func() error { errno = f(); return nil }); err != nil {
		return o.errno(err)
	}
	return errno
}

func (n *fileNode) openRing() (gofs.FileHandle, uint32, syscall.Errno) {
	o, errno := n.hold()
	if errno != 0 {
		return nil, 0, errno
	}
	// FOPEN_DIRECT_IO beside passthrough: the kernel still maps the shm
	// file directly, but sends read(2) and write(2) here, where they are
	// bounded by the ring's size; passed through, a write past the end
	// would grow the backing file without limit.
	return &ringHandle{hold: o, size: int64(o.h.Ring().Config().Size())}, fuse.FOPEN_DIRECT_IO, 0
}

// tenantIdle is how the agent waits for a tenant's read or write: it
// sleeps at once, the ordinary way, so that however many tenants wait,
// none of them holds one of the agent's Go processors (channel.Idle.NoHold).
var tenantIdle = channel.Idle{NoHold: true}

func (n *fileNode) openPub(nonblock bool) (gofs.FileHandle, uint32, syscall.Errno) {
	o, errno := n.hold()
	if errno != 0 {
		return nil, 0, errno
	}
	var p *channel.Publisher
	err := o.ch.Guard(func() (err error) {
		p, err = o.h.NewPublisher(channel.PublisherOptions{Queue: n.spec.queue, Idle: tenantIdle})
		return err
	})
	if err != nil {
		o.h.Close()
		return nil, 0, o.errno(err)
	}
	h := &pubHandle{hold: o, pub: p, lines: n.spec.kind == kindPubLines, nonblock: nonblock, max: int(o.h.Ring().Config().MaxMessage)}
	return h, pubOpenFlags, 0
}

func (n *fileNode) openSub(ctx context.Context, nonblock bool) (gofs.FileHandle, uint32, syscall.Errno) {
	o, errno := n.hold()
	if errno != 0 {
		return nil, 0, errno
	}
	cfg := o.h.Ring().Config()
	h := &subHandle{hold: o, lines: n.spec.kind == kindSub, nonblock: nonblock, max: int(cfg.MaxMessage)}
	err := o.ch.Guard(func() (err error) {
		if cfg.Type == channel.TypeStream {
			h.rd, err = o.h.NewReader(channel.ReaderOptions{Queue: n.spec.queue, Idle: tenantIdle})
			return err
		}
		from := channel.StartNewest
		if n.spec.oldest {
			from = channel.StartOldest
		}
		h.sub, err = o.h.NewSubscriber(channel.SubscriberOptions{From: from, Idle: tenantIdle})
		return err
	})
	if err != nil {
		o.h.Close()
		return nil, 0, o.errno(err)
	}
	if h.sub != nil {
		h.tgid = callerTgid(ctx)
		n.root.readers.add(n.ch, h)
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// pubOpenFlags keep a writer waiting for room out of the way of the
// file's other writers. The kernel holds the inode lock around every
// write to a FUSE file, exclusively unless the file is opened with
// FOPEN_PARALLEL_DIRECT_WRITES and the write ends within the file's size;
// an exclusive holder waiting in the agent would leave every other writer
// of the file asleep uninterruptibly (even with O_NONBLOCK, even after
// SIGKILL). So: parallel direct writes, FOPEN_STREAM (the kernel passes
// position 0 for every write) and a size of pubSize (fileAttr), within
// which every write ends. Writes with O_APPEND and truncation (O_TRUNC)
// still take the lock exclusively: docs/filesystem.md says so.
const pubOpenFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES | fuse.FOPEN_STREAM

// pubSize is the size the pub files report.
const pubSize = 1 << 62

// ringHandle serves the ring file. With passthrough the kernel maps the
// shm file directly; reads and writes always come through the agent
// (without passthrough, mmap needs the backing file: see config).
type ringHandle struct {
	hold
	size    int64
	backing *os.File // opened for passthrough, closed at release
}

var (
	_ = (gofs.FilePassthroughFder)((*ringHandle)(nil))
	_ = (gofs.FileReader)((*ringHandle)(nil))
	_ = (gofs.FileWriter)((*ringHandle)(nil))
	_ = (gofs.FileFlusher)((*ringHandle)(nil))
	_ = (gofs.FileReleaser)((*ringHandle)(nil))
)

// PassthroughFd opens the shm file for the kernel, which keeps its own
// reference once go-fuse registers it; the agent holds no descriptor per
// idle channel.
func (h *ringHandle) PassthroughFd() (int, bool) {
	f, err := h.h.Backing()
	if err != nil {
		return 0, false
	}
	h.backing = f
	return int(f.Fd()), true
}

func (h *ringHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.use()
	mem := h.h.Memory()
	if mem == nil {
		return nil, syscall.EIO
	}
	if off < 0 || off >= h.size {
		return fuse.ReadResultData(nil), 0
	}
	end := min(h.size, off+int64(len(dest)))
	n := 0
	if errno := h.guarded(func() syscall.Errno { n = copy(dest, mem[off:end]); return 0 }); errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *ringHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.use()
	mem := h.h.Memory()
	if mem == nil {
		return 0, syscall.EIO
	}
	if off < 0 || off+int64(len(data)) > h.size {
		return 0, syscall.EFBIG
	}
	n := 0
	errno := h.guarded(func() syscall.Errno { n = copy(mem[off:], data); return 0 })
	return uint32(n), errno
}

func (h *ringHandle) Flush(ctx context.Context) syscall.Errno {
	h.flush()
	return 0
}

func (h *ringHandle) Release(ctx context.Context) syscall.Errno {
	if h.backing != nil {
		h.backing.Close()
	}
	h.h.Close()
	h.released()
	return 0
}

// pubHandle publishes what is written: one message per write(2), or one
// per line.
type pubHandle struct {
	hold
	lines    bool
	nonblock bool
	max      int

	mu      sync.Mutex
	pub     *channel.Publisher
	partial []byte // publines: the line so far, at most max bytes
	skip    bool   // publines: dropping an over-long line up to its newline
	closed  bool
}

// keepPartial is the largest partial-line buffer an idle publines file
// keeps between lines.
const keepPartial = 4096

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
		return h.errno(err)
	}
	return 0
}

func (h *pubHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, syscall.EBADF
	}
	h.use()
	if !h.lines {
		if errno := h.guarded(func() syscall.Errno { return h.publish(ctx, data) }); errno != 0 {
			return 0, errno
		}
		return uint32(len(data)), 0
	}
	var n uint32
	errno := h.guarded(func() (errno syscall.Errno) { n, errno = h.writeLines(ctx, data); return errno })
	return n, errno
}

// writeLines: bytes up to each newline complete a message (the newline is
// not part of it). On an error, the bytes consumed so far are reported
// (the error comes with the next write), so a retry does not publish a
// line twice. A line longer than max_message fails with EMSGSIZE and is
// dropped up to its newline, however many writes it spans: its tail never
// becomes a message of its own.
func (h *pubHandle) writeLines(ctx context.Context, data []byte) (uint32, syscall.Errno) {
	done := 0
	for done < len(data) {
		i := bytes.IndexByte(data[done:], '\n')
		if h.skip {
			if i < 0 {
				return uint32(len(data)), 0
			}
			h.skip = false
			done += i + 1
			continue
		}
		if i < 0 {
			if len(h.partial)+len(data)-done > h.max {
				return h.overlong(done)
			}
			h.partial = append(h.partial, data[done:]...)
			break
		}
		if len(h.partial)+i > h.max {
			return h.overlong(done)
		}
		line := data[done : done+i]
		if len(h.partial) > 0 {
			line = append(h.partial, line...)
		}
		if errno := h.publish(ctx, line); errno != 0 {
			return partialResult(done, errno)
		}
		h.dropPartial()
		done += i + 1
	}
	return uint32(len(data)), 0
}

// overlong refuses the line that starts at data[done:] (with what is kept
// of it from earlier writes): the lines before it are reported written,
// and the write that starts with it gets EMSGSIZE and drops it.
func (h *pubHandle) overlong(done int) (uint32, syscall.Errno) {
	if done > 0 {
		return uint32(done), 0
	}
	h.dropPartial()
	h.skip = true
	return 0, syscall.EMSGSIZE
}

// dropPartial empties the partial line, keeping its buffer only if small.
func (h *pubHandle) dropPartial() {
	if cap(h.partial) > keepPartial {
		h.partial = nil
		return
	}
	h.partial = h.partial[:0]
}

func partialResult(done int, errno syscall.Errno) (uint32, syscall.Errno) {
	if done > 0 {
		return uint32(done), 0
	}
	return 0, errno
}

// Flush runs at every close(2): a trailing partial line is published then.
func (h *pubHandle) Flush(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flush()
	h.skip = false
	if !h.lines || len(h.partial) == 0 || h.closed {
		return 0
	}
	msg := h.partial
	h.partial = nil
	return h.guarded(func() syscall.Errno { return h.publish(ctx, msg) })
}

func (h *pubHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0
	}
	h.closed = true
	h.guarded(func() syscall.Errno { h.pub.Close(); return 0 })
	h.h.Close()
	h.released()
	return 0
}

// subHandle delivers messages: in line mode as many whole messages as fit
// the read buffer, each ending in a newline, a message longer than the
// buffer continued across reads; in message mode exactly one raw message
// per read(2). It keeps no buffer sized for the channel's largest message:
// only the message being delivered, and between messages at most
// keepScratch bytes.
type subHandle struct {
	hold
	lines    bool
	nonblock bool
	max      int

	mu       sync.Mutex
	sub      *registry.Subscriber // pubsub: its losses count in the channel's stats
	rd       *channel.Reader      // stream
	scratch  []byte
	pending  []byte // a message taken from the ring, newline included in line mode
	sent     int    // bytes of pending already delivered
	has      bool
	boundary bool // message mode: a message just ended a full piece (see Read)
	closed   bool

	tgid uint32        // the process that opened it (pubsub), for lost
	lost atomic.Uint64 // its subscriber's losses so far, for lost
}

// keepScratch is the largest message buffer a reader keeps between
// messages.
const keepScratch = 64 << 10

var (
	_ = (gofs.FileReader)((*subHandle)(nil))
	_ = (gofs.FileFlusher)((*subHandle)(nil))
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
	if h.sub != nil {
		h.lost.Store(h.sub.Lost())
	}
	if err != nil {
		return nil, err
	}
	if h.lines && (len(msg) == 0 || msg[len(msg)-1] != '\n') {
		msg = append(msg, '\n')
	}
	h.scratch = msg[:0]
	h.pending, h.has, h.sent = msg, true, 0
	return msg, nil
}

// delivered ends the pending message.
func (h *subHandle) delivered() {
	h.has, h.sent, h.pending = false, 0, nil
	if cap(h.scratch) > keepScratch {
		h.scratch = nil
	}
}

func (h *subHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, syscall.EBADF
	}
	h.use()
	var res fuse.ReadResult
	errno := h.guarded(func() (errno syscall.Errno) {
		if !h.lines {
			res, errno = h.readMsg(ctx, dest)
		} else {
			res, errno = h.readLines(ctx, dest)
		}
		return errno
	})
	return res, errno
}

// readLines delivers as many whole messages as fit (see subHandle).
func (h *subHandle) readLines(ctx context.Context, dest []byte) (fuse.ReadResult, syscall.Errno) {
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
			return nil, h.errno(err)
		}
		rest := msg[h.sent:]
		if room := len(dest) - len(out); len(rest) > room {
			if first { // too long for this read: continue it in the next
				h.sent += room
				out = append(out, rest[:room]...)
			}
			break
		}
		out = append(out, rest...)
		h.delivered()
	}
	return fuse.ReadResultData(out), 0
}

// readMsg delivers one message. The kernel hands a read(2) larger than
// maxIO to the agent in pieces of maxIO bytes, for as long as they come
// back full; so a message larger than a piece is continued across the
// pieces, and a message that fits neither the buffer nor a piece gives
// EMSGSIZE. After a message that ended a full piece exactly, the next piece
// (of the same read(2), or the next read(2)) gets EINTR rather than the
// next message, which would otherwise be glued to it.
func (h *subHandle) readMsg(ctx context.Context, dest []byte) (fuse.ReadResult, syscall.Errno) {
	if h.boundary {
		h.boundary = false
		return nil, syscall.EINTR
	}
	for {
		msg, err := h.next(ctx, !h.nonblock)
		if err != nil {
			return nil, h.errno(err)
		}
		if len(msg) == 0 {
			h.delivered() // a 0-byte read would mean end of file: skip it
			continue
		}
		if h.sent == 0 && len(msg) > len(dest) && len(dest) < maxIO {
			return nil, syscall.EMSGSIZE
		}
		n := copy(dest, msg[h.sent:])
		if h.sent += n; h.sent == len(msg) {
			h.delivered()
			h.boundary = n == maxIO
		}
		return fuse.ReadResultData(dest[:n]), 0
	}
}

// Flush does not take h.mu: a read blocked in another thread of the
// closing process holds it.
func (h *subHandle) Flush(ctx context.Context) syscall.Errno {
	h.flush()
	return 0
}

func (h *subHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0
	}
	h.closed = true
	if h.sub != nil {
		h.root.readers.remove(h.ch, h)
	}
	h.guarded(func() syscall.Errno {
		if h.sub != nil {
			h.sub.Close()
		} else {
			h.rd.Close()
		}
		return 0
	})
	h.h.Close()
	h.released()
	return 0
}
