package tcp

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"unsafe"

	"github.com/shimmy-dev/shimmy/rdma"
)

// wireHeader mirrors the header diagram; TestWireOffsets pins it to the
// offset constants (and so to docs/transport-wire.md).
type wireHeader struct {
	Magic   uint16
	Version uint8
	Type    uint8
	Length  uint32
	Key     uint32
	Imm     uint32
	Offset  uint64
}

func TestWireOffsets(t *testing.T) {
	var h wireHeader
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"magic", unsafe.Offsetof(h.Magic), OffMagic},
		{"version", unsafe.Offsetof(h.Version), OffVersion},
		{"type", unsafe.Offsetof(h.Type), OffType},
		{"length", unsafe.Offsetof(h.Length), OffLength},
		{"key", unsafe.Offsetof(h.Key), OffKey},
		{"imm", unsafe.Offsetof(h.Imm), OffImm},
		{"offset", unsafe.Offsetof(h.Offset), OffOffset},
		{"size", unsafe.Sizeof(h), HeaderLen},
	} {
		if tc.got != tc.want {
			t.Errorf("%s at %d, constant says %d", tc.name, tc.got, tc.want)
		}
	}
	b := Header{Type: TypeWriteImm, Length: 0x11223344, Key: 0x55667788, Imm: 0x99aabbcc, Offset: 0x0102030405060708}.Append(nil)
	want := []byte{0x53, 0x4d, 1, 3, 0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, 0xcc, 0xbb, 0xaa, 0x99, 8, 7, 6, 5, 4, 3, 2, 1}
	if !bytes.Equal(b, want) {
		t.Errorf("encoding\n got % x\nwant % x", b, want)
	}
}

func TestDecodeRefuses(t *testing.T) {
	ok := Header{Type: TypeWrite, Length: 16, Key: 1, Offset: 64}.Append(nil)
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(ok)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"short", ok[:HeaderLen-1]},
		{"magic", mod(func(b []byte) { b[OffMagic] = 'X' })},
		{"version", mod(func(b []byte) { b[OffVersion] = 2 })},
		{"type 0", mod(func(b []byte) { b[OffType] = 0 })},
		{"type 7", mod(func(b []byte) { b[OffType] = 7 })},
		{"write too long", Header{Type: TypeWrite, Length: MaxWrite + 1}.Append(nil)},
		{"write with imm set", Header{Type: TypeWrite, Imm: 1}.Append(nil)},
		{"control too long", Header{Type: TypeControl, Length: rdma.MaxControl + 1}.Append(nil)},
		{"control with key", Header{Type: TypeControl, Key: 1}.Append(nil)},
		{"ping with payload", Header{Type: TypePing, Length: 1}.Append(nil)},
		{"hello with offset", Header{Type: TypeHello, Offset: 1}.Append(nil)},
		{"close reason too long", Header{Type: TypeClose, Length: MaxReason + 1}.Append(nil)},
	} {
		if _, err := Decode(tc.b); !errors.Is(err, rdma.ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", tc.name, err)
		}
	}
	if h, err := Decode(ok); err != nil || h != (Header{Type: TypeWrite, Length: 16, Key: 1, Offset: 64}) {
		t.Errorf("valid header: %+v, %v", h, err)
	}
}

// FuzzDecode feeds arbitrary bytes to the header decoder and to a link's
// receiver holding one 4 KiB region: nothing panics, every accepted header
// re-encodes to its bytes, and no byte outside the region changes.
func FuzzDecode(f *testing.F) {
	f.Add(Header{Type: TypeWriteImm, Length: 4, Key: 1, Imm: 7, Offset: 4092}.Append(nil))
	// A write large enough to bypass the read buffer, and one cut short.
	whole := append(Header{Type: TypeWrite, Length: directRead, Key: 1}.Append(nil), make([]byte, directRead)...)
	f.Add(whole)
	f.Add(whole[:HeaderLen+directRead/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := Decode(data); err == nil {
			if got := h.Append(nil); !bytes.Equal(got, data[:HeaderLen]) {
				t.Fatalf("header %+v re-encodes to % x, read from % x", h, got, data[:HeaderLen])
			}
		}
		mem := make([]byte, 8192)
		r := &region{mem: mem[:4096]}
		var regions regionTable
		regions.add(r) // key 1
		imms, ctrls := 0, 0
		rx := newReceiver(bytes.NewReader(data), &regions,
			func(rdma.Completion) bool { imms++; return true },
			func(m []byte) bool { ctrls++; return len(m) <= rdma.MaxControl })
		var err error
		for err == nil {
			err = rx.next()
		}
		var pc *peerClosed
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, rdma.ErrProtocol),
			errors.Is(err, rdma.ErrRegion), errors.As(err, &pc), errors.Is(err, rdma.ErrClosed):
		default:
			t.Fatalf("receiver stopped with %v", err)
		}
		for i, b := range mem[4096:] {
			if b != 0 {
				t.Fatalf("byte %d past the region changed", 4096+i)
			}
		}
	})
}
