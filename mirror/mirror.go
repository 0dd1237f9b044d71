package mirror

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/mirror/internal/wire"
	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/registry"
)

// Defaults of Options.
const (
	DefaultStatusEvery = 200 * time.Millisecond
	DefaultInbox       = 4 << 20
	DefaultMinBackoff  = 50 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
	DefaultHold        = 30 * time.Second
	DefaultCredit      = 256
	DefaultSpoolRings  = 1
)

// Options configure a Mirror.
type Options struct {
	// Registry is the node's registry; the mirror opens shared channels
	// through it and follows its events.
	Registry *registry.Registry
	// Transport makes the links (rdma/tcp by default in the agent).
	Transport rdma.Transport
	// Self is this agent's identity, the name in its certificate.
	Self string
	// Listen is the address to accept links on (host:port); "" accepts
	// none. Of two peers, the one whose identity sorts first dials.
	Listen string
	// StateDir keeps high-water marks, acknowledged positions and stream
	// outboxes across restarts (tmpfs, like the rings). Default: a
	// ".mirror" directory in the registry's state directory (a name the
	// registry never takes for a namespace).
	StateDir string
	// Log receives link events; default the standard logrus logger.
	Log logrus.FieldLogger

	// StatusEvery is how often a receiver acknowledges (also after every
	// quarter window). Default DefaultStatusEvery.
	StatusEvery time.Duration
	// Inbox is the bytes of the region each side registers for the
	// peer's data batches; it bounds the bytes in flight on a link (and
	// must hold the largest message). Default DefaultInbox.
	Inbox int
	// MinBackoff and MaxBackoff bound the jittered, doubling wait before
	// a broken link is dialed again.
	MinBackoff, MaxBackoff time.Duration
	// Hold is how long a block channel's ring keeps holding publishers for
	// a peer whose link is down; after that the peer's slot is released
	// and the messages it misses are counted as its losses when it comes
	// back. Default DefaultHold.
	Hold time.Duration
	// Credit is how many stream records a host asks its peer for at once.
	Credit int
	// SpoolRings sizes each flow's spool, in the state directory: the
	// messages a host received and acknowledged before its ring had room
	// for them, up to SpoolRings times the channel's ring capacity: how far
	// a host's publishers can run ahead of the other host's ring at once.
	// Beyond it, the importer's reservation of its ring (its spool's
	// records go before local publishers') keeps two hosts from waiting
	// for each other. Default DefaultSpoolRings.
	SpoolRings int
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.StateDir == "" && o.Registry != nil {
		o.StateDir = filepath.Join(o.Registry.StateDir(), ".mirror")
	}
	if o.StatusEvery <= 0 {
		o.StatusEvery = DefaultStatusEvery
	}
	if o.Inbox <= 0 {
		o.Inbox = DefaultInbox
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.Hold <= 0 {
		o.Hold = DefaultHold
	}
	if o.Credit <= 0 {
		o.Credit = DefaultCredit
	}
	if o.SpoolRings <= 0 {
		o.SpoolRings = DefaultSpoolRings
	}
	return o
}

// LinkState is the state of a link.
type LinkState string

// Link states.
const (
	StateConnecting LinkState = "connecting" // dialing, or waiting to be dialed
	StateUp         LinkState = "up"
	StateBackoff    LinkState = "backoff" // broken; waiting before the next dial
)

// LinkStats describe one link (one peer of the plan).
type LinkStats struct {
	Peer  string
	State LinkState
	// Bytes and Messages count payload carried both ways since the
	// mirror started, across the peer's restarts and address changes.
	Bytes, Messages uint64
	// Lag is the messages this host sent that the peer has not yet
	// acknowledged (pubsub) or stream records in the outbox.
	Lag uint64
	// Window is the bytes of the peer's inbox this host may still fill.
	Window uint64
	// Reconnects counts links established after the first.
	Reconnects uint64
	// Losses counts messages that this host's replicas missed: gaps the
	// peer reported (overwrite), and messages a peer slot lost after
	// Hold expired (block). Gap frames put each of them in the lost
	// counts of this host's subscribers too.
	Losses uint64
}

// Mirror keeps the channels of a Plan in step with the peers it names.
type Mirror struct {
	o   Options
	log logrus.FieldLogger

	state   *state
	ln      rdma.Listener
	flowIDs atomic.Uint32

	imu     sync.Mutex
	imports map[chanKey]*imports // by channel and queue

	omu      sync.Mutex
	outboxes map[holdKey]*outbox // stream records taken for a peer

	xmu     sync.Mutex
	readers map[slotKey]bool // stream readers of exporters

	hmu   sync.Mutex
	holds map[holdKey]*hold // block peers' slots while their link is down

	fmu   sync.Mutex
	users map[shareKey]int // importers and exporters with a share's files open (forget.go)

	mu      sync.Mutex
	plan    Plan
	applied bool                   // Apply was called: forgetUnshared may sweep
	peers   map[string]*peer       // by name
	counts  map[string]*linkCounts // by peer name, kept when a peer is replaced
	wake    chan struct{}          // Apply signals Run

	// testHookSub, set by tests only, runs before each Sub is sent.
	testHookSub atomic.Pointer[func(wire.Sub)]
}

// New checks o and returns a mirror with an empty plan; Run starts it.
func New(o Options) (*Mirror, error) {
	o = o.withDefaults()
	switch {
	case o.Registry == nil:
		return nil, errors.New("mirror: no registry")
	case o.Transport == nil:
		return nil, errors.New("mirror: no transport")
	case o.Self == "":
		return nil, errors.New("mirror: no identity (Self)")
	}
	st, err := openState(o.StateDir)
	if err != nil {
		return nil, err
	}
	m := &Mirror{
		o: o, log: o.Log.WithField("component", "mirror"), state: st,
		peers: map[string]*peer{}, counts: map[string]*linkCounts{}, wake: make(chan struct{}, 1),
		imports: map[chanKey]*imports{}, holds: map[holdKey]*hold{}, outboxes: map[holdKey]*outbox{}, readers: map[slotKey]bool{},
		users: map[shareKey]int{},
	}
	if o.Listen != "" {
		if m.ln, err = o.Transport.Listen(o.Listen); err != nil {
			return nil, fmt.Errorf("mirror: listen on %s: %w", o.Listen, err)
		}
	}
	return m, nil
}

// Apply makes p the plan. It validates p (ErrPlan) and returns at once;
// Run opens and closes links and flows to match.
func (m *Mirror) Apply(p Plan) error {
	if err := p.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	m.plan, m.applied = p, true
	m.mu.Unlock()
	m.kick()
	return nil
}

// Authorize refuses identities the current plan does not list: pass it as
// rdma.Options.Authorize so that such a peer is refused (and reported by
// OnReject) before it reaches the mirror.
func (m *Mirror) Authorize(identity string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.plan.Peers {
		if p.ID() == identity {
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrUnknownPeer, identity)
}

// Run accepts links (Options.Listen), keeps one link per peer of the plan up,
// and mirrors the shared channels until ctx is done; it returns nil then,
// and closes the listener. Stop it before closing the registry: its
// members live in the registry's rings. Run once.
func (m *Mirror) Run(ctx context.Context) error {
	err := m.run(ctx)
	m.abandonHolds()
	m.imu.Lock()
	for _, im := range m.imports {
		im.claims.close()
	}
	m.imu.Unlock()
	return err
}

// Stats returns one entry per peer of the plan, sorted by peer name.
//
// The peers are collected under m.mu and asked without it: a peer's stats
// take its session's locks, which a session closing its exporters holds
// while they take m.mu (releaseUnshared), and Stats waited for ever.
func (m *Mirror) Stats() []LinkStats {
	m.mu.Lock()
	peers := make([]*peer, 0, len(m.peers))
	for _, p := range m.plan.Peers {
		if pe := m.peers[p.Name]; pe != nil {
			peers = append(peers, pe)
		}
	}
	m.mu.Unlock()
	out := make([]LinkStats, 0, len(peers))
	for _, pe := range peers {
		out = append(out, pe.stats())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}
