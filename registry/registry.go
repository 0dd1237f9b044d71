// Package registry is the node's control plane: it owns the namespaces and
// channels of a node, their typed configuration, their state in the state
// directory (recovered after an agent restart), reaping of dead members,
// broken-channel marking, subscriber accounting and statistics, and an
// event stream of channel changes. Every front end (the FUSE tree of
// package fs, the CLI through it, the mirror, Kubernetes) is a thin client
// of it. Its errors are the sentinels of errors.go; it speaks neither FUSE
// nor errnos.
package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/channel"
)

// Options configure a Registry.
type Options struct {
	StateDir string         // tmpfs directory for rings and metadata
	Defaults channel.Config // configuration of new channels (zero fields: channel defaults)
	Log      logrus.FieldLogger
	Quota    *Quota // quota of new namespaces; nil: DefaultQuota
}

// Registry holds every namespace and channel of a node and their state in
// StateDir: <StateDir>/<ns>/meta.json and <StateDir>/<ns>/<ch>/{ring,meta.json}.
// Everything survives an agent restart because StateDir is on tmpfs.
//
// Locks are taken in the order Registry, Namespace, Channel; no lock is
// held while an event subscriber runs.
type Registry struct {
	dir      string
	defaults channel.Config
	quota    Quota // of new namespaces
	log      logrus.FieldLogger
	events   hub
	sched    schedule // the reaper's next visits

	mu     sync.Mutex
	nss    map[string]*Namespace
	closed atomic.Bool // by Close: nothing new is created

	passthrough atomic.Bool
	ptOnce      sync.Once
	ptKnown     chan struct{} // closed by the first SetPassthrough
}

// New creates StateDir if needed. Call Recover to load what it holds.
func New(o Options) (*Registry, error) {
	if o.StateDir == "" {
		return nil, fmt.Errorf("registry: empty state directory")
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("registry: state directory: %w", err)
	}
	def := o.Defaults
	def.Epoch = 0
	if err := def.WithDefaults().Validate(); err != nil {
		return nil, fmt.Errorf("%w: defaults: %w", ErrInvalidConfig, err)
	}
	var log logrus.FieldLogger = logrus.StandardLogger()
	if o.Log != nil {
		log = o.Log
	}
	q := DefaultQuota
	if o.Quota != nil {
		q = *o.Quota
	}
	return &Registry{
		dir: o.StateDir, defaults: def, quota: q, log: log.WithField("component", "registry"),
		nss: map[string]*Namespace{}, ptKnown: make(chan struct{}),
	}, nil
}

// StateDir returns the state directory.
func (r *Registry) StateDir() string { return r.dir }

// Defaults returns the configuration new channels get (zero fields take
// the channel package's defaults).
func (r *Registry) Defaults() channel.Config { return r.defaults }

// SetPassthrough records whether the FUSE front end serves ring files by
// passthrough (its config files show it). With passthrough, clients map
// rings through the mount only, so the state directory and every POSIX
// backing file become root's alone (0700, 0600): no tenant can then
// truncate a ring under the agent or grow a backing file past its size.
func (r *Registry) SetPassthrough(on bool) {
	r.passthrough.Store(on)
	r.ptOnce.Do(func() { close(r.ptKnown) })
	if !on {
		return
	}
	if err := os.Chmod(r.dir, 0o700); err != nil {
		r.log.WithError(err).Warn("cannot make the state directory root-only")
	}
	r.eachChannel(func(ch *Channel) {
		ch.mu.Lock()
		ch.syncBacking()
		ch.mu.Unlock()
	})
}

// ptWait bounds how long Passthrough waits for SetPassthrough.
const ptWait = 5 * time.Second

// eachChannel calls f for every channel, in no order, without sorting
// or copying them all.
func (r *Registry) eachChannel(f func(*Channel)) {
	r.mu.Lock()
	nss := make([]*Namespace, 0, len(r.nss))
	for _, ns := range r.nss {
		nss = append(nss, ns)
	}
	r.mu.Unlock()
	for _, ns := range nss {
		ns.mu.Lock()
		for _, ch := range ns.channels {
			f(ch)
		}
		ns.mu.Unlock()
	}
}

// Passthrough reports what SetPassthrough recorded. The kernel may send
// requests (a client reading config) as soon as the mount exists, before
// the mounter has seen the negotiated flags and called SetPassthrough:
// such a caller waits for it, briefly.
func (r *Registry) Passthrough() bool {
	select {
	case <-r.ptKnown:
	default: // only before the first SetPassthrough: no timer otherwise
		t := time.NewTimer(ptWait)
		defer t.Stop()
		select {
		case <-r.ptKnown:
		case <-t.C:
		}
	}
	return r.passthrough.Load()
}

// Recover loads every namespace and channel found in StateDir and emits a
// Created event for each channel. Existing rings are opened, never
// re-formatted; a ring that fails validation is kept as a broken channel
// (ErrBroken on use) so nothing is lost.
func (r *Registry) Recover() error {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("registry: read state directory: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !ValidName(e.Name()) {
			continue
		}
		if err := r.recoverNamespace(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

func (r *Registry) recoverNamespace(name string) error {
	dir := filepath.Join(r.dir, name)
	log := r.log.WithFields(logrus.Fields{"ns": name, "op": "recover"})
	m, err := readMeta(dir)
	if err != nil {
		log.WithError(err).Warn("namespace metadata unreadable; using root 0755")
		m = meta{Mode: 0o755}
	}
	chs, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("registry: read %s: %w", dir, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nss[name] != nil {
		return nil // recovered already
	}
	ns := r.newNamespace(name, m)
	r.events.emit(Event{Kind: NamespaceCreated, Namespace: name}) // before its channels'
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, c := range chs {
		if !c.IsDir() || !ValidName(c.Name()) {
			continue
		}
		ch := r.recoverChannel(ns, c.Name())
		ns.channels[c.Name()] = ch
		r.sched.push(ch, time.Time{})
		ns.book.move(Usage{}, ch.held) // what exists is kept, even over the quota
		ch.mu.Lock()
		ch.emitLocked(Created, "")
		if ch.broken.Load() {
			ch.emitLocked(Broken, ch.brokenAt)
		}
		ch.mu.Unlock()
	}
	r.nss[name] = ns
	log.Infof("recovered namespace with %d channels", len(ns.channels))
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

// Namespace returns namespace name, or ErrNotFound.
func (r *Registry) Namespace(name string) (*Namespace, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ns := r.nss[name]; ns != nil {
		return ns, nil
	}
	return nil, fmt.Errorf("%w: namespace %q", ErrNotFound, name)
}

// Channel returns channel ns/name, or ErrNotFound.
func (r *Registry) Channel(ns, name string) (*Channel, error) {
	n, err := r.Namespace(ns)
	if err != nil {
		return nil, err
	}
	return n.Channel(name)
}

// Channels returns every channel of every namespace, sorted.
func (r *Registry) Channels() []*Channel {
	var out []*Channel
	for _, ns := range r.Namespaces() {
		out = append(out, ns.Channels()...)
	}
	return out
}

// CreateNamespace makes namespace name with attributes a.
func (r *Registry) CreateNamespace(name string, a Attr) (*Namespace, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if r.nss[name] != nil {
		return nil, fmt.Errorf("%w: namespace %q", ErrExists, name)
	}
	dir := filepath.Join(r.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("registry: create namespace %s: %w", name, err)
	}
	var m meta
	m.setAttr(a)
	q := r.quota
	m.Quota = &q
	if err := writeMeta(dir, m); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ns := r.newNamespace(name, m)
	r.nss[name] = ns
	r.events.emit(Event{Kind: NamespaceCreated, Namespace: name})
	r.log.WithFields(logrus.Fields{"ns": name, "op": "create"}).Info("namespace created")
	return ns, nil
}

// RemoveNamespace removes an empty namespace (ErrNotEmpty otherwise).
func (r *Registry) RemoveNamespace(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ns := r.nss[name]
	if ns == nil {
		return fmt.Errorf("%w: namespace %q", ErrNotFound, name)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(ns.channels) > 0 {
		return fmt.Errorf("%w: %q has %d", ErrNotEmpty, name, len(ns.channels))
	}
	if err := os.RemoveAll(filepath.Join(r.dir, name)); err != nil {
		return fmt.Errorf("registry: remove namespace %s: %w", name, err)
	}
	ns.removed = true
	delete(r.nss, name)
	r.events.emit(Event{Kind: NamespaceRemoved, Namespace: name})
	r.log.WithFields(logrus.Fields{"ns": name, "op": "remove"}).Info("namespace removed")
	return nil
}

// Close unmaps every ring; the shm files stay in StateDir for the next
// agent. Channels answer ErrNotFound afterwards.
func (r *Registry) Close() error {
	r.closed.Store(true)
	var errs []error
	for _, ch := range r.Channels() {
		ch.mu.Lock()
		errs = append(errs, ch.unmapLocked())
		ch.closed = true
		ch.mu.Unlock()
	}
	return errors.Join(errs...)
}

// RunReaper reaps at once and then every interval until ctx is done; it
// returns nil then.
func (r *Registry) RunReaper(ctx context.Context, interval time.Duration) error {
	r.reapPass(interval)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.reapPass(interval)
		}
	}
}

// newNamespace makes the namespace of meta m; its quota is m's, or the
// registry's for a namespace that has none recorded.
func (r *Registry) newNamespace(name string, m meta) *Namespace {
	ns := &Namespace{Name: name, reg: r, meta: m, channels: map[string]*Channel{}}
	ns.book.quota = r.quota
	if m.Quota != nil {
		ns.book.quota = *m.Quota
	}
	return ns
}

// Namespace is a directory of channels.
type Namespace struct {
	Name string
	reg  *Registry
	book quotaBook

	mu       sync.Mutex // guards meta, channels, removed
	meta     meta
	channels map[string]*Channel
	removed  bool
}

// Attr returns the namespace's owner and mode.
func (ns *Namespace) Attr() Attr {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.meta.attr()
}

// SetAttr changes owner or mode and persists the change.
func (ns *Namespace) SetAttr(f func(*Attr)) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.removed {
		return fmt.Errorf("%w: namespace %q", ErrNotFound, ns.Name)
	}
	m := ns.meta
	a := m.attr()
	f(&a)
	m.setAttr(a)
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

// Channel returns channel name, or ErrNotFound.
func (ns *Namespace) Channel(name string) (*Channel, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ch := ns.channels[name]; ch != nil {
		return ch, nil
	}
	return nil, fmt.Errorf("%w: channel %s/%s", ErrNotFound, ns.Name, name)
}

// CreateOptions describe a new channel.
type CreateOptions struct {
	Attr Attr
	// Config of the ring; nil takes the registry's defaults. Zero fields
	// take channel defaults; the epoch is always new.
	Config  *channel.Config
	Backing Backing // "" is BackingPOSIX
	// Owner names the front end that manages the channel (the Kubernetes
	// node reconciler records one, mkdir none). It is kept in the state
	// directory, so it survives an agent restart: a front end changes or
	// removes only the channels it owns.
	Owner string
}

// CreateChannel makes a channel; its ring is created in StateDir at once.
func (ns *Namespace) CreateChannel(name string, o CreateOptions) (*Channel, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	cfg := ns.reg.defaults
	if o.Config != nil {
		cfg = *o.Config
	}
	cfg, err := validConfig(cfg)
	if err != nil {
		return nil, err
	}
	if o.Backing == "" {
		o.Backing = BackingPOSIX
	}
	if err := o.Backing.UnmarshalText([]byte(o.Backing)); err != nil {
		return nil, err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.reg.closed.Load() {
		return nil, ErrClosed
	}
	if ns.removed {
		return nil, fmt.Errorf("%w: namespace %q", ErrNotFound, ns.Name)
	}
	if ns.channels[name] != nil {
		return nil, fmt.Errorf("%w: channel %s/%s", ErrExists, ns.Name, name)
	}
	held := cost(cfg)
	if err := ns.book.reserve(ns.Name, held, Usage{}); err != nil {
		ns.reg.log.WithFields(logrus.Fields{"ns": ns.Name, "channel": name, "op": "create"}).WithError(err).Warn("channel refused")
		return nil, err
	}
	fail := func(err error) (*Channel, error) {
		ns.book.move(held, Usage{})
		return nil, err
	}
	dir := filepath.Join(ns.reg.dir, ns.Name, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fail(fmt.Errorf("registry: create channel %s/%s: %w", ns.Name, name, err))
	}
	ch := &Channel{NS: ns.Name, Name: name, dir: dir, reg: ns.reg, ns: ns, held: held}
	ch.meta.setAttr(o.Attr)
	ch.meta.Owner = o.Owner
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err := ch.format(cfg, o.Backing); err != nil {
		os.RemoveAll(dir)
		return fail(err)
	}
	if err := writeMeta(dir, ch.meta); err != nil {
		ch.destroyLocked()
		os.RemoveAll(dir)
		return fail(err)
	}
	ns.channels[name] = ch
	ns.reg.sched.push(ch, time.Time{})
	ch.log("create").WithField("size", ch.seg.Size()).Info("channel created")
	ch.emitLocked(Created, "")
	return ch, nil
}

// RemoveChannel removes an idle channel and frees its memory; a busy one
// gives ErrBusy.
func (ns *Namespace) RemoveChannel(name string) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ch := ns.channels[name]
	if ch == nil {
		return fmt.Errorf("%w: channel %s/%s", ErrNotFound, ns.Name, name)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.busyLocked() {
		return fmt.Errorf("%w: %s/%s has open files or live members", ErrBusy, ns.Name, name)
	}
	ch.destroyLocked()
	if err := os.RemoveAll(ch.dir); err != nil {
		return fmt.Errorf("registry: remove channel %s/%s: %w", ns.Name, name, err)
	}
	ch.closed = true
	delete(ns.channels, name)
	ns.book.move(ch.held, Usage{})
	ch.log("remove").Info("channel removed")
	ch.emitLocked(Removed, "")
	return nil
}
