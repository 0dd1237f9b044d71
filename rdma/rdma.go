// Package rdma is the transport between Shimmy agents, shaped like RDMA so
// that a verbs backend fits as well as TCP: a link (Conn) between two
// authenticated agents, memory regions registered on the link whose keys
// one side hands to the other, one-sided writes of a local range into the
// peer's region, a write with a 32-bit immediate that the receiver sees as
// a completion once the data is in place (the doorbell), a completion
// queue, and a small reliable control channel for key exchange and status.
//
// Backends: rdma/tcp (mutual TLS 1.3, the default, always available) and
// rdma/verbs (libibverbs, build tag `verbs`). rdma/rdmatest is the
// conformance suite both pass. docs/transport-wire.md is the normative
// wire format of the TCP backend.
package rdma

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"
)

// Errors. A link that fails closes; every error it returns afterwards
// matches ErrClosed and, with errors.Is, the cause (ErrTimeout, ErrRegion,
// ErrProtocol, ErrAuth).
var (
	ErrClosed   = errors.New("rdma: link closed")
	ErrNoDevice = errors.New("rdma: no RDMA device")
	ErrAuth     = errors.New("rdma: peer not authenticated")
	ErrRegion   = errors.New("rdma: access outside a registered region")
	ErrTimeout  = errors.New("rdma: peer silent for longer than the timeout")
	ErrProtocol = errors.New("rdma: protocol violation")
	ErrTooLarge = errors.New("rdma: message too large")
)

// MaxControl is the largest control message, in bytes.
const MaxControl = 64 << 10

// Defaults of Options.
const (
	DefaultTimeout = 10 * time.Second
	DefaultCQDepth = 4096
)

// Options configure a transport (one per agent).
type Options struct {
	// Certificate is this node's certificate and key (see rdma/certs).
	Certificate tls.Certificate
	// CA holds the cluster CA: a peer must present a certificate it signed.
	CA *x509.CertPool
	// Timeout is how long a link may hear nothing from its peer before it
	// is closed with ErrTimeout (and the TCP user timeout); it also bounds
	// the handshake. Default DefaultTimeout.
	Timeout time.Duration
	// Heartbeat is the interval of keep-alive messages. Default Timeout/4.
	Heartbeat time.Duration
	// CQDepth bounds the completions waiting to be polled: a receiver whose
	// queue is full stops taking the peer's writes (the peer's Post waits)
	// until it polls. Default DefaultCQDepth.
	CQDepth int
	// Authorize, if set, may refuse a peer that authenticated (an agent the
	// configuration does not know): its error is returned wrapped in ErrAuth.
	Authorize func(peer string) error
	// OnReject, if set, is told of every incoming connection refused before
	// it reached Accept (failed TLS, failed Authorize, bad hello).
	OnReject func(remote string, err error)
	// Log receives link events; default: the standard logrus logger.
	Log logrus.FieldLogger
}

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = o.Timeout / 4
	}
	if o.CQDepth <= 0 {
		o.CQDepth = DefaultCQDepth
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	return o
}

// Transport makes links: one per agent and backend.
type Transport interface {
	// Dial connects to the agent listening at addr (host:port).
	Dial(ctx context.Context, addr string, opts DialOptions) (Conn, error)
	// Listen accepts links on addr (host:port; port 0 picks one).
	Listen(addr string) (Listener, error)
	// Close releases the transport's resources (device, protection domain).
	Close() error
}

// DialOptions configure one Dial.
type DialOptions struct {
	// Peer, if set, is the identity the listener must have (ErrAuth if not).
	Peer string
}

// Listener accepts authenticated links.
type Listener interface {
	// Accept returns the next link whose peer authenticated; refused
	// attempts never reach it (see Options.OnReject).
	Accept(ctx context.Context) (Conn, error)
	Addr() net.Addr
	Close() error
}

// Conn is one reliable, authenticated link between two agents.
//
// Ordering: the writes of one link land in the order they were posted (a
// single Post is contiguous; concurrent Posts interleave whole). An OpImm
// completion at the receiver means that write and every write posted
// before it on the link are in place. Control messages arrive in order
// among themselves but are not ordered with writes.
type Conn interface {
	// Peer is the peer's authenticated identity: its certificate's common
	// name, else its first URI SAN, else its first DNS SAN.
	Peer() string
	RemoteAddr() net.Addr

	// Register makes mem a region the peer may write into once it holds
	// its key, and that this side may write from. The verbs backend needs
	// memory outside the Go heap (a mapping: a ring, unix.Mmap).
	Register(mem []byte) (Region, error)
	// Post writes local ranges into the peer's regions. It returns once the
	// writes are posted; a signaled write's OpWrite completion says its
	// local range may be reused. A write outside a local region, or outside
	// the remote region as its key describes it, fails with ErrRegion and
	// posts nothing; a forged key closes the link at the receiver.
	Post(ws ...Write) error

	// Poll moves up to len(cs) completions into cs without waiting.
	Poll(cs []Completion) int
	// Wait is Poll that waits for at least one completion, ctx or close.
	Wait(ctx context.Context, cs []Completion) (int, error)

	// Send queues one control message (at most MaxControl bytes).
	Send(ctx context.Context, msg []byte) error
	// Recv returns the next control message.
	Recv(ctx context.Context) ([]byte, error)

	// Close closes the link; the peer sees ErrClosed.
	Close() error
	// Done is closed when the link has failed or closed; Err says why.
	Done() <-chan struct{}
	Err() error
}

// Region is memory registered on one link.
type Region interface {
	// Key is what the peer needs to write into this region; hand it over
	// the control channel.
	Key() RemoteKey
	Bytes() []byte
	// Close deregisters the region: later writes to its key close the
	// link. It waits for a write into it that is in flight.
	Close() error
}

// RemoteKey names a region of the peer: its key, the address the backend
// writes at (0 for TCP, the virtual address for verbs) and its length.
type RemoteKey struct {
	Key  uint32
	Addr uint64
	Len  uint64
}

// RemoteKeyLen is the size of an encoded RemoteKey.
const RemoteKeyLen = 20

// AppendBinary appends k's 20-byte little-endian encoding (key u32, addr
// u64, len u64) to b.
func (k RemoteKey) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint32(b, k.Key)
	b = binary.LittleEndian.AppendUint64(b, k.Addr)
	return binary.LittleEndian.AppendUint64(b, k.Len), nil
}

// ParseRemoteKey decodes what AppendBinary wrote.
func ParseRemoteKey(b []byte) (RemoteKey, error) {
	if len(b) != RemoteKeyLen {
		return RemoteKey{}, fmt.Errorf("%w: remote key of %d bytes, want %d", ErrProtocol, len(b), RemoteKeyLen)
	}
	return RemoteKey{
		Key:  binary.LittleEndian.Uint32(b),
		Addr: binary.LittleEndian.Uint64(b[4:]),
		Len:  binary.LittleEndian.Uint64(b[12:]),
	}, nil
}

// Write is one one-sided write: Len bytes of Local at LocalOff into the
// peer's region Remote at RemoteOff.
type Write struct {
	Local     Region
	LocalOff  uint64
	Len       uint32
	Remote    RemoteKey
	RemoteOff uint64
	// WithImm makes this the doorbell: the receiver gets an OpImm
	// completion carrying Imm once the data (and all before it) is in place.
	WithImm bool
	Imm     uint32
	// Signaled asks for an OpWrite completion carrying ID on this side.
	Signaled bool
	ID       uint64
}

// Check validates w against its local region and the remote key, as both
// backends do before posting.
func (w *Write) Check() error {
	if w.Local == nil {
		return fmt.Errorf("%w: no local region", ErrRegion)
	}
	n := uint64(w.Len)
	if l := uint64(len(w.Local.Bytes())); w.LocalOff > l || n > l-w.LocalOff {
		return fmt.Errorf("%w: local range %d+%d outside a region of %d bytes", ErrRegion, w.LocalOff, n, l)
	}
	if w.RemoteOff > w.Remote.Len || n > w.Remote.Len-w.RemoteOff {
		return fmt.Errorf("%w: remote range %d+%d outside a region of %d bytes", ErrRegion, w.RemoteOff, n, w.Remote.Len)
	}
	return nil
}

// Op is the kind of a completion.
type Op uint8

const (
	// OpWrite: a signaled write of this side was posted and its local
	// range may be reused. ID is the write's ID.
	OpWrite Op = 1 + iota
	// OpImm: the peer's write with immediate landed (with everything it
	// posted before). Imm and Len are the immediate and the write's length.
	OpImm
)

func (o Op) String() string {
	switch o {
	case OpWrite:
		return "write"
	case OpImm:
		return "imm"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Completion is one entry of a link's completion queue.
type Completion struct {
	Op  Op
	ID  uint64
	Imm uint32
	Len uint32
}

// Closed wraps cause so that it matches both ErrClosed and cause.
func Closed(cause error) error {
	if cause == nil || errors.Is(cause, ErrClosed) {
		if cause == nil {
			return ErrClosed
		}
		return cause
	}
	return fmt.Errorf("%w: %w", ErrClosed, cause)
}
