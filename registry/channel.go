package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
)

// Channel is one ring and its metadata.
type Channel struct {
	NS, Name string
	dir      string
	reg      *Registry
	ns       *Namespace

	mu       sync.Mutex // guards the fields below
	meta     meta
	seg      *shm.Segment
	ring     *channel.Ring
	m        *mapping // seg and ring, borrowed by readers outside mu
	handles  int      // open Handles (front-end files)
	closed   bool     // removed or registry closed
	lastErr  string
	brokenAt string
	held     Usage // what the channel counts against its namespace's quota

	broken    atomic.Bool
	lastStats atomic.Pointer[Stats] // for StatsNoWait
	lost      atomic.Uint64         // messages lost by closed Subscribers of Handles
}

// DataMode derives the mode of a channel's data (its ring and data files)
// from its directory mode: whoever may read or write the channel may read
// or write its data.
func DataMode(dirMode uint32) uint32 { return dirMode & 0o666 }

func (ch *Channel) log(op string) logrus.FieldLogger {
	return ch.reg.log.WithFields(logrus.Fields{"ns": ch.NS, "channel": ch.Name, "op": op})
}

// emitLocked sends an event about ch; the caller holds ch.mu.
func (ch *Channel) emitLocked(k EventKind, reason string) {
	e := Event{Kind: k, Namespace: ch.NS, Channel: ch.Name, Reason: reason}
	if ch.ring != nil && k != Removed {
		e.Config = ch.ring.Config()
		e.Epoch = e.Config.Epoch
	}
	ch.reg.events.emit(e)
}

func (r *Registry) recoverChannel(ns *Namespace, name string) *Channel {
	dir := filepath.Join(r.dir, ns.Name, name)
	log := r.log.WithFields(logrus.Fields{"ns": ns.Name, "channel": name, "op": "recover"})
	m, err := readMeta(dir)
	if err != nil {
		log.WithError(err).Warn("channel metadata unreadable; using root 0755")
		m = meta{Mode: 0o755}
	}
	ch := &Channel{NS: ns.Name, Name: name, dir: dir, reg: r, ns: ns, meta: m}
	defer func() { ch.held = ch.recoveredCost() }()
	seg, err := ch.openRing(m, channel.HeaderLen)
	if err == nil {
		ch.ring, err = channel.Open(seg.Bytes())
		// A SysV id may have been freed and taken by another segment.
		if err == nil && m.SysV != nil && (m.Config == nil || ch.ring.Epoch() != m.Config.Epoch) {
			ch.ring.Close()
			ch.ring, err = nil, fmt.Errorf("sysv id %d now holds another ring", m.SysV.ID)
		}
		if err != nil {
			seg.Close()
		} else {
			seg.CloseFile()
			ch.seg, ch.m = seg, newMapping(seg, ch.ring)
			// The importers of the agent that died reserved room for
			// spools that this one's importers take over.
			ch.ring.ClearReservations()
		}
	}
	if err != nil {
		// Kept, not removed: the Broken event follows its Created one.
		ch.broken.Store(true)
		ch.brokenAt = fmt.Sprintf("open ring: %v", err)
		log.WithError(err).Error("channel broken: its data is no longer served; other channels are unaffected")
	}
	return ch
}

// validConfig fills defaults with a new epoch and checks cfg.
func validConfig(cfg channel.Config) (channel.Config, error) {
	cfg.Epoch = 0
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return cfg, nil
}

// format creates the channel's ring for cfg (valid, with its epoch) in
// memory of kind and installs it. The caller holds ch.mu or owns ch
// exclusively.
func (ch *Channel) format(cfg channel.Config, kind Backing) error {
	seg, ring, err := ch.makeRing(cfg, kind, ringFile)
	if err != nil {
		return err
	}
	ch.install(seg, ring)
	return nil
}

// makeRing creates ring memory of kind sized for cfg (a POSIX file named
// name in the channel's state directory) and formats it; ch is unchanged.
// A full tmpfs gives ErrNoSpace.
func (ch *Channel) makeRing(cfg channel.Config, kind Backing, name string) (*shm.Segment, *channel.Ring, error) {
	seg, err := ch.createRing(kind, name, cfg.Size())
	if errors.Is(err, shm.ErrNoSpace) {
		return nil, nil, fmt.Errorf("%w: ring of %s/%s (%d bytes): %w", ErrNoSpace, ch.NS, ch.Name, cfg.Size(), err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("registry: create ring of %s/%s: %w", ch.NS, ch.Name, err)
	}
	ring, err := channel.Format(seg.Bytes(), cfg)
	if err != nil {
		seg.Close()
		seg.Remove()
		return nil, nil, fmt.Errorf("registry: format ring of %s/%s: %w", ch.NS, ch.Name, err)
	}
	return seg, ring, nil
}

// install makes seg and ring the channel's and records them in its meta.
func (ch *Channel) install(seg *shm.Segment, ring *channel.Ring) {
	seg.CloseFile() // mapped: no descriptor per channel (Handle.Backing opens one)
	ch.seg, ch.ring, ch.m = seg, ring, newMapping(seg, ring)
	ch.meta.Config = newConfigMeta(ring.Config())
	ch.meta.SysV = nil
	if seg.Kind() == shm.SysV {
		ch.meta.SysV = &sysvMeta{Key: seg.Key(), ID: seg.ID()}
	}
	ch.syncBacking()
}

// syncBacking gives the ring memory the channel's owner and data mode, so
// a client allowed to use the channel may also map the backing file (or
// attach the SysV segment) directly; except a POSIX file under
// passthrough, which stays root's 0600 (see SetPassthrough).
func (ch *Channel) syncBacking() {
	if ch.seg == nil {
		return
	}
	uid, gid, mode := int(ch.meta.UID), int(ch.meta.GID), os.FileMode(DataMode(ch.meta.Mode))|0o600
	if ch.seg.Kind() == shm.POSIX && ch.reg.passthrough.Load() {
		uid, gid, mode = 0, 0, 0o600
	}
	if err := ch.seg.SetOwner(uid, gid, mode); err != nil {
		ch.log("owner").WithError(err).Warn("cannot give the ring memory the channel's owner and mode")
	}
}

// unmapLocked lets go of the ring, keeping its shm file; it is unmapped
// once no reader borrows it any more.
func (ch *Channel) unmapLocked() error {
	var err error
	if ch.m != nil {
		err = ch.m.release()
	}
	ch.seg, ch.ring, ch.m = nil, nil, nil
	return err
}

// destroyLocked unmaps the ring and removes its shm file.
func (ch *Channel) destroyLocked() {
	seg := ch.seg
	ch.unmapLocked()
	if seg != nil {
		seg.Remove()
	}
}

func (ch *Channel) setBrokenLocked(err error) {
	if ch.broken.CompareAndSwap(false, true) {
		ch.brokenAt = err.Error()
		ch.log("ring").WithError(err).Error("channel broken: its data is no longer served; other channels are unaffected")
		ch.emitLocked(Broken, ch.brokenAt)
	}
}

// MarkBroken marks the channel broken (once; later calls keep the first
// reason). Its Handles can no longer be opened.
func (ch *Channel) MarkBroken(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.setBrokenLocked(err)
}

// NoteError looks at an error a front end got from the channel's ring: a
// corrupt ring marks the channel broken and the error returned then also
// wraps ErrBroken. Other errors come back as they are.
func (ch *Channel) NoteError(err error) error {
	if errors.Is(err, channel.ErrCorrupt) || errors.Is(err, channel.ErrBadMagic) || errors.Is(err, channel.ErrVersion) {
		ch.MarkBroken(err)
		return fmt.Errorf("%w: %w", ErrBroken, err)
	}
	return err
}

// Broken reports whether the ring failed validation.
func (ch *Channel) Broken() bool { return ch.broken.Load() }

// BrokenReason says why the channel is broken ("" if it is not).
func (ch *Channel) BrokenReason() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.brokenAt
}

// Attr returns the channel's owner and mode.
func (ch *Channel) Attr() Attr {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.meta.attr()
}

// SetAttr changes owner or mode, persists the change and applies it to
// the backing shm file.
func (ch *Channel) SetAttr(f func(*Attr)) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return fmt.Errorf("%w: channel %s/%s", ErrNotFound, ch.NS, ch.Name)
	}
	m := ch.meta
	a := m.attr()
	f(&a)
	m.setAttr(a)
	if err := writeMeta(ch.dir, m); err != nil {
		return err
	}
	ch.meta = m
	ch.syncBacking()
	return nil
}

// Config returns the ring's configuration (zero if broken).
func (ch *Channel) Config() channel.Config {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ring == nil {
		return channel.Config{}
	}
	return ch.ring.Config()
}

// LastError returns the reason the last configuration change was refused
// ("" if none, or if a change succeeded since).
func (ch *Channel) LastError() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.lastErr
}

// RefuseChange records err as the reason a change was refused before it
// reached Reconfigure (a front end that could not even parse it).
func (ch *Channel) RefuseChange(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.lastErr = err.Error()
	ch.log("reconfigure").WithError(err).Warn("configuration rejected")
}

// busyLocked: open Handles or live members other than dead ones the
// reaper has yet to evict.
func (ch *Channel) busyLocked() bool {
	if ch.handles > 0 {
		return true
	}
	if ch.ring == nil {
		return false
	}
	lease := ch.ring.Config().Lease
	var members []channel.MemberInfo
	if err := guard(func() error { members = ch.ring.Members(); return nil }); err != nil {
		ch.setBrokenLocked(err)
		return false
	}
	for _, m := range members {
		if (m.State == channel.MemberActive || m.State == channel.MemberInit) && m.LeaseAge <= lease {
			return true
		}
	}
	return false
}

// Busy reports whether the channel has open Handles or live members.
func (ch *Channel) Busy() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.busyLocked()
}

// Handle is a front end's hold on a channel's ring (an open file): while
// any is open the channel is busy, and members made through it are
// counted by the registry.
type Handle struct {
	ch   *Channel
	ring *channel.Ring
	seg  *shm.Segment
	once sync.Once
}

// Open returns a Handle on the ring: ErrNotFound once the channel is
// removed, ErrBroken if its ring failed validation.
func (ch *Channel) Open() (*Handle, error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return nil, fmt.Errorf("%w: channel %s/%s", ErrNotFound, ch.NS, ch.Name)
	}
	if ch.broken.Load() || ch.ring == nil {
		return nil, fmt.Errorf("%w: %s/%s: %s", ErrBroken, ch.NS, ch.Name, ch.brokenAt)
	}
	ch.handles++
	return &Handle{ch: ch, ring: ch.ring, seg: ch.seg}, nil
}

// Ring returns the mapped ring.
func (h *Handle) Ring() *channel.Ring { return h.ring }

// Backing opens the ring's shm file, for a front end that serves it
// directly (FUSE passthrough); the caller closes it. A SysV ring has no
// file (an error wrapping shm.ErrNotShared). The registry holds no
// descriptor per channel.
func (h *Handle) Backing() (*os.File, error) { return h.seg.OpenFile() }

// Memory returns the ring's mapped bytes.
func (h *Handle) Memory() []byte { return h.seg.Bytes() }

// Close releases the Handle; later calls do nothing.
func (h *Handle) Close() {
	h.once.Do(func() {
		h.ch.mu.Lock()
		h.ch.handles--
		h.ch.mu.Unlock()
	})
}

// NewPublisher adds a publisher member to the ring.
func (h *Handle) NewPublisher(o channel.PublisherOptions) (*channel.Publisher, error) {
	p, err := h.ring.NewPublisher(o)
	return p, h.ch.NoteError(err)
}

// NewReader adds a stream reader member to the ring.
func (h *Handle) NewReader(o channel.ReaderOptions) (*channel.Reader, error) {
	rd, err := h.ring.NewReader(o)
	return rd, h.ch.NoteError(err)
}

// Subscriber is a channel.Subscriber whose losses the registry counts in
// the channel's stats after it closes.
type Subscriber struct {
	*channel.Subscriber
	ch   *Channel
	once sync.Once
}

// NewSubscriber adds a pubsub subscriber member to the ring.
func (h *Handle) NewSubscriber(o channel.SubscriberOptions) (*Subscriber, error) {
	s, err := h.ring.NewSubscriber(o)
	if err != nil {
		return nil, h.ch.NoteError(err)
	}
	return &Subscriber{Subscriber: s, ch: h.ch}, nil
}

// Close ends the subscription and adds its losses to the channel's.
func (s *Subscriber) Close() error {
	var err error
	s.once.Do(func() {
		s.ch.lost.Add(s.Lost())
		err = s.Subscriber.Close()
	})
	return err
}

// Reconfigure applies c if the channel is idle and has never carried a
// message: the ring is re-created with a new epoch. A change that leaves
// every value (and the backing) as it is does nothing and succeeds, even
// on a channel in use, so that applying the same settings again is safe.
// An invalid change gives ErrInvalidConfig and leaves the channel as it
// was; a channel in use or that carried messages gives ErrBusy. The reason
// of a refusal is kept for LastError. It returns the new configuration.
func (ch *Channel) Reconfigure(c Change) (channel.Config, error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return channel.Config{}, fmt.Errorf("%w: channel %s/%s", ErrNotFound, ch.NS, ch.Name)
	}
	if ch.ring == nil {
		return channel.Config{}, fmt.Errorf("%w: %s/%s", ErrBroken, ch.NS, ch.Name)
	}
	log := ch.log("reconfigure")
	cur := ch.ring.Config()
	cfg, err := c.Apply(cur)
	if err != nil {
		ch.lastErr = err.Error()
		log.WithError(err).Warn("configuration rejected")
		return cur, err
	}
	if ch.noopLocked(c, cur, cfg) {
		ch.lastErr = ""
		return cur, nil
	}
	if ch.busyLocked() || ch.carriedLocked() {
		ch.lastErr = "channel is in use or has carried messages: configuration can only change on a fresh, idle channel"
		log.Warn(ch.lastErr)
		return cur, fmt.Errorf("%w: %s", ErrBusy, ch.lastErr)
	}
	kind := ch.backingLocked()
	if c.Backing != nil {
		kind = *c.Backing
	}
	held := cost(cfg)
	if err := ch.ns.book.reserve(ch.NS, held, ch.held); err != nil {
		ch.lastErr = err.Error()
		log.WithError(err).Warn("configuration refused")
		return cur, err
	}
	// The new ring is made beside the old one and swapped in only once it
	// exists: a change that does not fit leaves the channel as it was.
	seg, ring, err := ch.makeRing(cfg, kind, ringFile+".new")
	if err == nil && seg.Kind() == shm.POSIX {
		if err = seg.Rename(ringFile); err != nil {
			ring.Close()
			seg.Close()
			seg.Remove()
		}
	}
	if err != nil {
		ch.ns.book.move(held, ch.held)
		ch.lastErr = err.Error()
		log.WithError(err).Warn("configuration not applied; the channel keeps its ring")
		return cur, err
	}
	ch.held = held
	old := ch.meta
	oldSeg := ch.seg
	ch.unmapLocked()
	// A POSIX ring was replaced by the rename (Remove then finds another
	// file at its path and removes nothing); a SysV one is removed here.
	oldSeg.Remove()
	ch.install(seg, ring)
	if err := writeMeta(ch.dir, ch.meta); err != nil {
		ch.meta = old
		log.WithError(err).Error("persist metadata")
	}
	ch.lastErr = ""
	log.WithField("epoch", ch.ring.Epoch()).Info("channel reconfigured")
	ch.emitLocked(Reconfigured, "")
	return ch.ring.Config(), nil
}

// noopLocked reports whether change c took cur to cfg without changing a
// value or the backing: nothing to re-create.
func (ch *Channel) noopLocked(c Change, cur, cfg channel.Config) bool {
	cfg.Epoch = cur.Epoch
	return cfg == cur && (c.Backing == nil || *c.Backing == ch.backingLocked())
}

// Owner returns who created the channel (CreateOptions.Owner; "" for a
// front end that records none, such as mkdir).
func (ch *Channel) Owner() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.meta.Owner
}

// carriedLocked reports whether any queue has ever had a message.
func (ch *Channel) carriedLocked() bool {
	carried := false
	err := guard(func() error {
		for q := 0; q < ch.ring.Queues(); q++ {
			carried = carried || ch.ring.QueueStats(q).Tail.Seq() != 0
		}
		return nil
	})
	return carried || err != nil // a ring that faults is not re-created under its users
}

func (ch *Channel) backingLocked() Backing {
	if ch.meta.SysV != nil {
		return BackingSysV
	}
	return BackingPOSIX
}

// recoveredCost is what a recovered channel counts against its quota: its
// ring's, or for a broken one what its metadata recorded.
func (ch *Channel) recoveredCost() Usage {
	switch {
	case ch.ring != nil:
		return cost(ch.ring.Config())
	case ch.meta.Config != nil:
		return cost(channel.Config{Type: ch.meta.Config.Type, Capacity: ch.meta.Config.Capacity, MemberSlots: ch.meta.Config.MemberSlots})
	}
	return Usage{Channels: 1}
}
