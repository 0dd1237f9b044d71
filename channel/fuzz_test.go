package channel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fuzz tests treat the ring as hostile input: another process (or a bug in
// another client) may write anything into the shared memory. Whatever it
// writes, this client must not panic, must not touch memory outside the
// ring, must never hand out a message longer than MaxMessage, and must
// report trouble only with the documented errors.
//
// Ring memory comes from unix.Mmap, never from make([]byte): the client
// reads memory that it validates afterwards, which the race detector would
// flag on Go heap memory.

// fuzzMapLen is the mapping every fuzz ring lives in. It is bigger than the
// rings formatted in it, so that a fuzzed header may describe a different
// geometry that still fits and Open must then accept it.
const fuzzMapLen = 64 << 10

func fuzzMap(t *testing.T) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, fuzzMapLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap %d bytes: %v", fuzzMapLen, err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// fuzzFormat formats a small ring at the start of a fresh mapping. The
// ring is closed (heartbeats stopped) before the memory is unmapped:
// cleanups run last-registered first.
func fuzzFormat(t *testing.T, cfg Config) (*Ring, []byte) {
	t.Helper()
	mem := fuzzMap(t)
	r, err := Format(mem, cfg)
	if err != nil {
		t.Fatalf("format %+v: %v", cfg, err)
	}
	t.Cleanup(func() { r.Close() })
	return r, mem
}

// fuzzErrOK reports whether err is one a client may see on a corrupt ring.
func fuzzErrOK(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWouldBlock) || errors.Is(err, ErrEvicted)
}

// fuzzHang bounds one fuzz input. A client that spins forever on corrupt
// memory cannot be stopped from the test goroutine, so the watchdog
// crashes the process with a stack trace instead of letting the test run
// into the global timeout; the fuzzer records the input as a failure. The
// bound is generous: an input takes milliseconds.
const fuzzHang = 10 * time.Second

func fuzzWatchdog(t *testing.T, what string) {
	w := time.AfterFunc(fuzzHang, func() {
		debug.SetTraceback("all") // show the spinning goroutine, not just this one
		panic(fmt.Sprintf("%s: no progress after %v: a client loop spins forever on this input", what, fuzzHang))
	})
	t.Cleanup(func() { w.Stop() })
}

// fuzzPayload is message i of a pre-filled ring: varied lengths, zero and
// the maximum included.
func fuzzPayload(i int, max uint32) []byte {
	n := (i * 97) % int(max+1)
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i + j)
	}
	return b
}

// fuzzDrive runs the readers of r (and, if pub is set, a publisher between
// them) for a bounded number of calls and checks every result.
func fuzzDrive(t *testing.T, r *Ring, next []func([]byte) ([]byte, error), pub *Publisher) {
	t.Helper()
	max := r.Config().MaxMessage
	slots := r.Config().MemberSlots
	var buf []byte
	for i := 0; i < 200; i++ {
		for k, nx := range next {
			msg, err := nx(buf)
			if err != nil {
				if !fuzzErrOK(err) {
					t.Fatalf("call %d reader %d: unexpected error %v", i, k, err)
				}
				continue
			}
			if uint64(len(msg)) > uint64(max) {
				t.Fatalf("call %d reader %d: %d-byte message, max %d", i, k, len(msg), max)
			}
			buf = msg
		}
		if pub != nil && i%3 == 0 {
			if err := pub.TryPublish(fuzzPayload(i, max)); err != nil && !fuzzErrOK(err) {
				t.Fatalf("call %d: publish: unexpected error %v", i, err)
			}
		}
		if i%16 == 0 {
			r.Reap()
			_ = r.Check()
			_ = r.QueueStats(i % 3)
			for _, m := range r.Members() {
				if m.Slot >= slots {
					t.Fatalf("member slot %d of %d", m.Slot, slots)
				}
			}
		}
	}
}

// fuzzJoin opens the readers a ring of r's type has: subscribers (newest
// and oldest) on pubsub, a reader per direction on stream.
func fuzzJoin(t *testing.T, r *Ring, oldest bool) []func([]byte) ([]byte, error) {
	t.Helper()
	var next []func([]byte) ([]byte, error)
	if r.Config().Type == TypeStream {
		for q := 0; q < 2; q++ {
			rd, err := r.NewReader(ReaderOptions{Queue: q})
			if err != nil {
				if !errors.Is(err, ErrNoSlot) {
					t.Fatalf("reader %d: %v", q, err)
				}
				continue
			}
			next = append(next, rd.TryNext)
		}
		return next
	}
	from := StartNewest
	if oldest {
		from = StartOldest
	}
	s, err := r.NewSubscriber(SubscriberOptions{From: from})
	if err != nil {
		if !errors.Is(err, ErrNoSlot) {
			t.Fatalf("subscriber: %v", err)
		}
		return nil
	}
	return append(next, s.TryNext)
}

// FuzzOpen writes arbitrary bytes over the start of a valid ring and opens
// it: Open must return a documented error or a ring whose geometry fits
// the mapping, and that ring must then survive use.
func FuzzOpen(f *testing.F) {
	for _, stream := range []bool{false, true} {
		cfg := Config{Capacity: 4096, MaxMessage: 1000, MemberSlots: 8, Lease: DefaultLease, Epoch: 1}
		if stream {
			cfg.Type = TypeStream
		}
		// No member ever joins this ring, so Go memory is fine here.
		mem := make([]byte, cfg.WithDefaults().Size())
		if _, err := Format(mem, cfg); err != nil {
			f.Fatal(err)
		}
		mem = mem[:HeaderLen]
		f.Add(stream, mem[:192])                   // a valid descriptor
		f.Add(stream, mem[:8])                     // magic only
		f.Add(stream, []byte{})                    // untouched
		f.Add(stream, []byte("SHIMRING\x02"))      // future version
		f.Add(stream, append([]byte(nil), mem...)) // whole header, queues included
		bad := append([]byte(nil), mem[:192]...)
		binary.LittleEndian.PutUint64(bad[OffCapacity:], 1<<40)
		f.Add(stream, bad)
		bad = append([]byte(nil), mem[:192]...)
		binary.LittleEndian.PutUint32(bad[OffMemberSlots:], 0)
		f.Add(stream, bad)
		bad = append([]byte(nil), mem[:192]...)
		binary.LittleEndian.PutUint64(bad[OffFileSize:], fuzzMapLen*2)
		f.Add(stream, bad)
	}
	f.Fuzz(func(t *testing.T, stream bool, data []byte) {
		cfg := Config{Capacity: 4096, MaxMessage: 1000, MemberSlots: 8, Lease: DefaultLease, Epoch: 1}
		if stream {
			cfg.Type = TypeStream
		}
		fuzzWatchdog(t, "FuzzOpen")
		mem := fuzzMap(t)
		if _, err := Format(mem, cfg); err != nil {
			t.Fatal(err)
		}
		copy(mem, data)
		r, err := Open(mem)
		if err != nil {
			if r != nil {
				t.Fatalf("Open returned a ring and error %v", err)
			}
			if !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: undocumented error %v", err)
			}
			return
		}
		t.Cleanup(func() { r.Close() })
		got := r.Config()
		if err := got.Validate(); err != nil {
			t.Fatalf("Open accepted an invalid config %+v: %v", got, err)
		}
		if got.Size() > int64(len(mem)) || int64(len(r.Bytes())) != got.Size() {
			t.Fatalf("ring of %d bytes (view %d) in a %d-byte mapping", got.Size(), len(r.Bytes()), len(mem))
		}
		// The fuzzed header may also claim a different geometry over data
		// formatted for another: use it anyway. A fuzzed queue header may
		// name an exclusive publisher, which keeps others out.
		p, err := r.NewPublisher(PublisherOptions{})
		if err != nil && !errors.Is(err, ErrNoSlot) && !errors.Is(err, ErrExclusive) {
			t.Fatalf("publisher: %v", err)
		}
		fuzzDrive(t, r, fuzzJoin(t, r, len(data)%2 == 0), p)
	})
}

// Mode bits of FuzzReader.
const (
	fzTypeMask   = 3      // 0 pubsub block, 1 pubsub overwrite, 2 and 3 stream
	fzRelative   = 1 << 2 // counters are added to the current values, not stored
	fzMembers    = 1 << 3 // the overlay hits the member table, not the data
	fzJoinAfter  = 1 << 4 // readers join after the corruption
	fzOldest     = 1 << 5 // subscribers start at the oldest message
	fzKeepWrites = 1 << 6 // a publisher keeps writing during the reads
)

// FuzzReader fills a small valid ring with messages, then overwrites its
// queue counters (Tail, Head, Limit, Release, Index[...], queue 0 then
// queue 1, 8 little-endian bytes each) with counters, and overlays data at
// offset at of the data region (or of the member table), and reads.
func FuzzReader(f *testing.F) {
	le := binary.LittleEndian
	u64s := func(v ...uint64) []byte {
		b := make([]byte, 8*len(v))
		for i, x := range v {
			le.PutUint64(b[8*i:], x)
		}
		return b
	}
	for mode := uint8(0); mode < 3; mode++ {
		f.Add(mode, uint16(0), []byte{}, uint16(0), []byte{})                                    // empty ring, untouched
		f.Add(mode, uint16(40), []byte{}, uint16(0), []byte{})                                   // wrapped, untouched
		f.Add(mode|fzJoinAfter|fzOldest, uint16(40), []byte{}, uint16(0), []byte{})              // oldest after wraps
		f.Add(mode|fzRelative, uint16(5), u64s(1<<32|1, 0, 0, 0), uint16(0), []byte{})           // tail one unit ahead
		f.Add(mode|fzRelative, uint16(5), u64s(0, 1<<32|2, 2, 2), uint16(0), []byte{})           // head ahead of tail
		f.Add(mode|fzRelative|fzJoinAfter, uint16(9), u64s(1<<31, 0, 0, 0), uint16(0), []byte{}) // tail half the space away
		f.Add(mode, uint16(3), []byte{}, uint16(0), u64s(256|0x3fffffff<<32))                    // huge length, right tag
		f.Add(mode, uint16(3), []byte{}, uint16(0), u64s(256|(0x80000000|4000)<<32))             // padding past the end
		f.Add(mode, uint16(3), []byte{}, uint16(0), u64s(256|5<<32, 7))                          // wrong sequence
		f.Add(mode|fzKeepWrites|fzOldest|fzJoinAfter, uint16(30), u64s(0, 0, 0, 0, 0, 1<<40), uint16(0), []byte{})
		f.Add(mode|fzMembers, uint16(2), []byte{}, uint16(0), u64s(uint64(RoleSubscriber)<<32|uint64(MemberActive), 0, 1, 0, 0, 0, 0, 0))
		f.Add(mode|fzMembers|fzKeepWrites, uint16(2), []byte{}, uint16(64), u64s(uint64(RolePublisher)<<32|uint64(MemberActive), 0, 1, 256, 256, 0x1000, 0, 0))
	}
	f.Fuzz(func(t *testing.T, mode uint8, nmsg uint16, counters []byte, at uint16, data []byte) {
		cfg := Config{Capacity: 4096, MaxMessage: 1000, MemberSlots: 8, Lease: DefaultLease, Epoch: 1}
		switch mode & fzTypeMask {
		case 0:
			cfg.Policy = PolicyBlock
		case 1:
			cfg.Policy = PolicyOverwrite
		default:
			cfg.Type = TypeStream
		}
		fuzzWatchdog(t, "FuzzReader")
		r, mem := fuzzFormat(t, cfg)
		var next []func([]byte) ([]byte, error)
		if mode&fzJoinAfter == 0 {
			next = fuzzJoin(t, r, mode&fzOldest != 0)
		}
		p, err := r.NewPublisher(PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < int(nmsg%256); i++ {
			if err := p.TryPublish(fuzzPayload(i, cfg.MaxMessage)); err != nil {
				if errors.Is(err, ErrWouldBlock) {
					break
				}
				t.Fatalf("prefill %d: %v", i, err)
			}
		}
		// Corrupt the queue counters.
		for q := 0; q < int(cfg.queues()) && len(counters) >= 8; q++ {
			qh := r.queues[q]
			fields := []*uint64{&qh.Tail, &qh.Head, &qh.Limit, &qh.Release}
			for i := range qh.Index {
				fields = append(fields, &qh.Index[i])
			}
			for _, w := range fields {
				if len(counters) < 8 {
					break
				}
				v := le.Uint64(counters)
				counters = counters[8:]
				if mode&fzRelative != 0 {
					v += atomic.LoadUint64(w)
				}
				atomic.StoreUint64(w, v)
			}
		}
		// Overlay the data region (both queues of a stream) or the member table.
		region := mem[r.data[0] : r.data[0]+cfg.queues()*cfg.Capacity]
		if mode&fzMembers != 0 {
			region = mem[HeaderLen : HeaderLen+membersLen(cfg.MemberSlots)]
		}
		if len(data) > 0 {
			copy(region[int(at)%len(region):], data)
		}
		if mode&fzJoinAfter != 0 {
			next = fuzzJoin(t, r, mode&fzOldest != 0)
		}
		if mode&fzKeepWrites == 0 {
			p.Close()
			p = nil
		}
		fuzzDrive(t, r, next, p)
	})
}

// TestJoinLimitHalfSpace is the minimal form of the fuzz input
// testdata/fuzz/FuzzReader/join-limit-half-space-away: a block ring whose
// Limit lies exactly 2^31 units from the tail. NewSubscriber's settle loop
// tests "publishers passed us" with udist > 2^31 but accepts the start
// only with udist < 2^31, so at exactly 2^31 it loops forever. Joining a
// corrupt ring may fail with ErrCorrupt or succeed, but must return.
func TestJoinLimitHalfSpace(t *testing.T) {
	fuzzWatchdog(t, "TestJoinLimitHalfSpace")
	r, _ := fuzzFormat(t, Config{Capacity: 4096, MaxMessage: 1000, MemberSlots: 8, Policy: PolicyBlock})
	qh := r.queues[0]
	tail := pos(atomic.LoadUint64(&qh.Tail))
	atomic.StoreUint64(&qh.Limit, uint64(tail.units()-1<<31))
	s, err := r.NewSubscriber(SubscriberOptions{})
	if err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("join: %v, want a subscriber or ErrCorrupt", err)
	}
	if err == nil {
		if _, err := s.TryNext(nil); err != nil && !fuzzErrOK(err) {
			t.Fatalf("read: %v", err)
		}
	}
}
