// Package wire encodes and decodes the mirror's messages: the normative
// description is docs/mirror-wire.md, whose offsets are the constants
// below (pinned by wire_test.go). Every decoder validates every field
// against the bytes it was given: a peer is untrusted.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Errors. Every decoding error wraps one of them.
var (
	ErrProtocol = errors.New("mirror wire: protocol violation")
	ErrVersion  = errors.New("mirror wire: unsupported version")
)

// Magic is "SHMR" read as a little-endian u32; Version the format version.
const (
	Magic   uint32 = 0x524d4853
	Version uint8  = 2
)

// Message header, at the start of every control message and data batch.
const (
	HeaderLen  = 16
	OffMagic   = 0  // u32 Magic
	OffVersion = 4  // u8 Version
	OffType    = 5  // u8 message type
	OffFlags   = 6  // u16 zero
	OffLength  = 8  // u32 bytes of the whole message, header included
	OffFlow    = 12 // u32 flow id (0: the link itself)
)

// Message types.
const (
	TypeHello  uint8 = 1 // control, both ways, first: the sender's inbox key
	TypeSub    uint8 = 2 // control, receiver to origin: open a flow
	TypeOpen   uint8 = 3 // control, origin to receiver: the flow is open
	TypeRefuse uint8 = 4 // control, origin to receiver: the flow is refused
	TypeAck    uint8 = 5 // control, receiver to origin: inbox and flow progress
	TypeData   uint8 = 6 // data batch, one-sided write into the peer's inbox
)

// Hello body.
const (
	HelloLen     = HeaderLen + 24
	HOffInboxKey = 16 // [20]byte rdma.RemoteKey of the sender's inbox
	HOffReserved = 36 // u32 zero
)

// Sub body.
const (
	SubFixedLen = HeaderLen + 40
	SOffEpoch   = 16 // u64 origin epoch of the high-water mark; 0: none
	SOffSeq     = 24 // u64 high-water mark: extended seq of the next message
	SOffUnits   = 32 // u64 high-water mark: extended units of the next message
	SOffQueue   = 40 // u32 queue (stream direction; 0 for pubsub)
	SOffCredit  = 44 // u32 stream records the receiver takes now
	SOffNSLen   = 48 // u16 namespace length
	SOffChLen   = 50 // u16 channel length
	SOffWindow  = 52 // u32 record bytes the receiver's spool takes now
	SOffNames   = 56 // namespace bytes, then channel bytes
)

// MaxName bounds the namespace and channel names of a Sub.
const MaxName = 255

// Open body.
const (
	OpenLen    = HeaderLen + 48
	OOffEpoch  = 16 // u64 origin epoch
	OOffSeq    = 24 // u64 extended seq of the first message the flow carries
	OOffUnits  = 32 // u64 extended units of it
	OOffType   = 40 // u32 channel type
	OOffPolicy = 44 // u32 overflow policy
	OOffLost   = 48 // u64 messages the receiver missed before the first
	OOffMaxMsg = 56 // u32 the channel's max message
	OOffRes    = 60 // u32 zero
)

// Refuse body: a code and a reason.
const (
	RefuseFixedLen = HeaderLen + 8
	ROffCode       = 16 // u32 RefuseCode
	ROffTextLen    = 20 // u32 bytes of text (at most MaxRefuseText)
	ROffText       = 24
	MaxRefuseText  = 1024
)

// Refusal codes.
const (
	RefuseNotShared uint32 = 1 // the channel is not shared with this peer here
	RefuseNotFound  uint32 = 2 // no such channel (yet)
	RefuseMismatch  uint32 = 3 // type or queue do not fit the channel
	RefuseBroken    uint32 = 4 // the channel is broken here
)

// Ack body: the inbox bytes consumed, then Count entries.
const (
	AckFixedLen  = HeaderLen + 16
	AOffConsumed = 16 // u64 inbox bytes the receiver is done with (total)
	AOffCount    = 24 // u32 entries
	AOffReserved = 28 // u32 zero
	AOffEntries  = 32
	AckEntryLen  = 32
	EOffFlow     = 0  // u32 flow id
	EOffCredit   = 4  // u32 stream: records the receiver takes now
	EOffSeq      = 8  // u64 extended seq of the next message it expects
	EOffUnits    = 16 // u64 extended units of it
	EOffWindow   = 24 // u64 the flow's record bytes the origin may send, in all
	MaxAckCount  = (65536 - AckFixedLen) / AckEntryLen
)

// Data batch body: where the flow resumes after it, losses, then Count
// records.
const (
	DataFixedLen = HeaderLen + 32
	DOffSeq      = 16 // u64 extended seq of the message after the batch
	DOffUnits    = 24 // u64 extended units of it
	DOffLost     = 32 // u64 messages lost (overwrite) since the previous batch
	DOffCount    = 40 // u32 records
	DOffReserved = 44 // u32 zero
	DOffRecords  = 48
	RecordLen    = 16 // record header; payload follows, padded to RecordAlign
	RecOffSeq    = 0  // u64 extended seq (pubsub) or outbox id (stream)
	RecOffLen    = 8  // u32 payload bytes
	RecOffRes    = 12 // u32 zero
	RecordAlign  = 8
)

var le = binary.LittleEndian

// Header is a decoded message header.
type Header struct {
	Type   uint8
	Length uint32
	Flow   uint32
}

// PutHeader writes a header into b[:HeaderLen].
func PutHeader(b []byte, typ uint8, length, flow uint32) {
	le.PutUint32(b[OffMagic:], Magic)
	b[OffVersion] = Version
	b[OffType] = typ
	le.PutUint16(b[OffFlags:], 0)
	le.PutUint32(b[OffLength:], length)
	le.PutUint32(b[OffFlow:], flow)
}

// ParseHeader validates the header of b, which must hold the whole
// message: magic, version, a known type, zero flags, and a length equal
// to len(b).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("%w: %d bytes, shorter than a header", ErrProtocol, len(b))
	}
	if m := le.Uint32(b[OffMagic:]); m != Magic {
		return Header{}, fmt.Errorf("%w: magic %#x", ErrProtocol, m)
	}
	if v := b[OffVersion]; v != Version {
		return Header{}, fmt.Errorf("%w: version %d, this agent speaks %d", ErrVersion, v, Version)
	}
	h := Header{Type: b[OffType], Length: le.Uint32(b[OffLength:]), Flow: le.Uint32(b[OffFlow:])}
	if h.Type < TypeHello || h.Type > TypeData {
		return Header{}, fmt.Errorf("%w: unknown message type %d", ErrProtocol, h.Type)
	}
	if f := le.Uint16(b[OffFlags:]); f != 0 {
		return Header{}, fmt.Errorf("%w: flags %#x", ErrProtocol, f)
	}
	if uint64(h.Length) != uint64(len(b)) {
		return Header{}, fmt.Errorf("%w: length field %d, message of %d bytes", ErrProtocol, h.Length, len(b))
	}
	return h, nil
}

// expect checks that b is a message of type typ with a valid header.
func expect(b []byte, typ uint8, min int) (Header, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, err
	}
	if h.Type != typ {
		return h, fmt.Errorf("%w: message type %d, want %d", ErrProtocol, h.Type, typ)
	}
	if len(b) < min {
		return h, fmt.Errorf("%w: type %d message of %d bytes, at least %d", ErrProtocol, typ, len(b), min)
	}
	return h, nil
}

// Hello announces the sender's inbox.
type Hello struct {
	InboxKey [20]byte // an encoded rdma.RemoteKey
}

// Append appends h's encoding to b.
func (h Hello) Append(b []byte) []byte {
	b, m := grow(b, HelloLen)
	PutHeader(m, TypeHello, HelloLen, 0)
	copy(m[HOffInboxKey:], h.InboxKey[:])
	return b
}

// ParseHello decodes a Hello.
func ParseHello(b []byte) (Hello, error) {
	var h Hello
	if _, err := expect(b, TypeHello, HelloLen); err != nil {
		return h, err
	}
	if len(b) != HelloLen || le.Uint32(b[HOffReserved:]) != 0 {
		return h, fmt.Errorf("%w: hello of %d bytes or reserved set", ErrProtocol, len(b))
	}
	copy(h.InboxKey[:], b[HOffInboxKey:])
	return h, nil
}

// Pos is an extended position: a message's place in its origin ring.
type Pos struct{ Seq, Units uint64 }

// Sub asks the origin for a flow of one channel.
type Sub struct {
	Flow      uint32
	Epoch     uint64 // of Next; 0: the receiver has no high-water mark
	Next      Pos
	Queue     uint32
	Credit    uint32
	Window    uint32 // record bytes the receiver's spool takes now
	Namespace string
	Channel   string
}

// Append appends s's encoding to b.
func (s Sub) Append(b []byte) []byte {
	n := SubFixedLen + len(s.Namespace) + len(s.Channel)
	b, m := grow(b, n)
	PutHeader(m, TypeSub, uint32(n), s.Flow)
	le.PutUint64(m[SOffEpoch:], s.Epoch)
	le.PutUint64(m[SOffSeq:], s.Next.Seq)
	le.PutUint64(m[SOffUnits:], s.Next.Units)
	le.PutUint32(m[SOffQueue:], s.Queue)
	le.PutUint32(m[SOffCredit:], s.Credit)
	le.PutUint16(m[SOffNSLen:], uint16(len(s.Namespace)))
	le.PutUint16(m[SOffChLen:], uint16(len(s.Channel)))
	le.PutUint32(m[SOffWindow:], s.Window)
	copy(m[SOffNames:], s.Namespace)
	copy(m[SOffNames+len(s.Namespace):], s.Channel)
	return b
}

// ParseSub decodes a Sub. Names are returned as sent (1..MaxName bytes
// each); the caller checks them as registry names.
func ParseSub(b []byte) (Sub, error) {
	h, err := expect(b, TypeSub, SubFixedLen)
	if err != nil {
		return Sub{}, err
	}
	nl, cl := int(le.Uint16(b[SOffNSLen:])), int(le.Uint16(b[SOffChLen:]))
	switch {
	case h.Flow == 0:
		return Sub{}, fmt.Errorf("%w: sub for flow 0", ErrProtocol)
	case nl == 0 || cl == 0 || nl > MaxName || cl > MaxName:
		return Sub{}, fmt.Errorf("%w: sub names of %d and %d bytes", ErrProtocol, nl, cl)
	case len(b) != SubFixedLen+nl+cl:
		return Sub{}, fmt.Errorf("%w: sub of %d bytes with names of %d and %d", ErrProtocol, len(b), nl, cl)
	}
	return Sub{
		Flow: h.Flow, Epoch: le.Uint64(b[SOffEpoch:]),
		Next:  Pos{le.Uint64(b[SOffSeq:]), le.Uint64(b[SOffUnits:])},
		Queue: le.Uint32(b[SOffQueue:]), Credit: le.Uint32(b[SOffCredit:]), Window: le.Uint32(b[SOffWindow:]),
		Namespace: string(b[SOffNames : SOffNames+nl]),
		Channel:   string(b[SOffNames+nl : SOffNames+nl+cl]),
	}, nil
}

// Open tells the receiver where its flow starts.
type Open struct {
	Flow       uint32
	Epoch      uint64
	Start      Pos
	Type       uint32
	Policy     uint32
	Lost       uint64
	MaxMessage uint32
}

// Append appends o's encoding to b.
func (o Open) Append(b []byte) []byte {
	b, m := grow(b, OpenLen)
	PutHeader(m, TypeOpen, OpenLen, o.Flow)
	le.PutUint64(m[OOffEpoch:], o.Epoch)
	le.PutUint64(m[OOffSeq:], o.Start.Seq)
	le.PutUint64(m[OOffUnits:], o.Start.Units)
	le.PutUint32(m[OOffType:], o.Type)
	le.PutUint32(m[OOffPolicy:], o.Policy)
	le.PutUint64(m[OOffLost:], o.Lost)
	le.PutUint32(m[OOffMaxMsg:], o.MaxMessage)
	le.PutUint32(m[OOffRes:], 0)
	return b
}

// ParseOpen decodes an Open.
func ParseOpen(b []byte) (Open, error) {
	h, err := expect(b, TypeOpen, OpenLen)
	if err != nil {
		return Open{}, err
	}
	if len(b) != OpenLen || le.Uint32(b[OOffRes:]) != 0 || h.Flow == 0 || le.Uint64(b[OOffEpoch:]) == 0 {
		return Open{}, fmt.Errorf("%w: open of %d bytes, flow %d, reserved or epoch invalid", ErrProtocol, len(b), h.Flow)
	}
	return Open{
		Flow: h.Flow, Epoch: le.Uint64(b[OOffEpoch:]),
		Start: Pos{le.Uint64(b[OOffSeq:]), le.Uint64(b[OOffUnits:])},
		Type:  le.Uint32(b[OOffType:]), Policy: le.Uint32(b[OOffPolicy:]),
		Lost: le.Uint64(b[OOffLost:]), MaxMessage: le.Uint32(b[OOffMaxMsg:]),
	}, nil
}

// Refuse says why a Sub was refused.
type Refuse struct {
	Flow uint32
	Code uint32
	Text string
}

// Append appends r's encoding to b (the text cut to MaxRefuseText).
func (r Refuse) Append(b []byte) []byte {
	t := r.Text[:min(len(r.Text), MaxRefuseText)]
	n := RefuseFixedLen + len(t)
	b, m := grow(b, n)
	PutHeader(m, TypeRefuse, uint32(n), r.Flow)
	le.PutUint32(m[ROffCode:], r.Code)
	le.PutUint32(m[ROffTextLen:], uint32(len(t)))
	copy(m[ROffText:], t)
	return b
}

// ParseRefuse decodes a Refuse.
func ParseRefuse(b []byte) (Refuse, error) {
	h, err := expect(b, TypeRefuse, RefuseFixedLen)
	if err != nil {
		return Refuse{}, err
	}
	tl := le.Uint32(b[ROffTextLen:])
	if tl > MaxRefuseText || uint64(len(b)) != RefuseFixedLen+uint64(tl) || h.Flow == 0 {
		return Refuse{}, fmt.Errorf("%w: refusal of %d bytes with text of %d, flow %d", ErrProtocol, len(b), tl, h.Flow)
	}
	return Refuse{Flow: h.Flow, Code: le.Uint32(b[ROffCode:]), Text: string(b[ROffText:])}, nil
}

// AckEntry is one flow's progress in an Ack.
type AckEntry struct {
	Flow   uint32
	Credit uint32
	Next   Pos
	// Window: the origin starts a record of the flow only while
	// the record bytes it sent on it since the Open are below Window.
	Window uint64
}

// Ack reports the inbox bytes consumed and flows' progress.
type Ack struct {
	Consumed uint64
	Entries  []AckEntry
}

// Append appends a's encoding to b; at most MaxAckCount entries.
func (a Ack) Append(b []byte) []byte {
	es := a.Entries[:min(len(a.Entries), MaxAckCount)]
	n := AckFixedLen + AckEntryLen*len(es)
	b, m := grow(b, n)
	PutHeader(m, TypeAck, uint32(n), 0)
	le.PutUint64(m[AOffConsumed:], a.Consumed)
	le.PutUint32(m[AOffCount:], uint32(len(es)))
	le.PutUint32(m[AOffReserved:], 0)
	for i, e := range es {
		x := m[AOffEntries+i*AckEntryLen:]
		le.PutUint32(x[EOffFlow:], e.Flow)
		le.PutUint32(x[EOffCredit:], e.Credit)
		le.PutUint64(x[EOffSeq:], e.Next.Seq)
		le.PutUint64(x[EOffUnits:], e.Next.Units)
		le.PutUint64(x[EOffWindow:], e.Window)
	}
	return b
}

// ParseAck decodes an Ack.
func ParseAck(b []byte) (Ack, error) {
	h, err := expect(b, TypeAck, AckFixedLen)
	if err != nil {
		return Ack{}, err
	}
	n := le.Uint32(b[AOffCount:])
	if h.Flow != 0 || n > MaxAckCount || uint64(len(b)) != AckFixedLen+uint64(n)*AckEntryLen || le.Uint32(b[AOffReserved:]) != 0 {
		return Ack{}, fmt.Errorf("%w: ack of %d bytes with %d entries", ErrProtocol, len(b), n)
	}
	a := Ack{Consumed: le.Uint64(b[AOffConsumed:]), Entries: make([]AckEntry, n)}
	for i := range a.Entries {
		x := b[AOffEntries+i*AckEntryLen:]
		if le.Uint32(x[EOffFlow:]) == 0 {
			return Ack{}, fmt.Errorf("%w: ack entry %d for flow 0", ErrProtocol, i)
		}
		a.Entries[i] = AckEntry{Flow: le.Uint32(x[EOffFlow:]), Credit: le.Uint32(x[EOffCredit:]),
			Next: Pos{le.Uint64(x[EOffSeq:]), le.Uint64(x[EOffUnits:])}, Window: le.Uint64(x[EOffWindow:])}
	}
	return a, nil
}

// Batch is a decoded data batch: its records stay in the inbox.
type Batch struct {
	Flow  uint32
	Next  Pos
	Lost  uint64
	Count uint32
	recs  []byte
}

// PutDataHeader writes a batch's header and fixed fields into
// b[:DataFixedLen] once its records follow it and total bytes are known.
func PutDataHeader(b []byte, flow uint32, total uint32, next Pos, lost uint64, count uint32) {
	PutHeader(b, TypeData, total, flow)
	le.PutUint64(b[DOffSeq:], next.Seq)
	le.PutUint64(b[DOffUnits:], next.Units)
	le.PutUint64(b[DOffLost:], lost)
	le.PutUint32(b[DOffCount:], count)
	le.PutUint32(b[DOffReserved:], 0)
}

// RecordSize is the bytes a record of an n-byte payload takes.
func RecordSize(n int) int { return RecordLen + (n+RecordAlign-1)&^(RecordAlign-1) }

// PutRecord writes a record header for an n-byte payload into b and
// returns the payload's place in b (which must hold RecordSize(n)); the
// padding is zeroed.
func PutRecord(b []byte, seq uint64, n int) []byte {
	le.PutUint64(b[RecOffSeq:], seq)
	le.PutUint32(b[RecOffLen:], uint32(n))
	le.PutUint32(b[RecOffRes:], 0)
	sz := RecordSize(n)
	clear(b[RecordLen+n : sz])
	return b[RecordLen : RecordLen+n]
}

// ParseBatch validates a data batch's header and fixed fields; Records
// walks its records. The batch is read once from b: the caller must own b
// (the inbox) while it parses.
func ParseBatch(b []byte) (Batch, error) {
	h, err := expect(b, TypeData, DataFixedLen)
	if err != nil {
		return Batch{}, err
	}
	if h.Flow == 0 || le.Uint32(b[DOffReserved:]) != 0 {
		return Batch{}, fmt.Errorf("%w: batch for flow 0 or reserved set", ErrProtocol)
	}
	return Batch{Flow: h.Flow, Next: Pos{le.Uint64(b[DOffSeq:]), le.Uint64(b[DOffUnits:])},
		Lost: le.Uint64(b[DOffLost:]), Count: le.Uint32(b[DOffCount:]), recs: b[DOffRecords:]}, nil
}

// RecordBytes returns the batch's records, as the wire carries them.
func (bt Batch) RecordBytes() []byte { return bt.recs }

// Records calls fn with each record in order, after checking that it
// lies within the batch, its payload is at most max bytes and its padding
// and reserved field are zero; the records must fill the batch exactly
// and number Count. fn's payload aliases the batch.
func (bt Batch) Records(max uint32, fn func(seq uint64, payload []byte) error) error {
	b := bt.recs
	for i := uint32(0); i < bt.Count; i++ {
		seq, p, sz, err := FirstRecord(b, max)
		if err != nil {
			return fmt.Errorf("record %d of %d: %w", i, bt.Count, err)
		}
		if err := fn(seq, p); err != nil {
			return err
		}
		b = b[sz:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d bytes after the last of %d records", ErrProtocol, len(b), bt.Count)
	}
	return nil
}

// FirstRecord checks the record at the start of b (within b, a payload
// of at most max bytes, zero padding and reserved field) and returns its
// seq, its payload (aliasing b) and its size.
func FirstRecord(b []byte, max uint32) (seq uint64, payload []byte, size int, err error) {
	if len(b) < RecordLen {
		return 0, nil, 0, fmt.Errorf("%w: record header past the end", ErrProtocol)
	}
	n := le.Uint32(b[RecOffLen:])
	if n > max || le.Uint32(b[RecOffRes:]) != 0 {
		return 0, nil, 0, fmt.Errorf("%w: record of %d bytes (max %d) or reserved set", ErrProtocol, n, max)
	}
	sz := RecordSize(int(n))
	if sz > len(b) {
		return 0, nil, 0, fmt.Errorf("%w: record of %d bytes past the end", ErrProtocol, n)
	}
	for _, c := range b[RecordLen+int(n) : sz] {
		if c != 0 {
			return 0, nil, 0, fmt.Errorf("%w: record padding not zero", ErrProtocol)
		}
	}
	return le.Uint64(b[RecOffSeq:]), b[RecordLen : RecordLen+int(n)], sz, nil
}

// grow extends b by n bytes and returns it and the new part.
func grow(b []byte, n int) ([]byte, []byte) {
	l := len(b)
	b = append(b, make([]byte, n)...)
	return b, b[l:]
}
