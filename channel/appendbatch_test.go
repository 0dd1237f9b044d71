package channel

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

// readLog is what a subscriber read of a ring: the messages it got, each
// with the position it started at, how many it passed over, what it
// lost, where it stopped and why.
type readLog struct {
	msgs    []string
	skipped int
	lost    uint64
	end     Position
	err     error
}

// readOneByOne reads s to the end the way the exporter did before
// AppendBatch: SkipIf, then AppendNext for what it did not skip.
func readOneByOne(s *Subscriber, skip func(uint32, Position) bool) readLog {
	var l readLog
	for {
		ok, err := s.SkipIf(skip) // may resync a lapped reader first
		if err == nil && ok {
			l.skipped++
			continue
		}
		at := s.Position()
		var msg []byte
		if err == nil {
			msg, _, err = s.AppendNext(nil)
		}
		if err != nil {
			if !errors.Is(err, ErrWouldBlock) {
				l.err = err
			}
			l.lost, l.end = s.Lost(), s.Position()
			return l
		}
		l.msgs = append(l.msgs, fmt.Sprintf("%v %s", at, msg))
	}
}

// readBatches reads s to the end with AppendBatch, limit bytes at most
// per batch, checking each batch's account and limit on the way.
func readBatches(t *testing.T, s *Subscriber, skip func(uint32, Position) bool, limit int) readLog {
	var l readLog
	var put []string // what Put framed, "position message"
	var last int     // the size of the last message Put appended
	o := AppendOptions{Limit: limit, Skip: skip, Put: func(buf, msg []byte, at Position) []byte {
		put, last = append(put, fmt.Sprintf("%v %s", at, msg)), len(msg)
		return append(buf, msg...)
	}}
	for {
		put = put[:0]
		buf, got, err := s.AppendBatch(nil, o)
		// No one laps the reader while it reads: nothing Put framed is
		// cut off again.
		if got.Msgs != len(put) || got.Bytes != len(buf) {
			t.Fatalf("a batch of %d messages, %d bytes says %d, %d", len(put), len(buf), got.Msgs, got.Bytes)
		}
		l.msgs = append(l.msgs, put...)
		if got.Msgs > 1 && len(buf)-last >= limit {
			t.Fatalf("a batch of %d bytes went on past the limit %d", len(buf), limit)
		}
		switch {
		case err != nil:
			l.err = err
		case got.End == AppendSkipped:
			l.skipped++
			continue
		case got.End == AppendFull:
			if len(buf) < limit {
				t.Fatalf("a batch of %d bytes stopped full below the limit %d", len(buf), limit)
			}
			continue
		}
		l.lost, l.end = s.Lost(), s.Position()
		return l
	}
}

// TestAppendBatch: AppendBatch reads what SkipIf and AppendNext, one
// message at a time, read of the same ring: the same messages at the
// same positions, in order, bytes intact; the same imports passed over,
// the same losses when publishers lapped the reader, the same error at a
// corrupt frame, after the same messages; and no batch past its limit.
func TestAppendBatch(t *testing.T) {
	const corruptNone = -1
	for _, tc := range []struct {
		name    string
		policy  Policy
		msgs    int // published, every third by the "importer"
		laps    bool
		corrupt int // the message whose frame is made corrupt
		limit   int
		wantErr error
	}{
		{"empty", PolicyBlock, 0, false, corruptNone, 1 << 10, nil},
		{"imports passed over, block", PolicyBlock, 40, false, corruptNone, 1 << 20, nil},
		{"imports passed over, overwrite", PolicyOverwrite, 40, false, corruptNone, 1 << 20, nil},
		{"one message per batch", PolicyBlock, 40, false, corruptNone, 1, nil},
		{"limit at a message's end", PolicyBlock, 40, false, corruptNone, len("local-1"), nil},
		{"limit of a few messages", PolicyOverwrite, 40, false, corruptNone, 40, nil},
		{"lapped before the read", PolicyOverwrite, 400, true, corruptNone, 200, nil},
		{"corrupt frame, block", PolicyBlock, 40, false, 17, 1 << 20, ErrCorrupt},
		{"corrupt frame, overwrite", PolicyOverwrite, 40, false, 4, 100, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: MinCapacity, MaxMessage: 1000, Policy: tc.policy})
			one, batch := mustSub(t, r), mustSub(t, r)
			local, imported := mustPub(t, r), mustPub(t, r)
			skip := func(slot uint32, _ Position) bool { return slot == imported.Slot() }
			wantMsgs, wantSkipped := 0, 0
			for i := range tc.msgs {
				p, msg := local, fmt.Sprintf("local-%d", i)
				if i%3 == 0 {
					p, msg = imported, fmt.Sprintf("imported-%d-%0100d", i, 0)
				}
				at := Position(r.QueueStats(0).Tail)
				if err := p.TryPublish([]byte(msg)); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				if i == tc.corrupt {
					w := r.commitWord(0, r.offset(at.units()))
					atomic.StoreUint64(w, uint64(at.units())|uint64(LengthMask)<<32)
				}
				if i < tc.corrupt || tc.corrupt == corruptNone {
					if p == local {
						wantMsgs++
					} else {
						wantSkipped++
					}
				}
			}
			want := readOneByOne(one, skip)
			got := readBatches(t, batch, skip, tc.limit)
			if !errors.Is(got.err, tc.wantErr) || fmt.Sprint(got.err) != fmt.Sprint(want.err) {
				t.Fatalf("AppendBatch ended with %v, AppendNext with %v; want %v", got.err, want.err, tc.wantErr)
			}
			if fmt.Sprint(got.msgs) != fmt.Sprint(want.msgs) {
				t.Fatalf("AppendBatch read\n%q\nAppendNext read\n%q", got.msgs, want.msgs)
			}
			if got.skipped != want.skipped || got.lost != want.lost || got.end != want.end {
				t.Fatalf("AppendBatch passed over %d, lost %d, stopped at %v; AppendNext %d, %d, %v",
					got.skipped, got.lost, got.end, want.skipped, want.lost, want.end)
			}
			if tc.laps {
				if got.lost == 0 || len(got.msgs) == 0 {
					t.Fatalf("lapped: lost %d, read %d: the test tested nothing", got.lost, len(got.msgs))
				}
				return
			}
			if len(got.msgs) != wantMsgs || got.skipped != wantSkipped || got.lost != 0 {
				t.Fatalf("read %d, passed over %d, lost %d; published %d and %d imports before the end",
					len(got.msgs), got.skipped, got.lost, wantMsgs, wantSkipped)
			}
		})
	}
}

// TestAppendBatchBounded: empty messages fill no buffer; a batch of them
// stops after appendMaxLooks, and the next batch reads on from there.
func TestAppendBatchBounded(t *testing.T) {
	r := newRing(t, Config{Capacity: 1 << 20, Policy: PolicyBlock})
	s, p := mustSub(t, r), mustPub(t, r)
	const n = appendMaxLooks + 100
	for i := range n {
		if err := p.TryPublish(nil); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for _, want := range []Appended{{Msgs: appendMaxLooks, End: AppendFull}, {Msgs: 100, End: AppendEmpty}} {
		buf, got, err := s.AppendBatch(nil, AppendOptions{Limit: 1 << 20})
		if err != nil || got != want || len(buf) != 0 {
			t.Fatalf("AppendBatch: %+v, %d bytes, %v; want %+v", got, len(buf), err, want)
		}
	}
}

// TestAppendBatchLappedInPut: publishers lap the reader while Put copies a
// message (overwrite): what Put appended is cut off again, the reader
// resyncs and counts the loss, and the batch holds intact messages only,
// in order.
func TestAppendBatchLappedInPut(t *testing.T) {
	r := newRing(t, Config{Capacity: MinCapacity, MaxMessage: 1000, Policy: PolicyOverwrite})
	s, p := mustSub(t, r), mustPub(t, r)
	msg := func(i int) []byte { return fmt.Appendf(nil, "m%03d", i) }
	const old, lap = 3, 300 // 300 frames of 16 bytes: more than a lap of 4 KiB
	for i := range old {
		if err := p.TryPublish(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	puts := 0
	o := AppendOptions{Limit: 1 << 20, Put: func(buf, m []byte, _ Position) []byte {
		if puts++; puts == 1 {
			for i := old; i < old+lap; i++ {
				if err := p.TryPublish(msg(i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		return append(buf, m...)
	}}
	buf, got, err := s.AppendBatch(nil, o)
	if err != nil || got.End != AppendEmpty {
		t.Fatalf("AppendBatch: %+v, %v", got, err)
	}
	if got.Msgs != puts-1 || got.Bytes != len(buf) || s.Lost() == 0 {
		t.Fatalf("%d messages of %d bytes (%d in buf) from %d calls of Put, %d lost: want the first cut off and a loss",
			got.Msgs, got.Bytes, len(buf), puts, s.Lost())
	}
	first := old + lap - got.Msgs
	if want := uint64(first); s.Lost() != want {
		t.Errorf("lost %d, want %d (all before the first message of the batch)", s.Lost(), want)
	}
	for i := 0; i < got.Msgs; i++ {
		if m := string(buf[4*i : 4*i+4]); m != string(msg(first+i)) {
			t.Fatalf("message %d of the batch is %q, want %q", i, m, msg(first+i))
		}
	}
}
