package wire

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestOffsetsMatchDoc pins every offset constant to its row in
// docs/mirror-wire.md: "| offset | size | type | Name |".
func TestOffsetsMatchDoc(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/mirror-wire.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, l := range strings.Split(string(doc), "\n") {
		if f := strings.Split(l, "|"); len(f) > 5 {
			rows[strings.Join([]string{strings.TrimSpace(f[1]), strings.TrimSpace(f[2]), strings.TrimSpace(f[3]), strings.TrimSpace(f[4])}, "|")] = true
		}
	}
	for _, tc := range []struct {
		off, size int
		typ, name string
	}{
		{OffMagic, 4, "u32", "Magic"}, {OffVersion, 1, "u8", "Version"}, {OffType, 1, "u8", "Type"},
		{OffFlags, 2, "u16", "Flags"}, {OffLength, 4, "u32", "Length"}, {OffFlow, 4, "u32", "Flow"},
		{HOffInboxKey, 20, "bytes", "InboxKey"}, {HOffReserved, 4, "u32", "Reserved"},
		{SOffEpoch, 8, "u64", "Epoch"}, {SOffSeq, 8, "u64", "NextSeq"}, {SOffUnits, 8, "u64", "NextUnits"},
		{SOffQueue, 4, "u32", "Queue"}, {SOffCredit, 4, "u32", "Credit"}, {SOffNSLen, 2, "u16", "NamespaceLen"},
		{SOffChLen, 2, "u16", "ChannelLen"}, {SOffWindow, 4, "u32", "Window"},
		{OOffEpoch, 8, "u64", "Epoch"}, {OOffSeq, 8, "u64", "StartSeq"}, {OOffUnits, 8, "u64", "StartUnits"},
		{OOffType, 4, "u32", "ChannelType"}, {OOffPolicy, 4, "u32", "Policy"}, {OOffLost, 8, "u64", "Lost"},
		{OOffMaxMsg, 4, "u32", "MaxMessage"}, {OOffRes, 4, "u32", "Reserved"},
		{ROffCode, 4, "u32", "Code"}, {ROffTextLen, 4, "u32", "TextLen"},
		{AOffConsumed, 8, "u64", "Consumed"}, {AOffCount, 4, "u32", "Count"}, {AOffReserved, 4, "u32", "Reserved"},
		{EOffFlow, 4, "u32", "Flow"}, {EOffCredit, 4, "u32", "Credit"}, {EOffSeq, 8, "u64", "NextSeq"},
		{EOffUnits, 8, "u64", "NextUnits"}, {EOffWindow, 8, "u64", "Window"},
		{DOffSeq, 8, "u64", "NextSeq"}, {DOffUnits, 8, "u64", "NextUnits"}, {DOffLost, 8, "u64", "Lost"},
		{DOffCount, 4, "u32", "Count"}, {DOffReserved, 4, "u32", "Reserved"},
		{RecOffSeq, 8, "u64", "Seq"}, {RecOffLen, 4, "u32", "Len"}, {RecOffRes, 4, "u32", "Reserved"},
	} {
		row := fmt.Sprintf("%d|%d|%s|%s", tc.off, tc.size, tc.typ, tc.name)
		if !rows[row] {
			t.Errorf("docs/mirror-wire.md has no row | %s |", strings.ReplaceAll(row, "|", " | "))
		}
	}
	for _, tc := range []struct{ got, want int }{
		{HeaderLen, 16}, {HelloLen, 40}, {SubFixedLen, SOffNames}, {OpenLen, 64}, {AckFixedLen, AOffEntries},
		{DataFixedLen, DOffRecords}, {RecordLen, 16}, {RefuseFixedLen, ROffText},
	} {
		if tc.got != tc.want {
			t.Errorf("length %d, want %d", tc.got, tc.want)
		}
	}
	// The header's bytes, as the diagram draws them.
	var h [HeaderLen]byte
	PutHeader(h[:], TypeAck, 0x11223344, 0x55667788)
	want := []byte{'S', 'H', 'M', 'R', 2, 5, 0, 0, 0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55}
	if !bytes.Equal(h[:], want) {
		t.Errorf("header\n got % x\nwant % x", h, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		enc   []byte
		parse func([]byte) (any, error)
		want  any
	}{
		{"hello", Hello{InboxKey: [20]byte{1, 2, 3, 19: 9}}.Append(nil), func(b []byte) (any, error) { return ParseHello(b) }, Hello{InboxKey: [20]byte{1, 2, 3, 19: 9}}},
		{"sub", Sub{Flow: 7, Epoch: 99, Next: Pos{5, 80}, Queue: 1, Credit: 64, Window: 1 << 20, Namespace: "ns", Channel: "ch.1"}.Append(nil),
			func(b []byte) (any, error) { return ParseSub(b) }, Sub{Flow: 7, Epoch: 99, Next: Pos{5, 80}, Queue: 1, Credit: 64, Window: 1 << 20, Namespace: "ns", Channel: "ch.1"}},
		{"open", Open{Flow: 3, Epoch: 1, Start: Pos{1 << 40, 1 << 41}, Type: 1, Policy: 2, Lost: 12, MaxMessage: 65536}.Append(nil),
			func(b []byte) (any, error) { return ParseOpen(b) }, Open{Flow: 3, Epoch: 1, Start: Pos{1 << 40, 1 << 41}, Type: 1, Policy: 2, Lost: 12, MaxMessage: 65536}},
		{"refuse", Refuse{Flow: 2, Code: RefuseNotShared, Text: "not shared"}.Append(nil),
			func(b []byte) (any, error) { return ParseRefuse(b) }, Refuse{Flow: 2, Code: RefuseNotShared, Text: "not shared"}},
		{"ack", Ack{Consumed: 4096, Entries: []AckEntry{{1, 0, Pos{2, 3}, 1 << 40}, {9, 64, Pos{4, 5}, 0}}}.Append(nil),
			func(b []byte) (any, error) { return ParseAck(b) }, Ack{Consumed: 4096, Entries: []AckEntry{{1, 0, Pos{2, 3}, 1 << 40}, {9, 64, Pos{4, 5}, 0}}}},
		{"ack empty", Ack{Consumed: 1}.Append(nil), func(b []byte) (any, error) { return ParseAck(b) }, Ack{Consumed: 1, Entries: []AckEntry{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.parse(tc.enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// batch encodes records of msgs as a data batch.
func batch(flow uint32, first uint64, msgs ...string) []byte {
	n := DataFixedLen
	for _, m := range msgs {
		n += RecordSize(len(m))
	}
	b := make([]byte, n)
	off := DataFixedLen
	for i, m := range msgs {
		copy(PutRecord(b[off:], first+uint64(i), len(m)), m)
		off += RecordSize(len(m))
	}
	PutDataHeader(b, flow, uint32(n), Pos{first + uint64(len(msgs)), 1000}, 3, uint32(len(msgs)))
	return b
}

func TestBatch(t *testing.T) {
	b := batch(4, 10, "a", "", "twelve bytes", "exactly8")
	bt, err := ParseBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if bt.Flow != 4 || bt.Next != (Pos{14, 1000}) || bt.Lost != 3 || bt.Count != 4 {
		t.Fatalf("batch %+v", bt)
	}
	var got []string
	if err := bt.Records(64, func(seq uint64, p []byte) error {
		got = append(got, fmt.Sprintf("%d:%s", seq, p))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := "10:a 11: 12:twelve bytes 13:exactly8"; strings.Join(got, " ") != want {
		t.Fatalf("records %q, want %q", got, want)
	}
}

func TestRefuses(t *testing.T) {
	good := batch(4, 10, "abc", "defgh")
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }
	for _, tc := range []struct {
		name string
		b    []byte
		max  uint32
		want error
	}{
		{"short", good[:10], 64, ErrProtocol},
		{"magic", mod(good, func(b []byte) []byte { b[0] ^= 1; return b }), 64, ErrProtocol},
		{"version 1", mod(good, func(b []byte) []byte { b[OffVersion] = 1; return b }), 64, ErrVersion},
		{"version 3", mod(good, func(b []byte) []byte { b[OffVersion] = 3; return b }), 64, ErrVersion},
		{"type", mod(good, func(b []byte) []byte { b[OffType] = 77; return b }), 64, ErrProtocol},
		{"flags", mod(good, func(b []byte) []byte { b[OffFlags] = 1; return b }), 64, ErrProtocol},
		{"length", mod(good, func(b []byte) []byte { return b[:len(b)-8] }), 64, ErrProtocol},
		{"flow 0", mod(good, func(b []byte) []byte { le.PutUint32(b[OffFlow:], 0); return b }), 64, ErrProtocol},
		{"count high", mod(good, func(b []byte) []byte { le.PutUint32(b[DOffCount:], 3); return b }), 64, ErrProtocol},
		{"count low", mod(good, func(b []byte) []byte { le.PutUint32(b[DOffCount:], 1); return b }), 64, ErrProtocol},
		{"record past end", mod(good, func(b []byte) []byte { le.PutUint32(b[DOffRecords+RecOffLen:], 1<<20); return b }), 1 << 21, ErrProtocol},
		{"record over max", good, 4, ErrProtocol},
		{"padding", mod(good, func(b []byte) []byte { b[DOffRecords+RecordLen+3] = 1; return b }), 64, ErrProtocol},
		{"record reserved", mod(good, func(b []byte) []byte { b[DOffRecords+RecOffRes] = 1; return b }), 64, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bt, err := ParseBatch(tc.b)
			if err == nil {
				err = bt.Records(tc.max, func(uint64, []byte) error { return nil })
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	sub := Sub{Flow: 1, Namespace: "n", Channel: "c"}.Append(nil)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"sub names past end", mod(sub, func(b []byte) []byte { le.PutUint16(b[SOffChLen:], 9); return b })},
		{"sub empty name", mod(sub, func(b []byte) []byte { le.PutUint16(b[SOffNSLen:], 0); return b })},
		{"sub as open", mod(sub, func(b []byte) []byte { b[OffType] = TypeOpen; return b })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseSub(tc.b); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
}

// FuzzDecode: no input makes a decoder panic, and a batch's records
// stay within it.
func FuzzDecode(f *testing.F) {
	f.Add(batch(1, 0, "hello", "world"))
	f.Add(Sub{Flow: 1, Namespace: "n", Channel: "c"}.Append(nil))
	f.Add(Ack{Consumed: 1, Entries: []AckEntry{{1, 2, Pos{3, 4}, 5}}}.Append(nil))
	f.Add(Open{Flow: 1, Epoch: 1}.Append(nil))
	f.Add(Refuse{Flow: 1, Text: "x"}.Append(nil))
	f.Add(Hello{}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseHello(b)
		ParseSub(b)
		ParseOpen(b)
		ParseRefuse(b)
		ParseAck(b)
		bt, err := ParseBatch(b)
		if err != nil {
			return
		}
		total := 0
		if err := bt.Records(1<<16, func(_ uint64, p []byte) error {
			total += RecordSize(len(p))
			return nil
		}); err == nil && DataFixedLen+total != len(b) {
			t.Fatalf("records cover %d of %d bytes", DataFixedLen+total, len(b))
		}
	})
}
