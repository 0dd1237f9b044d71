package channel

import "fmt"

// Position is a packed ring position as stored in shared memory (Tail,
// Head, Release, Index, a member's Cursor and Pending): seq<<32 | units.
// Seq counts messages (not padding) and units count 16-byte units of the
// data stream, both modulo 2^32. Positions order by units, with modular
// arithmetic: two positions of one queue are never more than a lap
// (MaxCapacity) apart, far less than 2^31 units.
//
// Position is the only decoder of packed positions: other packages use its
// accessors rather than shifting the bits themselves.
type Position uint64

// MakePosition packs seq and units.
func MakePosition(seq, units uint32) Position { return mkpos(seq, units) }

// Seq returns the message sequence number (modulo 2^32).
func (p Position) Seq() uint32 { return p.seq() }

// Units returns the position in the data stream in 16-byte units (modulo 2^32).
func (p Position) Units() uint32 { return p.units() }

// String prints "seq/units", the form ringdump and docs/ring-format.md use.
func (p Position) String() string { return fmt.Sprintf("%d/%d", p.seq(), p.units()) }

// Before reports whether p lies behind q in the data stream.
func (p Position) Before(q Position) bool { return int32(p.units()-q.units()) < 0 }

// MessagesSince returns how many messages lie between q and p (p - q in
// seq, modulo 2^32): a subscriber's lag is tail.MessagesSince(cursor).
func (p Position) MessagesSince(q Position) uint32 { return p.seq() - q.seq() }

// BytesSince returns how many bytes of the data stream lie between q and p
// (p - q in units, modulo 2^32 units, times 16).
func (p Position) BytesSince(q Position) uint64 {
	return uint64(udist(p.units(), q.units())) << unitShift
}

// Extended is a position whose counters do not wrap: Seq counts messages
// and Units 16-byte units, both 64-bit. A ring stores 32-bit counters,
// which wrap after 2^32 messages or 64 GiB; whoever must name a message
// for longer (the mirror's wire format: origin, channel, epoch, position)
// keeps an Extended and advances it with Position.Extend.
type Extended struct {
	Seq   uint64
	Units uint64
}

// Extend returns the Extended position whose low 32 bits of each counter
// are p's and which lies nearest prev: within 2^31 messages and units of
// it, ahead or behind. A reader that extends every position it reads from
// the previous one it extended never loses a wrap, as long as it reads
// more often than every 2^31 messages and 2^31 units (32 GiB). A result
// behind prev means p was older than prev; extending from Extended{} a
// position behind zero wraps the 64-bit counters, so callers validate
// positions read from shared memory first (as they must anyway).
func (p Position) Extend(prev Extended) Extended {
	return Extended{Seq: extend32(p.seq(), prev.Seq), Units: extend32(p.units(), prev.Units)}
}

// extend32 returns the 64-bit value nearest prev whose low 32 bits are v.
func extend32(v uint32, prev uint64) uint64 {
	return prev + uint64(int64(int32(v-uint32(prev))))
}

// Position returns e packed as a ring stores it (both counters modulo 2^32).
func (e Extended) Position() Position { return mkpos(uint32(e.Seq), uint32(e.Units)) }

// Bytes returns e's offset in the data stream in bytes.
func (e Extended) Bytes() uint64 { return e.Units << unitShift }

// String prints "seq/units" like Position.
func (e Extended) String() string { return fmt.Sprintf("%d/%d", e.Seq, e.Units) }
