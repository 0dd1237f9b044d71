package channel

import "unsafe"

// The ring file is a public, versioned ABI (docs/ring-format.md is the
// normative description; this file is the Go rendering of it). Every field
// has one offset constant below and a Go struct whose layout
// TestLayoutOffsets pins to those constants.
//
//	0      +------------------------------------------------------------+
//	       | descriptor, cache line 0: magic, version, type, policy,    |
//	       | capacity, max message, member slots, epoch, offsets, lease |
//	64     | descriptor, cache line 1: queue count, index chunks, sizes |
//	128    | agent line: agent heartbeat, agent pid                     |
//	192    | (reserved up to 1024)                                      |
//	1024   | queue 0 header (1024 bytes, see below)                     |
//	2048   | queue 1 header (stream channels only; zero otherwise)      |
//	3072   | (reserved up to 4096)                                      |
//	4096   +------------------------------------------------------------+
//	       | member table: MemberSlots x 64-byte slots                  |
//	       +------------------------------------------------------------+
//	       | queue 0 data: Capacity bytes (power of two)                |
//	       +------------------------------------------------------------+
//	       | queue 1 data: Capacity bytes (stream channels only)        |
//	       +------------------------------------------------------------+
//
// Queue header, each counter on its own 64-byte cache line because
// different parties write them:
//
//	+0    Tail      packed position of the next claim (publishers CAS)
//	+64   Head      packed position of the next record to take (stream readers CAS)
//	+128  Limit     units of the slowest live pubsub subscriber (publishers raise it)
//	+192  Release   packed position up to which stream records are consumed
//	+256  DataFutex, DataWaiters   readers sleep on DataFutex
//	+320  SpaceFutex, SpaceWaiters writers sleep on SpaceFutex
//	+384  Reaped, Evicted          counters written by reapers (rare)
//	+448  Index[64] packed position of the first record at or after each chunk boundary
//	+960  Exclusive slot+1 of the queue's exclusive publisher (0: none)
//	+964  Reserve   slot+1 of the publisher that reserved the room (block pubsub; 0: none)
//
// A packed position is seq<<32 | units: seq counts messages (not padding)
// modulo 2^32 and units counts 16-byte units of the data stream modulo 2^32
// (64 GiB). Positions compare with modular arithmetic, which is why a
// capacity may not exceed MaxCapacity.
//
// A record (frame) starts on a 16-byte boundary:
//
//	0                   4                   8        12       14       16
//	+-------------------+-------------------+--------+--------+--------+-------
//	| tag units (u32)   | length|flags (u32)| seq u32| slot u16| rsvd  | payload
//	+-------------------+-------------------+--------+--------+--------+-------
//	 \_______ commit word (u64, stored last, CAS) _______/
//
// The commit word binds a frame to its lap: a reader at position P accepts
// the frame only if its tag equals P's units. The frame occupies
// align16(16 + length) bytes. A padding frame (flag FlagPadding) fills the
// space to the end of the ring when a record would not fit before the
// wrap, and stands in for the messages of an abandoned or dead claim.

// Magic identifies a Shimmy ring: "SHIMRING" read as a little-endian u64.
const Magic uint64 = 0x474e4952_4d494853

// Version is the ABI version this package writes. It reads rings of
// OldestVersion up to Version: version 2 added gap frames (padding that
// stands for messages lost before they reached the ring, section 5 of the
// ABI), which a version 1 reader would take for a corrupt ring.
const Version uint32 = 2

// OldestVersion is the oldest ABI version this package reads. A version
// 1 ring never holds a gap frame (a publisher refuses to write one there).
const OldestVersion uint32 = 1

// Descriptor offsets (cache line 0 and 1, written once at format time).
const (
	OffMagic         = 0    // u64 Magic
	OffVersion       = 8    // u32 ABI version
	OffHeaderLen     = 12   // u32 bytes of the header block (HeaderLen)
	OffType          = 16   // u32 channel type (TypePubSub, TypeStream)
	OffPolicy        = 20   // u32 overflow policy (PolicyBlock, PolicyOverwrite)
	OffCapacity      = 24   // u64 data bytes per queue, power of two
	OffMaxMessage    = 32   // u32 largest payload in bytes
	OffMemberSlots   = 36   // u32 number of 64-byte member slots
	OffEpoch         = 40   // u64 creation epoch; changes when the channel is re-created
	OffMembersOffset = 48   // u64 file offset of the member table
	OffLeaseNanos    = 56   // u64 member lease in nanoseconds
	OffQueueCount    = 64   // u32 1 (pubsub) or 2 (stream)
	OffIndexChunks   = 68   // u32 entries in each queue's Index (IndexChunks)
	OffFileSize      = 72   // u64 total bytes of the ring file
	OffDataOffset    = 80   // u64 file offset of queue 0 data; queue q at DataOffset + q*Capacity
	OffAgentBeat     = 128  // u64 agent heartbeat, CLOCK_MONOTONIC ns (0: no agent)
	OffAgentPid      = 136  // u32 agent pid (informational)
	OffQueues        = 1024 // first queue header
)

// Queue header offsets, relative to the queue header.
const (
	QueueHeaderLen   = 1024
	QOffTail         = 0   // u64 packed position of the next claim
	QOffHead         = 64  // u64 packed position of the next record a stream reader takes
	QOffLimit        = 128 // u64 units of the slowest live subscriber (pubsub, block)
	QOffRelease      = 192 // u64 packed position below which stream records are consumed
	QOffDataFutex    = 256 // u32 bumped by publishers when DataWaiters > 0
	QOffDataWaiters  = 260 // u32 readers asleep on DataFutex
	QOffSpaceFutex   = 320 // u32 bumped by consumers when SpaceWaiters > 0
	QOffSpaceWaiters = 324 // u32 writers asleep on SpaceFutex
	QOffReaped       = 384 // u64 claims or takes of dead members that were unblocked
	QOffEvicted      = 392 // u64 members of this queue evicted after their lease expired
	QOffIndex        = 448 // [IndexChunks]u64 first record at or after each chunk boundary
	QOffExclusive    = 960 // u32 slot+1 of the exclusive publisher, which stores Tail without CAS; 0: none
	QOffReserve      = 964 // u32 slot+1 of a reserving publisher (block pubsub): the others treat the ring as full; 0: none
)

// Member slot offsets, relative to the slot. Each slot is one cache line
// written by its owner (lease, cursor, pending) and read by everyone else.
const (
	MemberSlotLen  = 64
	MOffState      = 0  // u32 MemberFree, MemberInit, MemberActive, MemberDead
	MOffRole       = 4  // u32 role | queue<<8
	MOffPid        = 8  // u32 owner pid in its own PID namespace (informational)
	MOffGen        = 12 // u32 bumped at every acquisition
	MOffLease      = 16 // u64 last heartbeat, CLOCK_MONOTONIC ns; 0 while unowned
	MOffCursor     = 24 // u64 subscriber: packed position of its next record
	MOffPending    = 32 // u64 publisher: packed position of its in-flight claim; reader: of its take
	MOffPendingLen = 40 // u64 publisher: bytes of the in-flight claim (0: none)
	MOffLost       = 48 // u64 subscriber: messages lost to overwrite
	MOffCount      = 56 // u64 messages published or consumed; stored at the first and every 256th
)

// Frame offsets, relative to the frame start.
const (
	FrameHeaderLen = 16
	FrameAlign     = 16
	FOffTag        = 0  // u32 units of the frame's own position (lap binding)
	FOffLength     = 4  // u32 payload length | flags
	FOffSeq        = 8  // u32 message sequence (data frames) or next sequence (padding)
	FOffSlot       = 12 // u16 publisher's member slot (informational); SlotPadding, SlotGap
)

// Slot values of padding frames (member slots are below 4096).
const (
	SlotPadding uint16 = 0xffff // padding: space, or a claim never committed
	SlotGap     uint16 = 0xfffe // a gap frame (version 2): padding of length 0 whose Seq skips messages lost upstream
)

// Frame length word flags.
const (
	FlagPadding  uint32 = 1 << 31 // frame fills the ring to its end; skip it
	FlagConsumed uint32 = 1 << 30 // stream: the record was taken and copied out
	LengthMask   uint32 = 1<<30 - 1
)

// Sizes and limits.
const (
	HeaderLen    = 4096
	IndexChunks  = 64
	MinCapacity  = 4096
	MaxCapacity  = 1 << 30
	MaxMembers   = 4096
	unitShift    = 4 // 16-byte units
	DefaultLease = 2_000_000_000
	MinLease     = 10_000_000
	MaxLease     = 3_600_000_000_000 // 1h; Open takes a longer lease for corruption
)

// Channel types (Type, names.go).
const (
	TypePubSub Type = 1
	TypeStream Type = 2
)

// Overflow policies (Policy, names.go).
const (
	PolicyBlock     Policy = 1
	PolicyOverwrite Policy = 2
)

// Member slot states.
const (
	MemberFree   uint32 = 0
	MemberInit   uint32 = 1
	MemberActive uint32 = 2
	MemberDead   uint32 = 3
)

// Member roles (low byte of the role word; the queue index is in the next byte).
const (
	RolePublisher  uint32 = 1
	RoleSubscriber uint32 = 2
)

// descriptor is the Go rendering of the first 192 bytes of the header.
type descriptor struct {
	Magic         uint64
	Version       uint32
	HeaderLen     uint32
	Type          Type
	Policy        Policy
	Capacity      uint64
	MaxMessage    uint32
	MemberSlots   uint32
	Epoch         uint64
	MembersOffset uint64
	LeaseNanos    uint64
	QueueCount    uint32
	IndexChunks   uint32
	FileSize      uint64
	DataOffset    uint64
	_             [40]byte
	AgentBeat     uint64
	AgentPid      uint32
}

// queueHeader is the Go rendering of a queue header.
type queueHeader struct {
	Tail         uint64
	_            [56]byte
	Head         uint64
	_            [56]byte
	Limit        uint64
	_            [56]byte
	Release      uint64
	_            [56]byte
	DataFutex    uint32
	DataWaiters  uint32
	_            [56]byte
	SpaceFutex   uint32
	SpaceWaiters uint32
	_            [56]byte
	Reaped       uint64
	Evicted      uint64
	_            [48]byte
	Index        [IndexChunks]uint64
	Exclusive    uint32
	Reserve      uint32
	_            [56]byte
}

// memberSlot is the Go rendering of a member slot.
type memberSlot struct {
	State      uint32
	Role       uint32
	Pid        uint32
	Gen        uint32
	Lease      uint64
	Cursor     uint64
	Pending    uint64
	PendingLen uint64
	Lost       uint64
	Count      uint64
}

// frameHeader is the Go rendering of a frame header.
type frameHeader struct {
	Tag    uint32
	Length uint32
	Seq    uint32
	Slot   uint16
	_      uint16
}

var (
	_ [QueueHeaderLen - unsafe.Sizeof(queueHeader{})]byte
	_ [unsafe.Sizeof(queueHeader{}) - QueueHeaderLen]byte
	_ [MemberSlotLen - unsafe.Sizeof(memberSlot{})]byte
	_ [unsafe.Sizeof(memberSlot{}) - MemberSlotLen]byte
	_ [FrameHeaderLen - unsafe.Sizeof(frameHeader{})]byte
)

// pos is the package's short name for a packed position (position.go).
type pos = Position

func mkpos(seq, units uint32) pos { return pos(uint64(seq)<<32 | uint64(units)) }
func (p pos) seq() uint32         { return uint32(p >> 32) }
func (p pos) units() uint32       { return uint32(p) }

// udist is a - b in units, modulo 2^32: how far a is ahead of b.
func udist(a, b uint32) uint32 { return a - b }

func align16(n uint64) uint64 { return (n + FrameAlign - 1) &^ (FrameAlign - 1) }
