package channel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Steps of a journaled take, as Reader.TryTake makes them: a process that
// dies after step k has made steps 1..k.
const (
	stepCopy     = 1 // the record is in the journal
	stepAnnounce = 2 // the take is announced in the reader's slot
	stepTake     = 3 // Head moved past the record
	stepMark     = 4 // the journal says taken
	stepConsume  = 5 // the record is consumed
)

// takeSteps makes the first steps of rd's journaled take of the record at
// the head, then leaves rd as a dead process would.
func takeSteps(t *testing.T, rd *Reader, j *TakeJournal, steps int) {
	t.Helper()
	r := rd.r
	h := pos(atomic.LoadUint64(&rd.qh.Head))
	msg, frame, st, err := r.read(rd.q, h)
	if st != readOK {
		t.Fatalf("no record at the head: %v %v", st, err)
	}
	next := mkpos(h.seq()+1, h.units()+uint32(frame>>unitShift))
	do := []func(){
		func() { j.begin(rd.q, rd.m.idx, rd.m.gen, r.cfg.Epoch, h, 7, msg) },
		func() {
			atomic.StoreUint64(&rd.m.s.Pending, uint64(h))
			atomic.StoreUint64(&rd.m.s.PendingLen, frame)
		},
		func() {
			if !atomic.CompareAndSwapUint64(&rd.qh.Head, uint64(h), uint64(next)) {
				t.Fatal("the take lost")
			}
		},
		func() { j.set(journalTaken) },
		func() {
			w := commitWord(h.units(), uint32(len(msg)))
			atomic.CompareAndSwapUint64(r.commitWord(rd.q, r.offset(h.units())), w, w|uint64(FlagConsumed)<<32)
		},
	}
	for _, f := range do[:steps] {
		f()
	}
}

// die stops rd's heartbeats, as its process's death does, and waits until
// its lease has run out.
func die(t *testing.T, rd *Reader) {
	t.Helper()
	rd.r.untrack(rd.m)
	rd.m.close.Store(true)
	eventually(t, 10*time.Second, func() error {
		if !rd.r.expired(rd.m.s, monotonic()) {
			return errors.New("the lease still runs")
		}
		return nil
	})
}

// newJournal maps a journal for messages of up to max bytes.
func newJournal(t *testing.T, max uint32) *TakeJournal {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, TakeJournalLen(max), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	j, err := NewTakeJournal(mem)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestSettleTake: a reader that takes through a journal dies at every
// step of a take, or another reader takes the record meanwhile; what
// SettleTake says, and where the record ends up: exactly one of the
// journal and the readers after it has it.
func TestSettleTake(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// run puts the first record into the state under test: dead is
		// the journal's reader, other another reader of the ring, which
		// has taken the record if took.
		run  func(t *testing.T, dead, other *Reader, j *TakeJournal)
		want TakeOutcome
		took bool
	}{
		{"nothing in the journal", func(t *testing.T, dead, other *Reader, j *TakeJournal) {}, TakeNone, false},
		{"died after the copy", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepCopy)
		}, TakeOthers, false},
		{"died after the announcement", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepAnnounce)
		}, TakeOthers, false},
		{"died right after the take", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepTake)
		}, TakeMine, false},
		{"died after the mark", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepMark)
		}, TakeMine, false},
		{"died after the consume", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepConsume)
		}, TakeMine, false},
		{"died after the take, and its lease ran out", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepTake)
			die(t, dead)
		}, TakeMine, false},
		{"another reader took and consumed it", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepAnnounce)
			if _, err := other.TryNext(nil); err != nil {
				t.Fatal(err)
			}
		}, TakeOthers, true},
		{"another reader consumed it, and the lease ran out", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			takeSteps(t, dead, j, stepAnnounce)
			if _, err := other.TryNext(nil); err != nil {
				t.Fatal(err)
			}
			die(t, dead)
		}, TakeUnknown, true},
		{"another reader is taking it", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			j2 := newJournal(t, 64)
			takeSteps(t, dead, j, stepCopy)
			takeSteps(t, other, j2, stepTake)
		}, TakeUndecided, false},
		{"another reader took it and died", func(t *testing.T, dead, other *Reader, j *TakeJournal) {
			j2 := newJournal(t, 64)
			takeSteps(t, dead, j, stepAnnounce)
			takeSteps(t, other, j2, stepTake)
			die(t, other)
		}, TakeMine, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Type: TypeStream, Capacity: MinCapacity, MaxMessage: 64, Lease: stallLease})
			pub, err := r.NewPublisher(PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			msgs := [][]byte{[]byte("record zero"), []byte("record one")}
			for _, m := range msgs {
				if err := pub.Publish(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			j := newJournal(t, 64)
			var rds [2]*Reader
			for i := range rds {
				if rds[i], err = r.NewReader(ReaderOptions{}); err != nil {
					t.Fatal(err)
				}
				defer rds[i].Close()
			}
			tc.run(t, rds[0], rds[1], j)
			before := 0 // what other readers took before SettleTake
			if tc.took {
				before = 1
			}
			got := r.SettleTake(j)
			if got != tc.want {
				t.Fatalf("SettleTake = %v, want %v", got, tc.want)
			}
			if got == TakeUndecided {
				// The live reader goes on and consumes it: then it is not
				// the journal's.
				w := commitWord(r.start().units(), uint32(len(msgs[0])))
				atomic.CompareAndSwapUint64(r.commitWord(0, 0), w, w|uint64(FlagConsumed)<<32)
				if got = r.SettleTake(j); got != TakeOthers {
					t.Fatalf("after the live reader consumed it: SettleTake = %v, want %v", got, TakeOthers)
				}
				before++
			}
			kept := 0
			if msg, tag, ok := j.Taken(); ok {
				if got != TakeMine || !bytes.Equal(msg, msgs[0]) || tag != 7 {
					t.Fatalf("the journal holds %q (tag %d) as taken after %v", msg, tag, got)
				}
				kept = 1
			}
			j.Clear()
			// A fresh reader takes what is left: with what the journal
			// kept and what others took, every record exactly once.
			rd, err := r.NewReader(ReaderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			rest := 0
			for {
				m, err := rd.TryNext(nil)
				if errors.Is(err, ErrWouldBlock) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if kept == 1 && bytes.Equal(m, msgs[0]) {
					t.Fatalf("%q was kept by the journal and taken again", m)
				}
				rest++
			}
			if total := before + kept + rest; total != len(msgs) {
				t.Fatalf("%d records taken before, %d kept by the journal, %d after: %d, want %d", before, kept, rest, total, len(msgs))
			}
			if st := r.QueueStats(0); st.Release != st.Head {
				t.Fatalf("release %v behind head %v: a taken record was never consumed", st.Release, st.Head)
			}
		})
	}
}

// TestTryTakeSkips: a record whose publisher the taker's skip names is
// left at the head for other readers, and the journal stays empty.
func TestTryTakeSkips(t *testing.T) {
	ctx := context.Background()
	r := newRing(t, Config{Type: TypeStream, Capacity: MinCapacity, MaxMessage: 64})
	pubs := make([]*Publisher, 2)
	for i := range pubs {
		p, err := r.NewPublisher(PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		pubs[i] = p
	}
	for i, p := range pubs {
		if err := p.Publish(ctx, []byte(fmt.Sprintf("from %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	taker, err := r.NewReader(ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer taker.Close()
	local, err := r.NewReader(ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	j := newJournal(t, 64)
	skip := func(slot uint32, _ Position) bool { return slot == pubs[0].Slot() }
	if _, err := taker.TryTake(j, 1, skip, nil); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TryTake of a skipped record: %v, want ErrWouldBlock", err)
	}
	if got := r.SettleTake(j); got != TakeNone {
		t.Fatalf("the journal after a skip: %v, want TakeNone", got)
	}
	if m, err := local.TryNext(nil); err != nil || string(m) != "from 0" {
		t.Fatalf("the local reader took %q, %v; want \"from 0\"", m, err)
	}
	m, err := taker.TryTake(j, 2, skip, nil)
	if err != nil || string(m) != "from 1" {
		t.Fatalf("TryTake took %q, %v; want \"from 1\"", m, err)
	}
	if jm, tag, ok := j.Taken(); !ok || string(jm) != "from 1" || tag != 2 {
		t.Fatalf("the journal holds %q, %d, %v", jm, tag, ok)
	}
	if _, err := taker.TryTake(j, 3, skip, nil); !errors.Is(err, ErrJournal) {
		t.Fatalf("TryTake before the journal was cleared: %v, want ErrJournal", err)
	}
	j.Clear()
	if _, err := taker.TryTake(j, 3, skip, nil); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TryTake of an empty ring: %v, want ErrWouldBlock", err)
	}
}

// BenchmarkStreamTakeJournal: BenchmarkStreamTake through a journal in
// anonymous shared memory (the mirror maps a tmpfs file), as the mirror's
// exporter takes.
func BenchmarkStreamTakeJournal(b *testing.B) {
	r, p, rd := streamPair(b)
	mem, err := unix.Mmap(-1, 0, TakeJournalLen(r.Config().MaxMessage), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(mem)
	j, err := NewTakeJournal(mem)
	if err != nil {
		b.Fatal(err)
	}
	benchTakes(b, p, func(buf []byte) ([]byte, error) {
		buf, err := rd.TryTake(j, 0, nil, buf)
		j.Clear()
		return buf, err
	})
}
