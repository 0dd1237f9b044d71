package channel

import (
	"errors"
	"syscall"
)

// Sentinel errors. Functions wrap them with %w and add the offending values.
var (
	// ErrBadMagic: the memory does not start with Magic; it is not a ring.
	ErrBadMagic = errors.New("channel: not a shimmy ring (bad magic)")
	// ErrVersion: the ring was written by an ABI version this package does not speak.
	ErrVersion = errors.New("channel: unsupported ring ABI version")
	// ErrCorrupt: a value read from shared memory is out of bounds. The ring
	// (or the client that wrote it) is broken; nothing outside it is touched.
	ErrCorrupt = errors.New("channel: corrupt ring")
	// ErrConfig: a Config value is out of range.
	ErrConfig = errors.New("channel: invalid configuration")
	// ErrTooLarge: a message exceeds the channel's maximum message size.
	// errors.Is(err, syscall.EMSGSIZE) also holds.
	ErrTooLarge error = tooLarge{}
	// ErrNoSlot: every member slot of the ring is taken.
	ErrNoSlot = errors.New("channel: no free member slot")
	// ErrEvicted: this member's lease expired and it was reaped (it stalled
	// longer than the lease, or the agent removed it). Open a new member.
	ErrEvicted = errors.New("channel: member evicted after its lease expired")
	// ErrClosed: the member was closed.
	ErrClosed = errors.New("channel: member closed")
	// ErrWrongType: the operation does not fit the channel type.
	ErrWrongType = errors.New("channel: operation does not fit the channel type")
	// ErrExclusive: an exclusive publisher holds the queue, or an exclusive
	// publisher was asked for while other publishers write it.
	ErrExclusive = errors.New("channel: queue is held by an exclusive publisher")
	// ErrWouldBlock: a non-blocking operation found no message or no space.
	ErrWouldBlock = errors.New("channel: operation would block")
)

type tooLarge struct{}

func (tooLarge) Error() string { return "channel: message larger than the channel's maximum" }
func (tooLarge) Is(target error) bool {
	return target == syscall.EMSGSIZE
}
