package channel

import (
	"context"
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The offset constants are the public ABI (docs/ring-format.md); the Go
// structs are how this package touches the memory. These tests pin the two
// together, so a field moved in one place and not the other fails here
// rather than in a client written in another language.

type layoutField struct {
	name     string
	off      uintptr // unsafe.Offsetof of the Go field
	want     uintptr // the ABI constant
	size     uintptr // unsafe.Sizeof of the Go field
	wantSize uintptr // the size the ABI documents
}

func checkFields(t *testing.T, fields []layoutField) {
	t.Helper()
	for _, f := range fields {
		if f.off != f.want {
			t.Errorf("%s: Go field at offset %d, ABI constant says %d", f.name, f.off, f.want)
		}
		if f.size != f.wantSize {
			t.Errorf("%s: Go field is %d bytes, ABI says %d", f.name, f.size, f.wantSize)
		}
	}
}

func TestLayoutDescriptor(t *testing.T) {
	var d descriptor
	checkFields(t, []layoutField{
		{"Magic", unsafe.Offsetof(d.Magic), OffMagic, unsafe.Sizeof(d.Magic), 8},
		{"Version", unsafe.Offsetof(d.Version), OffVersion, unsafe.Sizeof(d.Version), 4},
		{"HeaderLen", unsafe.Offsetof(d.HeaderLen), OffHeaderLen, unsafe.Sizeof(d.HeaderLen), 4},
		{"Type", unsafe.Offsetof(d.Type), OffType, unsafe.Sizeof(d.Type), 4},
		{"Policy", unsafe.Offsetof(d.Policy), OffPolicy, unsafe.Sizeof(d.Policy), 4},
		{"Capacity", unsafe.Offsetof(d.Capacity), OffCapacity, unsafe.Sizeof(d.Capacity), 8},
		{"MaxMessage", unsafe.Offsetof(d.MaxMessage), OffMaxMessage, unsafe.Sizeof(d.MaxMessage), 4},
		{"MemberSlots", unsafe.Offsetof(d.MemberSlots), OffMemberSlots, unsafe.Sizeof(d.MemberSlots), 4},
		{"Epoch", unsafe.Offsetof(d.Epoch), OffEpoch, unsafe.Sizeof(d.Epoch), 8},
		{"MembersOffset", unsafe.Offsetof(d.MembersOffset), OffMembersOffset, unsafe.Sizeof(d.MembersOffset), 8},
		{"LeaseNanos", unsafe.Offsetof(d.LeaseNanos), OffLeaseNanos, unsafe.Sizeof(d.LeaseNanos), 8},
		{"QueueCount", unsafe.Offsetof(d.QueueCount), OffQueueCount, unsafe.Sizeof(d.QueueCount), 4},
		{"IndexChunks", unsafe.Offsetof(d.IndexChunks), OffIndexChunks, unsafe.Sizeof(d.IndexChunks), 4},
		{"FileSize", unsafe.Offsetof(d.FileSize), OffFileSize, unsafe.Sizeof(d.FileSize), 8},
		{"DataOffset", unsafe.Offsetof(d.DataOffset), OffDataOffset, unsafe.Sizeof(d.DataOffset), 8},
		{"AgentBeat", unsafe.Offsetof(d.AgentBeat), OffAgentBeat, unsafe.Sizeof(d.AgentBeat), 8},
		{"AgentPid", unsafe.Offsetof(d.AgentPid), OffAgentPid, unsafe.Sizeof(d.AgentPid), 4},
	})
	// The descriptor and the agent line end at 192; the rest up to the
	// first queue header is reserved and must stay clear of them.
	if s := unsafe.Sizeof(d); s > 192 || s > OffQueues {
		t.Errorf("descriptor is %d bytes, must fit in 192 (queues start at %d)", s, OffQueues)
	}
	// The agent writes its line while clients read line 0 and 1: keep it apart.
	if OffAgentBeat%64 != 0 || OffAgentBeat/64 == OffDataOffset/64 {
		t.Errorf("agent heartbeat at %d is not on its own cache line", OffAgentBeat)
	}
}

func TestLayoutQueueHeader(t *testing.T) {
	var q queueHeader
	checkFields(t, []layoutField{
		{"Tail", unsafe.Offsetof(q.Tail), QOffTail, unsafe.Sizeof(q.Tail), 8},
		{"Head", unsafe.Offsetof(q.Head), QOffHead, unsafe.Sizeof(q.Head), 8},
		{"Limit", unsafe.Offsetof(q.Limit), QOffLimit, unsafe.Sizeof(q.Limit), 8},
		{"Release", unsafe.Offsetof(q.Release), QOffRelease, unsafe.Sizeof(q.Release), 8},
		{"DataFutex", unsafe.Offsetof(q.DataFutex), QOffDataFutex, unsafe.Sizeof(q.DataFutex), 4},
		{"DataWaiters", unsafe.Offsetof(q.DataWaiters), QOffDataWaiters, unsafe.Sizeof(q.DataWaiters), 4},
		{"SpaceFutex", unsafe.Offsetof(q.SpaceFutex), QOffSpaceFutex, unsafe.Sizeof(q.SpaceFutex), 4},
		{"SpaceWaiters", unsafe.Offsetof(q.SpaceWaiters), QOffSpaceWaiters, unsafe.Sizeof(q.SpaceWaiters), 4},
		{"Reaped", unsafe.Offsetof(q.Reaped), QOffReaped, unsafe.Sizeof(q.Reaped), 8},
		{"Evicted", unsafe.Offsetof(q.Evicted), QOffEvicted, unsafe.Sizeof(q.Evicted), 8},
		{"Index", unsafe.Offsetof(q.Index), QOffIndex, unsafe.Sizeof(q.Index), IndexChunks * 8},
		{"Exclusive", unsafe.Offsetof(q.Exclusive), QOffExclusive, unsafe.Sizeof(q.Exclusive), 4},
		{"Reserve", unsafe.Offsetof(q.Reserve), QOffReserve, unsafe.Sizeof(q.Reserve), 4},
	})
	if s := unsafe.Sizeof(q); s != QueueHeaderLen {
		t.Errorf("queueHeader is %d bytes, ABI says %d", s, QueueHeaderLen)
	}
	if len(q.Index) != IndexChunks {
		t.Errorf("Index has %d entries, ABI says %d", len(q.Index), IndexChunks)
	}
	if end := OffQueues + 2*QueueHeaderLen; end > HeaderLen {
		t.Errorf("two queue headers end at %d, past the %d-byte header", end, HeaderLen)
	}
	if OffQueues%64 != 0 || QueueHeaderLen%64 != 0 {
		t.Errorf("queue headers at %d+%d*q are not cache-line aligned", OffQueues, QueueHeaderLen)
	}
}

// TestLayoutCounterLines checks that each group of words written by a
// different party owns its cache line: no other field of the queue header
// shares it, so a publisher bumping Tail never invalidates a reader's Head.
// A futex word and its waiter count share a line by design (they are
// touched together).
func TestLayoutCounterLines(t *testing.T) {
	var q queueHeader
	type span struct{ off, size uintptr }
	groups := []struct {
		name  string
		spans []span
	}{
		{"Tail", []span{{unsafe.Offsetof(q.Tail), 8}}},
		{"Head", []span{{unsafe.Offsetof(q.Head), 8}}},
		{"Limit", []span{{unsafe.Offsetof(q.Limit), 8}}},
		{"Release", []span{{unsafe.Offsetof(q.Release), 8}}},
		{"DataFutex+DataWaiters", []span{{unsafe.Offsetof(q.DataFutex), 4}, {unsafe.Offsetof(q.DataWaiters), 4}}},
		{"SpaceFutex+SpaceWaiters", []span{{unsafe.Offsetof(q.SpaceFutex), 4}, {unsafe.Offsetof(q.SpaceWaiters), 4}}},
		{"Reaped", []span{{unsafe.Offsetof(q.Reaped), 8}}},
		{"Index", []span{{unsafe.Offsetof(q.Index), unsafe.Sizeof(q.Index)}}},
	}
	owner := map[uintptr]string{} // cache line -> group
	for _, g := range groups {
		for _, s := range g.spans {
			if s.off%s.size != 0 && s.size <= 8 {
				t.Errorf("%s at %d is not naturally aligned (atomics need it)", g.name, s.off)
			}
			for line := s.off / 64; line <= (s.off+s.size-1)/64; line++ {
				if o, ok := owner[line]; ok && o != g.name {
					t.Errorf("%s shares cache line %d (bytes %d..%d) with %s", g.name, line, line*64, line*64+63, o)
				}
				owner[line] = g.name
			}
		}
	}
	// The queue header starts on a line boundary in the file, so lines
	// relative to it are lines of the file.
	if OffQueues%64 != 0 {
		t.Errorf("queue header at %d is not line-aligned", OffQueues)
	}
}

func TestLayoutMemberSlot(t *testing.T) {
	var m memberSlot
	checkFields(t, []layoutField{
		{"State", unsafe.Offsetof(m.State), MOffState, unsafe.Sizeof(m.State), 4},
		{"Role", unsafe.Offsetof(m.Role), MOffRole, unsafe.Sizeof(m.Role), 4},
		{"Pid", unsafe.Offsetof(m.Pid), MOffPid, unsafe.Sizeof(m.Pid), 4},
		{"Gen", unsafe.Offsetof(m.Gen), MOffGen, unsafe.Sizeof(m.Gen), 4},
		{"Lease", unsafe.Offsetof(m.Lease), MOffLease, unsafe.Sizeof(m.Lease), 8},
		{"Cursor", unsafe.Offsetof(m.Cursor), MOffCursor, unsafe.Sizeof(m.Cursor), 8},
		{"Pending", unsafe.Offsetof(m.Pending), MOffPending, unsafe.Sizeof(m.Pending), 8},
		{"PendingLen", unsafe.Offsetof(m.PendingLen), MOffPendingLen, unsafe.Sizeof(m.PendingLen), 8},
		{"Lost", unsafe.Offsetof(m.Lost), MOffLost, unsafe.Sizeof(m.Lost), 8},
		{"Count", unsafe.Offsetof(m.Count), MOffCount, unsafe.Sizeof(m.Count), 8},
	})
	if s := unsafe.Sizeof(m); s != MemberSlotLen || MemberSlotLen != 64 {
		t.Errorf("memberSlot is %d bytes (MemberSlotLen %d), ABI says one 64-byte line", s, MemberSlotLen)
	}
	if HeaderLen%64 != 0 {
		t.Errorf("member table at %d is not line-aligned", HeaderLen)
	}
}

func TestLayoutFrameHeader(t *testing.T) {
	var f frameHeader
	checkFields(t, []layoutField{
		{"Tag", unsafe.Offsetof(f.Tag), FOffTag, unsafe.Sizeof(f.Tag), 4},
		{"Length", unsafe.Offsetof(f.Length), FOffLength, unsafe.Sizeof(f.Length), 4},
		{"Seq", unsafe.Offsetof(f.Seq), FOffSeq, unsafe.Sizeof(f.Seq), 4},
		{"Slot", unsafe.Offsetof(f.Slot), FOffSlot, unsafe.Sizeof(f.Slot), 2},
	})
	if s := unsafe.Sizeof(f); s != FrameHeaderLen {
		t.Errorf("frameHeader is %d bytes, ABI says %d", s, FrameHeaderLen)
	}
	if FrameAlign != 1<<unitShift || FrameHeaderLen%FrameAlign != 0 {
		t.Errorf("frame align %d, unit %d, header %d disagree", FrameAlign, 1<<unitShift, FrameHeaderLen)
	}
	// The commit word is Tag (low half) and Length (high half) read as one
	// little-endian u64: tag first, then length.
	if FOffLength != FOffTag+4 || FOffTag != 0 {
		t.Errorf("commit word halves at %d and %d, want 0 and 4", FOffTag, FOffLength)
	}
	if LengthMask&(FlagPadding|FlagConsumed) != 0 || FlagPadding&FlagConsumed != 0 {
		t.Errorf("length mask %#x overlaps flags %#x %#x", LengthMask, FlagPadding, FlagConsumed)
	}
}

// TestLayoutFormattedBytes reads a ring that Format wrote through the Go
// structs back through the offset constants alone, the way a C or Python
// client does.
func TestLayoutFormattedBytes(t *testing.T) {
	for _, cfg := range []Config{
		{Type: TypePubSub, Policy: PolicyBlock, Capacity: 8192, MaxMessage: 1000, MemberSlots: 3, Lease: 123456789, Epoch: 0xfeedf00d},
		{Type: TypePubSub, Policy: PolicyOverwrite, Capacity: 1 << 16, MaxMessage: 64, MemberSlots: 65, Lease: DefaultLease, Epoch: 7},
		{Type: TypeStream, Policy: PolicyBlock, Capacity: 4096, MaxMessage: 1008, MemberSlots: 64, Lease: MinLease, Epoch: 1},
	} {
		size := cfg.Size()
		mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Format(mem, cfg)
		if err != nil {
			unix.Munmap(mem)
			t.Fatal(err)
		}
		le := binary.LittleEndian
		u32 := func(off int) uint64 { return uint64(le.Uint32(mem[off:])) }
		u64 := func(off int) uint64 { return le.Uint64(mem[off:]) }
		queues := uint64(1)
		if cfg.Type == TypeStream {
			queues = 2
		}
		members := (uint64(cfg.MemberSlots)*MemberSlotLen + 4095) &^ 4095
		for _, c := range []struct {
			name      string
			got, want uint64
		}{
			{"magic", u64(OffMagic), Magic},
			{"magic bytes", uint64(mem[0]), 'S'},
			{"version", u32(OffVersion), uint64(Version)},
			{"header len", u32(OffHeaderLen), HeaderLen},
			{"type", u32(OffType), uint64(cfg.Type)},
			{"policy", u32(OffPolicy), uint64(cfg.Policy)},
			{"capacity", u64(OffCapacity), cfg.Capacity},
			{"max message", u32(OffMaxMessage), uint64(cfg.MaxMessage)},
			{"member slots", u32(OffMemberSlots), uint64(cfg.MemberSlots)},
			{"epoch", u64(OffEpoch), cfg.Epoch},
			{"members offset", u64(OffMembersOffset), HeaderLen},
			{"lease", u64(OffLeaseNanos), uint64(cfg.Lease)},
			{"queue count", u32(OffQueueCount), queues},
			{"index chunks", u32(OffIndexChunks), IndexChunks},
			{"file size", u64(OffFileSize), uint64(size)},
			{"file size formula", uint64(size), HeaderLen + members + queues*cfg.Capacity},
			{"data offset", u64(OffDataOffset), HeaderLen + members},
		} {
			if c.got != c.want {
				t.Errorf("cfg %+v: %s = %#x, want %#x", cfg, c.name, c.got, c.want)
			}
		}
		// Every queue starts one lap in: seq 0, units Capacity/16.
		start := cfg.Capacity >> 4
		for q := uint64(0); q < 2; q++ {
			base := OffQueues + int(q*QueueHeaderLen)
			want := start
			if q >= queues {
				want = 0 // unused queue header stays zero
			}
			for _, c := range []struct {
				name string
				off  int
			}{{"tail", QOffTail}, {"head", QOffHead}, {"limit", QOffLimit}, {"release", QOffRelease}, {"index[0]", QOffIndex}} {
				if got := u64(base + c.off); got != want {
					t.Errorf("cfg %+v: queue %d %s = %#x, want %#x", cfg, q, c.name, got, want)
				}
			}
		}
		// A member written through the Go API shows up at the slot offsets.
		p, err := r.NewPublisher(PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.TryPublish([]byte("abc")); err != nil {
			t.Fatal(err)
		}
		slot := HeaderLen
		if st, role := u32(slot+MOffState), u32(slot+MOffRole); st != uint64(MemberActive) || role != uint64(RolePublisher) {
			t.Errorf("slot 0 state %d role %#x, want %d %#x", st, role, MemberActive, RolePublisher)
		}
		if lease := u64(slot + MOffLease); lease == 0 {
			t.Errorf("slot 0 lease is zero after join")
		}
		if n := u64(slot + MOffCount); n != 1 {
			t.Errorf("slot 0 count %d, want 1", n)
		}
		// The frame it wrote: commit word = tag | len<<32, seq 0, slot 0, payload.
		off := int(HeaderLen + members + (start<<4)&(cfg.Capacity-1))
		if w := u64(off + FOffTag); w != start|3<<32 {
			t.Errorf("commit word %#x, want %#x", w, start|3<<32)
		}
		if seq, sl := u32(off+FOffSeq), le.Uint16(mem[off+FOffSlot:]); seq != 0 || sl != 0 {
			t.Errorf("frame seq %d slot %d, want 0 0", seq, sl)
		}
		if got := string(mem[off+FrameHeaderLen : off+FrameHeaderLen+3]); got != "abc" {
			t.Errorf("payload %q, want abc", got)
		}
		// 16-byte header + 3 bytes round up to 32 bytes: two units.
		if tail := u64(OffQueues + QOffTail); tail != 1<<32|(start+2) {
			t.Errorf("tail %#x after one 3-byte message, want %#x", tail, 1<<32|(start+2))
		}
		// A gap frame for 4 lost messages (pubsub): padding of length 0,
		// Seq past the gap, Slot 0xfffe, one unit; the tail skips 4.
		if cfg.Type == TypePubSub {
			b, err := p.ClaimBatchLost(context.Background(), 4, nil)
			if err == nil {
				err = p.CommitBatch(b)
			}
			if err != nil {
				t.Fatal(err)
			}
			off += 32
			if w := u64(off + FOffTag); w != (start+2)|uint64(FlagPadding)<<32 {
				t.Errorf("gap frame's commit word %#x, want %#x", w, (start+2)|uint64(FlagPadding)<<32)
			}
			if seq, sl := u32(off+FOffSeq), le.Uint16(mem[off+FOffSlot:]); seq != 5 || sl != 0xfffe || SlotGap != 0xfffe || SlotPadding != 0xffff {
				t.Errorf("gap frame seq %d slot %#x, want 5 0xfffe", seq, sl)
			}
			if tail := u64(OffQueues + QOffTail); tail != 5<<32|(start+3) {
				t.Errorf("tail %#x after the gap, want %#x", tail, 5<<32|(start+3))
			}
		}
		r.Close()
		unix.Munmap(mem)
	}
}
