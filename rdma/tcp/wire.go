package tcp

import (
	"encoding/binary"
	"fmt"

	"github.com/shimmy-dev/shimmy/rdma"
)

// The wire format of a link (docs/transport-wire.md is the normative
// description; this file is its Go rendering and wire_test.go pins the
// two). Inside the TLS 1.3 stream, a link is a sequence of frames, each a
// 24-byte header followed by Length payload bytes:
//
//	0         2    3    4                   8                   12                  16                                      24
//	+---------+----+----+-------------------+-------------------+-------------------+---------------------------------------+
//	| magic   |ver |type| length (u32)      | key|code (u32)    | imm (u32)         | offset (u64)                          |
//	+---------+----+----+-------------------+-------------------+-------------------+---------------------------------------+
//	| payload: Length bytes (write data, control message, close reason)
//
// All integers little-endian. Fields a type does not use are zero.

// Header field offsets.
const (
	OffMagic   = 0  // u16 Magic
	OffVersion = 2  // u8 Version
	OffType    = 3  // u8 frame type
	OffLength  = 4  // u32 payload bytes after the header
	OffKey     = 8  // u32 region key (write frames) or close code (close)
	OffImm     = 12 // u32 immediate (write-with-immediate)
	OffOffset  = 16 // u64 byte offset into the region (write frames)
	HeaderLen  = 24
)

// Magic is the bytes "SM" read as a little-endian u16.
const Magic uint16 = 0x4d53

// Version of the wire format this package speaks.
const Version uint8 = 1

// Frame types.
const (
	TypeHello    uint8 = 1 // first frame each way; Length 0
	TypeWrite    uint8 = 2 // data into region Key at Offset
	TypeWriteImm uint8 = 3 // TypeWrite, then an OpImm completion with Imm
	TypeControl  uint8 = 4 // one control message
	TypePing     uint8 = 5 // heartbeat; Length 0
	TypeClose    uint8 = 6 // the sender closes the link: Key is the code, payload a reason
)

// Bounds of Length per type.
const (
	MaxWrite  = 1 << 30 // one write frame; regions bound it further
	MaxReason = 256     // close reason text
)

// Close codes.
const (
	CodeNormal   uint32 = 0 // Close was called
	CodeProtocol uint32 = 1 // a malformed frame
	CodeRegion   uint32 = 2 // a write outside the regions registered on the link
	CodeAuth     uint32 = 3 // the peer is not authorized
	CodeVersion  uint32 = 4 // an unknown wire version
)

// Header is a decoded frame header.
type Header struct {
	Type   uint8
	Length uint32
	Key    uint32 // key or close code
	Imm    uint32
	Offset uint64
}

// Append encodes h after b.
func (h Header) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, Magic)
	b = append(b, Version, h.Type)
	b = binary.LittleEndian.AppendUint32(b, h.Length)
	b = binary.LittleEndian.AppendUint32(b, h.Key)
	b = binary.LittleEndian.AppendUint32(b, h.Imm)
	return binary.LittleEndian.AppendUint64(b, h.Offset)
}

// errVersion is a frame of another wire version.
var errVersion = fmt.Errorf("%w: unknown wire version", rdma.ErrProtocol)

// Decode reads the header at the start of b, checking magic, version,
// type, that unused fields are zero and that Length is within its type's
// bound. It never reads past HeaderLen.
func Decode(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("%w: short header (%d bytes)", rdma.ErrProtocol, len(b))
	}
	if m := binary.LittleEndian.Uint16(b[OffMagic:]); m != Magic {
		return Header{}, fmt.Errorf("%w: bad magic %#04x", rdma.ErrProtocol, m)
	}
	if v := b[OffVersion]; v != Version {
		return Header{}, fmt.Errorf("%w %d", errVersion, v)
	}
	h := Header{
		Type:   b[OffType],
		Length: binary.LittleEndian.Uint32(b[OffLength:]),
		Key:    binary.LittleEndian.Uint32(b[OffKey:]),
		Imm:    binary.LittleEndian.Uint32(b[OffImm:]),
		Offset: binary.LittleEndian.Uint64(b[OffOffset:]),
	}
	var maxLen uint32
	unused := false // a field this type does not use is set
	switch h.Type {
	case TypeHello, TypePing:
		unused = h.Key != 0 || h.Imm != 0 || h.Offset != 0
	case TypeWrite:
		maxLen, unused = MaxWrite, h.Imm != 0
	case TypeWriteImm:
		maxLen = MaxWrite
	case TypeControl:
		maxLen, unused = rdma.MaxControl, h.Key != 0 || h.Imm != 0 || h.Offset != 0
	case TypeClose:
		maxLen, unused = MaxReason, h.Imm != 0 || h.Offset != 0
	default:
		return Header{}, fmt.Errorf("%w: unknown frame type %d", rdma.ErrProtocol, h.Type)
	}
	if h.Length > maxLen {
		return Header{}, fmt.Errorf("%w: frame type %d of %d bytes, at most %d", rdma.ErrProtocol, h.Type, h.Length, maxLen)
	}
	if unused {
		return Header{}, fmt.Errorf("%w: frame type %d with a field it does not use set", rdma.ErrProtocol, h.Type)
	}
	return h, nil
}
