package fs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
)

// Registry errors; each is also a syscall.Errno so the FUSE layer returns it as is.
var (
	ErrName     = syscall.EINVAL    // invalid namespace or channel name
	ErrExists   = syscall.EEXIST    // namespace or channel exists
	ErrNotFound = syscall.ENOENT    // no such namespace or channel
	ErrBusy     = syscall.EBUSY     // channel in use
	ErrNotEmpty = syscall.ENOTEMPTY // namespace still has channels
)

const (
	metaFile = "meta.json"
	ringFile = "ring"
	// MaxNameLen bounds namespace and channel names.
	MaxNameLen = 63
)

// ValidName reports whether name may name a namespace or channel:
// [A-Za-z0-9._-], 1 to 63 characters, not starting with '.'.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Meta is what StateDir keeps beside a namespace or channel (meta.json):
// the owner and mode of its directory and, for channels, the configuration
// it was created with (the ring header stays authoritative).
type Meta struct {
	UID    uint32      `json:"uid"`
	GID    uint32      `json:"gid"`
	Mode   uint32      `json:"mode"` // permission bits of the directory
	Config *ConfigMeta `json:"config,omitempty"`
}

// ConfigMeta is channel.Config as stored in meta.json.
type ConfigMeta struct {
	Type        string `json:"type"`
	Policy      string `json:"policy"`
	Capacity    uint64 `json:"capacity"`
	MaxMessage  uint32 `json:"max_message"`
	MemberSlots uint32 `json:"member_slots"`
	Lease       string `json:"lease"`
	Epoch       uint64 `json:"epoch"`
}

func configMeta(c channel.Config) *ConfigMeta {
	return &ConfigMeta{
		Type: c.Type.String(), Policy: c.Policy.String(), Capacity: c.Capacity,
		MaxMessage: c.MaxMessage, MemberSlots: c.MemberSlots, Lease: c.Lease.String(), Epoch: c.Epoch,
	}
}

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	StateDir string         // tmpfs directory for rings and metadata
	Defaults channel.Config // configuration of new channels (zero fields: channel defaults)
	Log      *logrus.Logger // nil: logrus.StandardLogger()
}

// Registry holds every namespace and channel of a node and their state in
// StateDir: <StateDir>/<ns>/meta.json and <StateDir>/<ns>/<ch>/{ring,meta.json}.
// Everything survives an agent restart because StateDir is on tmpfs.
type Registry struct {
	dir      string
	defaults channel.Config
	log      *logrus.Logger

	mu  sync.Mutex
	nss map[string]*Namespace

	passthrough atomic.Bool
	ptOnce      sync.Once
	ptKnown     chan struct{} // closed by the first SetPassthrough
}

// SetPassthrough records whether the kernel serves the ring files by FUSE
// passthrough (shown as "passthrough 1" in each channel's config).
func (r *Registry) SetPassthrough(on bool) {
	r.passthrough.Store(on)
	r.ptOnce.Do(func() { close(r.ptKnown) })
}

// ptWait bounds how long Passthrough waits for Mount to have negotiated.
const ptWait = 5 * time.Second

// Passthrough reports what SetPassthrough recorded. The kernel may send
// requests (a client reading config) as soon as the mount exists, before
// Mount has seen the negotiated flags and called SetPassthrough: such a
// caller waits for it, briefly (Mount's own requests never ask).
func (r *Registry) Passthrough() bool {
	select {
	case <-r.ptKnown:
	default: // only before Mount has returned: no timer otherwise
		t := time.NewTimer(ptWait)
		defer t.Stop()
		select {
		case <-r.ptKnown:
		case <-t.C:
		}
	}
	return r.passthrough.Load()
}

// Namespace is a directory of channels.
type Namespace struct {
	Name string
	reg  *Registry

	mu       sync.Mutex // guards meta, channels, removed
	meta     Meta
	channels map[string]*Channel
	removed  bool
}

// NewRegistry creates StateDir if needed. Call Load to recover what it holds.
func NewRegistry(o RegistryOptions) (*Registry, error) {
	if o.StateDir == "" {
		return nil, fmt.Errorf("fs: empty state directory")
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("fs: state directory: %w", err)
	}
	def := o.Defaults
	def.Epoch = 0
	if err := def.WithDefaults().Validate(); err != nil {
		return nil, fmt.Errorf("fs: default channel config: %w", err)
	}
	log := o.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Registry{dir: o.StateDir, defaults: def, log: log, nss: map[string]*Namespace{}, ptKnown: make(chan struct{})}, nil
}

// StateDir returns the state directory.
func (r *Registry) StateDir() string { return r.dir }

// Load recovers every namespace and channel found in StateDir. Existing
// rings are opened, never re-formatted; a ring that fails validation is
// kept as a broken channel (EIO on its files) so nothing is lost.
func (r *Registry) Load() error {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("fs: read state directory: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !ValidName(e.Name()) {
			continue
		}
		nsDir := filepath.Join(r.dir, e.Name())
		m, err := readMeta(nsDir)
		if err != nil {
			r.log.WithFields(logrus.Fields{"ns": e.Name(), "op": "recover"}).WithError(err).Warn("namespace metadata unreadable; using root 0755")
			m = Meta{Mode: 0o755}
		}
		ns := &Namespace{Name: e.Name(), reg: r, meta: m, channels: map[string]*Channel{}}
		chs, err := os.ReadDir(nsDir)
		if err != nil {
			return fmt.Errorf("fs: read %s: %w", nsDir, err)
		}
		for _, c := range chs {
			if !c.IsDir() || !ValidName(c.Name()) {
				continue
			}
			ch := r.recoverChannel(ns, c.Name())
			ns.channels[c.Name()] = ch
		}
		r.mu.Lock()
		r.nss[ns.Name] = ns
		r.mu.Unlock()
		r.log.WithFields(logrus.Fields{"ns": ns.Name, "op": "recover"}).Infof("recovered namespace with %d channels", len(ns.channels))
	}
	return nil
}

func (r *Registry) recoverChannel(ns *Namespace, name string) *Channel {
	dir := filepath.Join(r.dir, ns.Name, name)
	log := r.log.WithFields(logrus.Fields{"ns": ns.Name, "channel": name, "op": "recover"})
	m, err := readMeta(dir)
	if err != nil {
		log.WithError(err).Warn("channel metadata unreadable; using root 0755")
		m = Meta{Mode: 0o755}
	}
	ch := &Channel{NS: ns.Name, Name: name, dir: dir, reg: r, meta: m}
	seg, err := shm.OpenPOSIX(filepath.Join(dir, ringFile), channel.HeaderLen)
	if err != nil {
		ch.setBroken(fmt.Errorf("open ring: %w", err))
		return ch
	}
	ring, err := channel.Open(seg.Bytes())
	if err != nil {
		seg.Close()
		ch.setBroken(fmt.Errorf("open ring: %w", err))
		return ch
	}
	ch.seg, ch.ring = seg, ring
	return ch
}

func readMeta(dir string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, metaFile), err)
	}
	m.Mode &= 0o7777
	return m, nil
}

// writeMeta replaces meta.json atomically (write and rename).
func writeMeta(dir string, m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, metaFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("fs: write metadata: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaFile)); err != nil {
		return fmt.Errorf("fs: write metadata: %w", err)
	}
	return nil
}

// Namespaces returns the namespaces sorted by name.
func (r *Registry) Namespaces() []*Namespace {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Namespace, 0, len(r.nss))
	for _, ns := range r.nss {
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Namespace returns the namespace name, or nil.
func (r *Registry) Namespace(name string) *Namespace {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nss[name]
}

// Channels returns every channel of every namespace.
func (r *Registry) Channels() []*Channel {
	var out []*Channel
	for _, ns := range r.Namespaces() {
		out = append(out, ns.Channels()...)
	}
	return out
}

// CreateNamespace makes namespace name owned by uid:gid with mode.
func (r *Registry) CreateNamespace(name string, uid, gid, mode uint32) (*Namespace, error) {
	if !ValidName(name) {
		return nil, ErrName
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nss[name] != nil {
		return nil, ErrExists
	}
	dir := filepath.Join(r.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("fs: create namespace %s: %w", name, err)
	}
	m := Meta{UID: uid, GID: gid, Mode: mode & 0o7777}
	if err := writeMeta(dir, m); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ns := &Namespace{Name: name, reg: r, meta: m, channels: map[string]*Channel{}}
	r.nss[name] = ns
	r.log.WithFields(logrus.Fields{"ns": name, "op": "mkdir"}).Info("namespace created")
	return ns, nil
}

// RemoveNamespace removes an empty namespace.
func (r *Registry) RemoveNamespace(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ns := r.nss[name]
	if ns == nil {
		return ErrNotFound
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(ns.channels) > 0 {
		return ErrNotEmpty
	}
	if err := os.RemoveAll(filepath.Join(r.dir, name)); err != nil {
		return fmt.Errorf("fs: remove namespace %s: %w", name, err)
	}
	ns.removed = true
	delete(r.nss, name)
	r.log.WithFields(logrus.Fields{"ns": name, "op": "rmdir"}).Info("namespace removed")
	return nil
}

// Close unmaps every ring; the shm files stay in StateDir for the next agent.
func (r *Registry) Close() error {
	var errs []error
	for _, ch := range r.Channels() {
		ch.mu.Lock()
		if ch.ring != nil {
			ch.ring.Close()
			ch.ring = nil
		}
		if ch.seg != nil {
			if err := ch.seg.Close(); err != nil {
				errs = append(errs, err)
			}
			ch.seg = nil
		}
		ch.closed = true
		ch.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Reap evicts dead members of every channel and refreshes the agent
// heartbeat in every ring header.
func (r *Registry) Reap() {
	pid := uint32(os.Getpid())
	for _, ch := range r.Channels() {
		ch.mu.Lock()
		if ch.ring != nil && !ch.broken.Load() {
			if err := ch.ring.Check(); err != nil {
				ch.setBroken(err)
				ch.mu.Unlock()
				continue
			}
			if n := ch.ring.Reap(); n > 0 {
				ch.reaped.Add(uint64(n))
				r.log.WithFields(logrus.Fields{"ns": ch.NS, "channel": ch.Name, "op": "reap"}).Debugf("reaped %d dead members", n)
			}
			ch.ring.SetAgentHeartbeat(pid)
		}
		ch.mu.Unlock()
	}
}

// Meta returns the namespace's metadata.
func (ns *Namespace) Meta() Meta {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.meta
}

// SetMeta changes owner or mode and persists it.
func (ns *Namespace) SetMeta(f func(*Meta)) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.removed {
		return ErrNotFound
	}
	m := ns.meta
	f(&m)
	if err := writeMeta(filepath.Join(ns.reg.dir, ns.Name), m); err != nil {
		return err
	}
	ns.meta = m
	return nil
}

// Channels returns the namespace's channels sorted by name.
func (ns *Namespace) Channels() []*Channel {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	out := make([]*Channel, 0, len(ns.channels))
	for _, ch := range ns.channels {
		out = append(out, ch)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Channel returns channel name, or nil.
func (ns *Namespace) Channel(name string) *Channel {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.channels[name]
}

// CreateChannel makes a channel with the registry's defaults: its ring is
// created in StateDir at once.
func (ns *Namespace) CreateChannel(name string, uid, gid, mode uint32) (*Channel, error) {
	if !ValidName(name) {
		return nil, ErrName
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.removed {
		return nil, ErrNotFound
	}
	if ns.channels[name] != nil {
		return nil, ErrExists
	}
	dir := filepath.Join(ns.reg.dir, ns.Name, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("fs: create channel %s/%s: %w", ns.Name, name, err)
	}
	ch := &Channel{NS: ns.Name, Name: name, dir: dir, reg: ns.reg, meta: Meta{UID: uid, GID: gid, Mode: mode & 0o7777}}
	if err := ch.format(ns.reg.defaults); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := writeMeta(dir, ch.meta); err != nil {
		ch.destroy()
		os.RemoveAll(dir)
		return nil, err
	}
	ns.channels[name] = ch
	ch.log("mkdir").WithField("size", ch.seg.Size()).Info("channel created")
	return ch, nil
}

// RemoveChannel removes an idle channel and frees its memory.
func (ns *Namespace) RemoveChannel(name string) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ch := ns.channels[name]
	if ch == nil {
		return ErrNotFound
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.busyLocked() {
		return ErrBusy
	}
	ch.destroy()
	if err := os.RemoveAll(ch.dir); err != nil {
		return fmt.Errorf("fs: remove channel %s/%s: %w", ns.Name, name, err)
	}
	ch.closed = true
	delete(ns.channels, name)
	ch.log("rmdir").Info("channel removed")
	return nil
}

// Channel is one ring and its metadata.
type Channel struct {
	NS, Name string
	dir      string
	reg      *Registry

	mu       sync.Mutex // guards the fields below
	meta     Meta
	seg      *shm.Segment
	ring     *channel.Ring
	handles  int  // open ring and data files
	closed   bool // removed or registry closed
	lastErr  string
	brokenAt string

	broken atomic.Bool
	lost   atomic.Uint64 // messages lost by closed agent subscribers
	reaped atomic.Uint64 // members evicted by the agent's Reap
	wrote  atomic.Uint64 // payload bytes published through the agent's files
}

func (ch *Channel) log(op string) *logrus.Entry {
	return ch.reg.log.WithFields(logrus.Fields{"ns": ch.NS, "channel": ch.Name, "op": op})
}

// format creates the shm file sized for cfg and formats the ring. Caller
// holds ch.mu (or owns ch exclusively).
func (ch *Channel) format(cfg channel.Config) error {
	cfg.Epoch = 0
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	seg, err := shm.CreatePOSIX(ringFile, cfg.Size(), shm.Options{Dir: ch.dir, Mode: os.FileMode(dataPerm(ch.meta.Mode)) | 0o600, Exclusive: true})
	if err != nil {
		return fmt.Errorf("fs: create ring of %s/%s: %w", ch.NS, ch.Name, err)
	}
	ring, err := channel.Format(seg.Bytes(), cfg)
	if err != nil {
		seg.Close()
		seg.Remove()
		return fmt.Errorf("fs: format ring of %s/%s: %w", ch.NS, ch.Name, err)
	}
	ch.seg, ch.ring = seg, ring
	ch.meta.Config = configMeta(ring.Config())
	ch.syncBacking()
	return nil
}

// syncBacking gives the shm file the channel's owner and data mode, so a
// client allowed to use the channel may also map the backing file directly.
func (ch *Channel) syncBacking() {
	if ch.seg == nil || ch.seg.File() == nil {
		return
	}
	f := ch.seg.File()
	_ = f.Chown(int(ch.meta.UID), int(ch.meta.GID))
	_ = f.Chmod(os.FileMode(dataPerm(ch.meta.Mode)) | 0o600)
}

// destroy unmaps the ring and removes its shm file. Caller holds ch.mu.
func (ch *Channel) destroy() {
	if ch.ring != nil {
		ch.ring.Close()
		ch.ring = nil
	}
	if ch.seg != nil {
		ch.seg.Close()
		ch.seg.Remove()
		ch.seg = nil
	}
}

func (ch *Channel) setBroken(err error) {
	if ch.broken.CompareAndSwap(false, true) {
		ch.brokenAt = err.Error()
		ch.log("ring").WithError(err).Error("channel broken: its files return EIO; other channels are unaffected")
	}
}

// markBroken records a ring failure once.
func (ch *Channel) markBroken(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.setBroken(err)
}

// Broken reports whether the ring failed validation.
func (ch *Channel) Broken() bool { return ch.broken.Load() }

// Meta returns the channel's metadata.
func (ch *Channel) Meta() Meta {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.meta
}

// SetMeta changes owner or mode and persists it.
func (ch *Channel) SetMeta(f func(*Meta)) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return ErrNotFound
	}
	m := ch.meta
	f(&m)
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

// BackingPath returns the shm file of the ring.
func (ch *Channel) BackingPath() string { return filepath.Join(ch.dir, ringFile) }

// LastError returns the last configuration error ("" if none).
func (ch *Channel) LastError() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.lastErr
}

// acquire counts an open ring or data file and returns the ring.
func (ch *Channel) acquire() (*channel.Ring, *shm.Segment, syscall.Errno) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return nil, nil, syscall.ENOENT
	}
	if ch.broken.Load() || ch.ring == nil {
		return nil, nil, syscall.EIO
	}
	ch.handles++
	return ch.ring, ch.seg, 0
}

func (ch *Channel) release() {
	ch.mu.Lock()
	ch.handles--
	ch.mu.Unlock()
}

// busyLocked: open files or live members other than dead ones the reaper
// has yet to evict.
func (ch *Channel) busyLocked() bool {
	if ch.handles > 0 {
		return true
	}
	if ch.ring == nil {
		return false
	}
	lease := ch.ring.Config().Lease
	for _, m := range ch.ring.Members() {
		if (m.State == channel.MemberActive || m.State == channel.MemberInit) && m.LeaseAge <= lease {
			return true
		}
	}
	return false
}

// Busy reports whether the channel has open files or live members.
func (ch *Channel) Busy() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.busyLocked()
}

// Stats is a snapshot of a channel's counters.
type Stats struct {
	NS, Name    string
	Messages    uint64 // messages published since the ring was formatted (all queues)
	Bytes       uint64 // ring bytes consumed by frames (headers and padding included)
	Publishers  uint64
	Subscribers uint64
	LagMax      uint64 // slowest subscriber's lag in messages
	Lost        uint64 // messages lost to overwrite (live subscribers + closed agent subscribers)
	Reaped      uint64 // dead members evicted and claims unblocked
	Epoch       uint64
	Broken      bool
}

// Stats returns a consistent-enough snapshot of the channel's counters.
func (ch *Channel) Stats() Stats {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	st := Stats{NS: ch.NS, Name: ch.Name, Broken: ch.broken.Load(), Lost: ch.lost.Load()}
	r := ch.ring
	if r == nil {
		return st
	}
	cfg := r.Config()
	st.Epoch = cfg.Epoch
	queues := 1
	if cfg.Type == channel.TypeStream {
		queues = 2
	}
	capUnits := uint32(cfg.Capacity >> 4)
	for q := 0; q < queues; q++ {
		qs := r.QueueStats(q)
		st.Messages += uint64(uint32(qs.Tail >> 32))
		st.Bytes += uint64(uint32(qs.Tail)-capUnits) << 4
		st.Reaped += qs.Reaped + qs.Evicted
	}
	for _, m := range r.Members() {
		if m.State != channel.MemberActive {
			continue
		}
		switch m.Role {
		case channel.RolePublisher:
			st.Publishers++
		case channel.RoleSubscriber:
			st.Subscribers++
			if cfg.Type == channel.TypePubSub && m.Lag > st.LagMax && m.Lag < 1<<31 {
				st.LagMax = m.Lag
			}
			st.Lost += m.Lost
		}
	}
	if cfg.Type == channel.TypeStream {
		// Stream readers share Head: the lag is what waits in each queue.
		for q := 0; q < queues; q++ {
			qs := r.QueueStats(q)
			lag := uint64(uint32(qs.Tail>>32) - uint32(qs.Head>>32))
			if lag > st.LagMax && lag < 1<<31 {
				st.LagMax = lag
			}
		}
	}
	return st
}

// Reconfigure applies "key value" lines (see docs/filesystem.md) if the
// channel is idle and has never carried a message: the ring is re-created
// with a new epoch. A bad line gives EINVAL and leaves the channel as it
// was; the reason is kept for the error file.
func (ch *Channel) Reconfigure(text string) syscall.Errno {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	log := ch.log("ctl")
	if ch.closed {
		return syscall.ENOENT
	}
	if ch.ring == nil {
		return syscall.EIO
	}
	cfg, err := parseCtl(ch.ring.Config(), text)
	if err != nil {
		ch.lastErr = err.Error()
		log.WithError(err).Warn("configuration rejected")
		return syscall.EINVAL
	}
	if ch.busyLocked() || ch.ring.QueueStats(0).Tail>>32 != 0 || ch.ring.QueueStats(1).Tail>>32 != 0 {
		ch.lastErr = "channel is in use or has carried messages: configuration can only change on a fresh, idle channel"
		log.Warn(ch.lastErr)
		return syscall.EBUSY
	}
	old := ch.meta
	ch.destroy()
	if err := ch.format(cfg); err != nil {
		ch.lastErr = err.Error()
		ch.setBroken(err)
		return syscall.EIO
	}
	if err := writeMeta(ch.dir, ch.meta); err != nil {
		ch.meta = old
		log.WithError(err).Error("persist metadata")
	}
	ch.lastErr = ""
	log.WithField("epoch", ch.ring.Epoch()).Info("channel reconfigured")
	return 0
}

// leaseString prints durations compactly ("2s", "500ms").
func leaseString(d time.Duration) string { return d.String() }
