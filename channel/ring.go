package channel

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Config describes a ring at creation. Zero fields take defaults.
type Config struct {
	Type        Type          // TypePubSub (default) or TypeStream
	Policy      Policy        // PolicyBlock (default) or PolicyOverwrite; stream is always block
	Capacity    uint64        // data bytes per queue, power of two; default 1 MiB
	MaxMessage  uint32        // largest payload; default min(64 KiB, Capacity/4 - 16)
	MemberSlots uint32        // member slots; default 64
	Lease       time.Duration // member lease; default 2s
	Epoch       uint64        // creation epoch; default: current wall clock ns
}

// Defaults.
const (
	DefaultCapacity    = 1 << 20
	DefaultMaxMessage  = 64 << 10
	DefaultMemberSlots = 64
)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Type == 0 {
		c.Type = TypePubSub
	}
	if c.Policy == 0 {
		c.Policy = PolicyBlock
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = DefaultMaxMessage
		if uint64(c.MaxMessage) > maxPayload(c.Capacity) {
			c.MaxMessage = uint32(maxPayload(c.Capacity))
		}
	}
	if c.MemberSlots == 0 {
		c.MemberSlots = DefaultMemberSlots
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.Epoch == 0 {
		c.Epoch = uint64(time.Now().UnixNano())
	}
	return c
}

// Validate reports the first out-of-range field, wrapping ErrConfig.
func (c Config) Validate() error {
	switch {
	case !c.Type.Valid():
		return fmt.Errorf("%w: %v (want %s)", ErrConfig, c.Type, typeNames.choices())
	case !c.Policy.Valid():
		return fmt.Errorf("%w: %v (want %s)", ErrConfig, c.Policy, policyNames.choices())
	case c.Type == TypeStream && c.Policy != PolicyBlock:
		return fmt.Errorf("%w: stream channels are always block", ErrConfig)
	case c.Capacity < MinCapacity || c.Capacity > MaxCapacity || bits.OnesCount64(c.Capacity) != 1:
		return fmt.Errorf("%w: capacity %d (want a power of two from %d to %d)", ErrConfig, c.Capacity, MinCapacity, MaxCapacity)
	case uint64(c.MaxMessage) > maxPayload(c.Capacity):
		return fmt.Errorf("%w: max message %d exceeds %d for capacity %d", ErrConfig, c.MaxMessage, maxPayload(c.Capacity), c.Capacity)
	case c.MemberSlots < 1 || c.MemberSlots > MaxMembers:
		return fmt.Errorf("%w: member slots %d (want 1 to %d)", ErrConfig, c.MemberSlots, MaxMembers)
	case c.Lease < MinLease || c.Lease > MaxLease:
		return fmt.Errorf("%w: lease %v (want %v to %v)", ErrConfig, c.Lease, time.Duration(MinLease), time.Duration(MaxLease))
	}
	return nil
}

// maxPayload keeps a frame (with the padding before it at the wrap) well
// inside the ring: a quarter of the capacity.
func maxPayload(capacity uint64) uint64 { return capacity/4 - FrameHeaderLen }

func (c Config) queues() uint64 {
	if c.Type == TypeStream {
		return 2
	}
	return 1
}

func membersLen(slots uint32) uint64 {
	return (uint64(slots)*MemberSlotLen + 4095) &^ 4095
}

// Size returns the bytes of a ring file for c (after defaults).
func (c Config) Size() int64 {
	return int64(HeaderLen + membersLen(c.MemberSlots) + c.queues()*c.Capacity)
}

// Ring is a view of a formatted ring in mapped memory. Its geometry is
// validated once, at Format or Open, and kept in Go memory: later reads
// of the shared header cannot change the bounds this process uses.
type Ring struct {
	mem        []byte
	cfg        Config
	version    uint32 // the ring's ABI version: gap frames from 2 on
	capacity   uint64
	mask       uint64
	capUnits   uint32
	chunkUnits uint32
	chunkShift uint32 // log2(chunkUnits): the index is on the per-claim path
	claimReach uint32 // units a claim waiting for room reaches past the tail: padding and one largest frame
	members    uint64 // offset of member table
	data       [2]uint64
	queues     [2]*queueHeader

	mu    sync.Mutex
	local map[uint32]*member // members owned by this process, for heartbeats
	beat  chan struct{}
	unmap func() error // set by MapFile: Close unmaps what it mapped

	// A member's Close holds closing for reading and does nothing once
	// closed is set; the ring's Close sets it under the write lock, so it
	// waits for member Closes in flight before it unmaps the memory they
	// touch. Only Close paths take it.
	closing sync.RWMutex
	closed  bool

	// Where this process's goroutines wait: parks[q][0] on the queue's
	// DataFutex, parks[q][1] on its SpaceFutex.
	parks [2][2]*park
}

// Version returns the ABI version the ring was formatted with:
// Publisher.ClaimBatchLost needs 2 or later.
func (r *Ring) Version() uint32 { return r.version }

// Format writes a fresh header for cfg into mem (which must be zeroed or
// stale; all of it is reset) and returns the ring.
func Format(mem []byte, cfg Config) (*Ring, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if int64(len(mem)) < cfg.Size() {
		return nil, fmt.Errorf("%w: memory is %d bytes, ring needs %d", ErrConfig, len(mem), cfg.Size())
	}
	clear(mem[:HeaderLen+membersLen(cfg.MemberSlots)])
	d := (*descriptor)(unsafe.Pointer(&mem[0]))
	d.Version = Version
	d.HeaderLen = HeaderLen
	d.Type = cfg.Type
	d.Policy = cfg.Policy
	d.Capacity = cfg.Capacity
	d.MaxMessage = cfg.MaxMessage
	d.MemberSlots = cfg.MemberSlots
	d.Epoch = cfg.Epoch
	d.MembersOffset = HeaderLen
	d.LeaseNanos = uint64(cfg.Lease)
	d.QueueCount = uint32(cfg.queues())
	d.IndexChunks = IndexChunks
	d.FileSize = uint64(cfg.Size())
	d.DataOffset = HeaderLen + membersLen(cfg.MemberSlots)
	// Frames of the first lap must not look committed: clear the data too.
	clear(mem[d.DataOffset:cfg.Size()])
	// Positions start one lap in, so that zeroed memory never carries the
	// tag of a first-lap position.
	start := uint64(mkpos(0, uint32(cfg.Capacity>>unitShift)))
	for q := uint64(0); q < cfg.queues(); q++ {
		qh := (*queueHeader)(unsafe.Pointer(&mem[OffQueues+q*QueueHeaderLen]))
		qh.Tail, qh.Head, qh.Limit, qh.Release = start, start, start, start
		qh.Index[0] = start
	}
	atomic.StoreUint64(&d.Magic, Magic) // last: the header is complete
	return Open(mem)
}

// Open validates the header in mem and returns the ring. Every field is
// bounds-checked against len(mem); errors wrap ErrBadMagic, ErrVersion or
// ErrCorrupt. Each field is loaded from shared memory once, into the copy
// that is validated and then used: a peer rewriting the header while we
// open cannot slip in a value that was never checked.
func Open(mem []byte) (*Ring, error) {
	if len(mem) < HeaderLen {
		return nil, fmt.Errorf("%w: %d bytes is smaller than the %d-byte header", ErrCorrupt, len(mem), HeaderLen)
	}
	d := loadDescriptor((*descriptor)(unsafe.Pointer(&mem[0])))
	if d.Magic != Magic {
		return nil, fmt.Errorf("%w: %#x", ErrBadMagic, d.Magic)
	}
	if d.Version < OldestVersion || d.Version > Version {
		return nil, fmt.Errorf("%w: ring has version %d, this client speaks %d to %d", ErrVersion, d.Version, OldestVersion, Version)
	}
	cfg := Config{
		Type: d.Type, Policy: d.Policy, Capacity: d.Capacity, MaxMessage: d.MaxMessage,
		MemberSlots: d.MemberSlots, Lease: time.Duration(d.LeaseNanos), Epoch: d.Epoch,
	}
	if d.LeaseNanos > uint64(time.Hour) {
		return nil, fmt.Errorf("%w: lease %d ns", ErrCorrupt, d.LeaseNanos)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	switch {
	case d.HeaderLen != HeaderLen:
		return nil, fmt.Errorf("%w: header length %d, want %d", ErrCorrupt, d.HeaderLen, HeaderLen)
	case d.MembersOffset != HeaderLen:
		return nil, fmt.Errorf("%w: member table at %d, want %d", ErrCorrupt, d.MembersOffset, HeaderLen)
	case uint64(d.QueueCount) != cfg.queues():
		return nil, fmt.Errorf("%w: %d queues for type %d", ErrCorrupt, d.QueueCount, d.Type)
	case d.IndexChunks != IndexChunks:
		return nil, fmt.Errorf("%w: %d index chunks, want %d", ErrCorrupt, d.IndexChunks, IndexChunks)
	case d.DataOffset != HeaderLen+membersLen(cfg.MemberSlots):
		return nil, fmt.Errorf("%w: data offset %d, want %d", ErrCorrupt, d.DataOffset, HeaderLen+membersLen(cfg.MemberSlots))
	case d.FileSize != uint64(cfg.Size()):
		return nil, fmt.Errorf("%w: file size field %d, want %d", ErrCorrupt, d.FileSize, cfg.Size())
	case uint64(len(mem)) < d.FileSize:
		return nil, fmt.Errorf("%w: mapping is %d bytes, ring needs %d", ErrCorrupt, len(mem), d.FileSize)
	}
	r := &Ring{
		mem:        mem[:d.FileSize:d.FileSize],
		cfg:        cfg,
		version:    d.Version,
		capacity:   cfg.Capacity,
		mask:       cfg.Capacity - 1,
		capUnits:   uint32(cfg.Capacity >> unitShift),
		chunkUnits: uint32(cfg.Capacity>>unitShift) / IndexChunks,
		chunkShift: uint32(bits.TrailingZeros64(cfg.Capacity>>unitShift) - bits.TrailingZeros64(IndexChunks)),
		claimReach: uint32(2 * align16(FrameHeaderLen+uint64(cfg.MaxMessage)) >> unitShift),
		members:    HeaderLen,
		local:      map[uint32]*member{},
	}
	for q := uint64(0); q < cfg.queues(); q++ {
		r.data[q] = d.DataOffset + q*cfg.Capacity
		r.queues[q] = (*queueHeader)(unsafe.Pointer(&mem[OffQueues+q*QueueHeaderLen]))
		qh := r.queues[q]
		r.parks[q] = [2]*park{newPark(&qh.DataFutex, &qh.DataWaiters), newPark(&qh.SpaceFutex, &qh.SpaceWaiters)}
	}
	return r, nil
}

// loadDescriptor copies the descriptor out of shared memory, one atomic
// load per field (the agent line is left out: it changes all the time).
func loadDescriptor(d *descriptor) descriptor {
	return descriptor{
		Magic:         atomic.LoadUint64(&d.Magic),
		Version:       atomic.LoadUint32(&d.Version),
		HeaderLen:     atomic.LoadUint32(&d.HeaderLen),
		Type:          Type(atomic.LoadUint32((*uint32)(&d.Type))),
		Policy:        Policy(atomic.LoadUint32((*uint32)(&d.Policy))),
		Capacity:      atomic.LoadUint64(&d.Capacity),
		MaxMessage:    atomic.LoadUint32(&d.MaxMessage),
		MemberSlots:   atomic.LoadUint32(&d.MemberSlots),
		Epoch:         atomic.LoadUint64(&d.Epoch),
		MembersOffset: atomic.LoadUint64(&d.MembersOffset),
		LeaseNanos:    atomic.LoadUint64(&d.LeaseNanos),
		QueueCount:    atomic.LoadUint32(&d.QueueCount),
		IndexChunks:   atomic.LoadUint32(&d.IndexChunks),
		FileSize:      atomic.LoadUint64(&d.FileSize),
		DataOffset:    atomic.LoadUint64(&d.DataOffset),
	}
}

// Config returns the ring's validated configuration.
func (r *Ring) Config() Config { return r.cfg }

// Bytes returns the mapped memory of the ring.
func (r *Ring) Bytes() []byte { return r.mem }

// Epoch returns the creation epoch the ring had when it was opened.
func (r *Ring) Epoch() uint64 { return r.cfg.Epoch }

// Recreated reports whether the header in memory no longer matches the
// ring this view opened (the channel was re-formatted).
func (r *Ring) Recreated() bool {
	d := r.desc()
	return atomic.LoadUint64(&d.Magic) != Magic || atomic.LoadUint64(&d.Epoch) != r.cfg.Epoch
}

func (r *Ring) desc() *descriptor { return (*descriptor)(unsafe.Pointer(&r.mem[0])) }

func (r *Ring) slot(i uint32) *memberSlot {
	return (*memberSlot)(unsafe.Pointer(&r.mem[r.members+uint64(i)*MemberSlotLen]))
}

// frame returns the frame header at ring offset off of queue q. off is
// always masked and 16-aligned, so the header lies inside the data region.
func (r *Ring) frame(q int, off uint64) *frameHeader {
	return (*frameHeader)(unsafe.Pointer(&r.mem[r.data[q]+off]))
}

func (r *Ring) commitWord(q int, off uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.mem[r.data[q]+off]))
}

func (r *Ring) offset(units uint32) uint64 { return (uint64(units) << unitShift) & r.mask }

// SetAgentHeartbeat records the agent's liveness in the header.
func (r *Ring) SetAgentHeartbeat(pid uint32) {
	d := r.desc()
	atomic.StoreUint32(&d.AgentPid, pid)
	atomic.StoreUint64(&d.AgentBeat, uint64(monotonic()))
}
