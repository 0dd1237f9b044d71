package harness

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	_ "unsafe" // for go:linkname
)

// nanotime is the runtime's CLOCK_MONOTONIC read through the vDSO (about
// 20 ns, against a few hundred for the clock_gettime system call that
// unix.ClockGettime makes). Unlike time.Now's monotonic reading it is not
// offset by the process start, so stamps compare across processes.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Payload layout (little endian), for every system alike:
//
//	[0:4)    sequence number (u32), 0, 1, 2, ... per run
//	[4:8)    check (u32)
//	[8:16)   CLOCK_MONOTONIC send time (i64 ns)
//	[16:n-8) filler: a fixed pattern of the size
//	[n-8:n)  the sequence again (u64), for n >= 32
//
// The check folds the filler's CRC-32C and the sequence, the stamp and the
// trailing sequence together (headerCheck), so a publisher precomputes the
// filler's CRC once and pays a few nanoseconds a message, while the
// subscriber recomputes the CRC over every filler byte it received: a
// torn, stale or corrupted frame fails the check.
const (
	// MinSize is the smallest payload: the header alone.
	MinSize   = 16
	hdrLen    = 16
	tailLen   = 8
	tailAfter = 32 // payloads of this size or more carry the trailing sequence
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Codec encodes and verifies payloads of one size. It is not safe for
// concurrent use: each publisher and subscriber has its own.
type Codec struct {
	size      int
	template  []byte // filler in place, header and tail zero
	fillerCRC uint32
}

// headerCheck folds the filler's CRC-32C and the header fields into the
// check word with splitmix64's finaliser, in a few nanoseconds where
// continuing the CRC over them took about ten (crc32's dispatch, for a
// dozen bytes): every bit of every input flips about half the bits of
// the result, so a damaged field fails the check but with probability
// 2^-32.
func headerCheck(fillerCRC, seq uint32, ts int64, trailer uint64) uint32 {
	x := mix64(uint64(fillerCRC)<<32 | uint64(seq))
	x = mix64(x ^ uint64(ts))
	x = mix64(x ^ trailer)
	return uint32(x ^ x>>32)
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// NewCodec returns the codec for size-byte payloads.
func NewCodec(size int) (*Codec, error) {
	if size < MinSize {
		return nil, fmt.Errorf("payload size %d: minimum is %d", size, MinSize)
	}
	c := &Codec{size: size, template: make([]byte, size)}
	for i := hdrLen; i < c.fillerEnd(); i++ {
		c.template[i] = byte(i*7 + 13)
	}
	c.fillerCRC = crc32.Update(0, castagnoli, c.template[hdrLen:c.fillerEnd()])
	return c, nil
}

// Size returns the payload size.
func (c *Codec) Size() int { return c.size }

func (c *Codec) fillerEnd() int {
	if c.size >= tailAfter {
		return c.size - tailLen
	}
	return c.size
}

// Template returns a fresh payload buffer with the filler in place, for
// publishers that reuse one buffer and call Stamp per message.
func (c *Codec) Template() []byte { return append([]byte(nil), c.template...) }

// Encode writes a whole payload into buf (len(buf) == Size): filler and
// stamp. Zero-copy publishers call it on the claimed frame.
func (c *Codec) Encode(buf []byte, seq uint32, ts int64) {
	copy(buf[hdrLen:c.fillerEnd()], c.template[hdrLen:c.fillerEnd()])
	c.Stamp(buf, seq, ts)
}

// Stamp writes the sequence, time and check into buf, whose filler must
// already be in place (a buffer from Template, or one Encode filled).
func (c *Codec) Stamp(buf []byte, seq uint32, ts int64) {
	binary.LittleEndian.PutUint32(buf[0:4], seq)
	binary.LittleEndian.PutUint64(buf[8:16], uint64(ts))
	var trailer uint64
	if c.size >= tailAfter {
		trailer = uint64(seq)
		binary.LittleEndian.PutUint64(buf[c.size-tailLen:], trailer)
	}
	binary.LittleEndian.PutUint32(buf[4:8], headerCheck(c.fillerCRC, seq, ts, trailer))
}

// Verify checks a received payload and returns its sequence and stamp.
func (c *Codec) Verify(buf []byte) (seq uint32, ts int64, err error) {
	if len(buf) != c.size {
		return 0, 0, fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(buf), c.size)
	}
	seq = binary.LittleEndian.Uint32(buf[0:4])
	ts = int64(binary.LittleEndian.Uint64(buf[8:16]))
	var crc uint32
	if f := buf[hdrLen:c.fillerEnd()]; len(f) > 0 { // 16-byte payloads have none
		crc = crc32.Update(0, castagnoli, f)
	}
	var trailer uint64
	if c.size >= tailAfter {
		trailer = binary.LittleEndian.Uint64(buf[c.size-tailLen:])
		if trailer != uint64(seq) {
			return seq, ts, fmt.Errorf("%w: sequence %d, trailer %d", ErrCorrupt, seq, trailer)
		}
	}
	if got, want := binary.LittleEndian.Uint32(buf[4:8]), headerCheck(crc, seq, ts, trailer); got != want {
		return seq, ts, fmt.Errorf("%w: message %d: check %#x, computed %#x", ErrCorrupt, seq, got, want)
	}
	return seq, ts, nil
}
