package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/mirror/internal/wire"
)

// outbox holds the stream records taken from the ring for one peer until
// it acknowledges them, in memory and in a file of the state directory:
// records survive link cuts and agent restarts.
type outbox struct {
	path string
	f    *os.File
	size int64 // bytes of the file
	recs []outRec
	next uint64 // id of the next record taken
	// j is the record being taken, in a mapped file of the state
	// directory: a take the agent dies in is settled after its restart.
	j    *channel.TakeJournal
	jmem []byte // j's mapping
}

type outRec struct {
	id  uint64
	msg []byte
}

const (
	outRecHeader = 16 // id u64, len u32, crc32 of the payload u32
	// outboxCompact: a file larger than this is rewritten with the
	// records still held whenever an acknowledgement drops some.
	outboxCompact = 1 << 20
)

// outboxFor returns the outbox of peer id and k, loading its file and
// mapping its journal (for records of up to maxMessage bytes) the first
// time; acked is the next id the peer is known to expect.
func (m *Mirror) outboxFor(peer string, k chanKey, acked uint64, maxMessage uint32) (*outbox, error) {
	m.omu.Lock()
	defer m.omu.Unlock()
	hk := holdKey{peer, k}
	if ob := m.outboxes[hk]; ob != nil {
		ob.drop(acked)
		return ob, nil
	}
	ob := &outbox{path: m.state.path("outbox", peer, k), next: acked}
	if err := os.MkdirAll(filepath.Dir(ob.path), 0o700); err != nil {
		return nil, fmt.Errorf("mirror: state: %w", err)
	}
	var err error
	if ob.j, ob.jmem, err = mapJournal(m.state.path("take", peer, k), channel.TakeJournalLen(maxMessage)); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(ob.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("mirror: outbox: %w", err)
	}
	ob.recs = readOutbox(b, acked)
	if n := len(ob.recs); n > 0 {
		ob.next = max(ob.next, ob.recs[n-1].id+1)
	}
	if err := ob.rewrite(); err != nil {
		return nil, err
	}
	m.outboxes[hk] = ob
	return ob, nil
}

// readOutbox returns the records of an outbox file's content b from id
// acked on.
func readOutbox(b []byte, acked uint64) []outRec {
	var recs []outRec
	for len(b) >= outRecHeader {
		id, n := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint32(b[8:])
		if uint64(n) > uint64(len(b)-outRecHeader) || crc32.ChecksumIEEE(b[outRecHeader:outRecHeader+int(n)]) != binary.LittleEndian.Uint32(b[12:]) {
			break // a torn tail: the record was never handed out
		}
		if id >= acked {
			recs = append(recs, outRec{id, bytes.Clone(b[outRecHeader : outRecHeader+int(n)])})
		}
		b = b[outRecHeader+int(n):]
	}
	return recs
}

// close lets go of the outbox's file and journal (forgetUnshared).
func (ob *outbox) close() {
	if ob.f != nil {
		ob.f.Close()
	}
	if ob.jmem != nil {
		unix.Munmap(ob.jmem)
	}
}

// add appends a record taken from the ring and returns its id.
func (ob *outbox) add(msg []byte) (uint64, error) {
	id := ob.next
	var h [outRecHeader]byte
	binary.LittleEndian.PutUint64(h[:], id)
	binary.LittleEndian.PutUint32(h[8:], uint32(len(msg)))
	binary.LittleEndian.PutUint32(h[12:], crc32.ChecksumIEEE(msg))
	rec := append(h[:], msg...)
	if _, err := ob.f.WriteAt(rec, ob.size); err != nil {
		return 0, fmt.Errorf("mirror: outbox: %w", err)
	}
	ob.size += int64(len(rec))
	ob.recs = append(ob.recs, outRec{id, bytes.Clone(msg)})
	ob.next++
	return id, nil
}

// drop forgets the records before id (the peer has them).
func (ob *outbox) drop(id uint64) error {
	i := 0
	for i < len(ob.recs) && ob.recs[i].id < id {
		i++
	}
	if i == 0 {
		return nil
	}
	ob.recs = append(ob.recs[:0], ob.recs[i:]...)
	if len(ob.recs) == 0 || ob.size > outboxCompact {
		return ob.rewrite()
	}
	return nil
}

// rewrite replaces the file with the records held.
func (ob *outbox) rewrite() error {
	var b []byte
	for _, r := range ob.recs {
		var h [outRecHeader]byte
		binary.LittleEndian.PutUint64(h[:], r.id)
		binary.LittleEndian.PutUint32(h[8:], uint32(len(r.msg)))
		binary.LittleEndian.PutUint32(h[12:], crc32.ChecksumIEEE(r.msg))
		b = append(append(b, h[:]...), r.msg...)
	}
	tmp := ob.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("mirror: outbox: %w", err)
	}
	if err := os.Rename(tmp, ob.path); err != nil {
		return fmt.Errorf("mirror: outbox: %w", err)
	}
	f, err := os.OpenFile(ob.path, os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("mirror: outbox: %w", err)
	}
	if ob.f != nil {
		ob.f.Close()
	}
	ob.f, ob.size = f, int64(len(b))
	return nil
}

func (ob *outbox) len() int { return len(ob.recs) }

// mapJournal maps the take journal at path, of at least n bytes (kept
// larger if a previous run made it so), creating it empty, and its
// mapping, which lasts until forgetUnshared drops the outbox.
func mapJournal(path string, n int) (*channel.TakeJournal, []byte, error) {
	mem, err := mapFile(path, n, "take journal")
	if err != nil {
		return nil, nil, err
	}
	j, err := channel.NewTakeJournal(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, nil, err
	}
	return j, mem, nil
}

// settle finds out what became of the record a previous run was taking
// when it died, and keeps it if it was this outbox's: false while the ring
// cannot tell yet (another reader may be taking it).
func (ob *outbox) settle(ring *channel.Ring, log logrus.FieldLogger) (bool, error) {
	switch ring.SettleTake(ob.j) {
	case channel.TakeNone:
		return true, nil
	case channel.TakeUndecided:
		return false, nil
	case channel.TakeMine:
		msg, tag, _ := ob.j.Taken()
		if ob.next <= tag { // not in the outbox yet
			if _, err := ob.add(msg); err != nil {
				return false, err
			}
		}
	case channel.TakeUnknown:
		log.Warn("a stream record the previous run was taking when it died may be lost: it stayed away longer than the channel's lease")
	}
	ob.j.Clear()
	return true, nil
}

func (ob *outbox) first() uint64 {
	if len(ob.recs) > 0 {
		return ob.recs[0].id
	}
	return ob.next
}

// openStream opens a stream flow: records still in the outbox from
// before go first, from the peer's high-water mark on.
func (ex *exporter) openStream(sub wire.Sub) (wire.Open, error) {
	m := ex.s.p.m
	mk, rec, ok, err := openMark(m.state.path("acked", ex.s.p.cfg.ID(), ex.key))
	if err != nil {
		return wire.Open{}, err
	}
	ex.mark = mk
	acked := uint64(0)
	if ok {
		acked = rec.Seq
	}
	if sub.Epoch == streamEpoch && sub.Next.Seq > acked {
		acked = sub.Next.Seq
	}
	if ex.ob, err = m.outboxFor(ex.s.p.cfg.ID(), ex.key, acked, ex.cfg.MaxMessage); err != nil {
		return wire.Open{}, err
	}
	if ex.im, err = m.importsFor(ex.key, ex.ring); err != nil {
		return wire.Open{}, err
	}
	// A take the previous run died in: now, while the dead reader's
	// announcement still keeps reapers off the record (runStream asks
	// again if the ring cannot tell yet).
	m.omu.Lock()
	ex.settled, err = ex.ob.settle(ex.ring, ex.log)
	m.omu.Unlock()
	if err != nil {
		return wire.Open{}, err
	}
	if sub.Epoch == streamEpoch && sub.Next.Seq > ex.ob.next {
		return wire.Open{}, fmt.Errorf("%w: peer expects stream record %d, only %d were taken", ErrProtocol, sub.Next.Seq, ex.ob.next)
	}
	if ex.reader, err = ex.h.NewReader(channel.ReaderOptions{Queue: ex.key.Q}); err != nil {
		return wire.Open{}, err
	}
	m.setExporting(ex.key, ex.reader.Slot(), true)
	start := ex.ob.first()
	ex.acked = channel.Extended{Seq: start}
	ex.ext, ex.sentNext = ex.acked, ex.acked // next id to send
	ex.credit, ex.window = sub.Credit, uint64(sub.Window)
	if err := ex.mark.store(markRec{streamEpoch, start, 0}); err != nil {
		return wire.Open{}, err
	}
	return wire.Open{Flow: ex.flow, Epoch: streamEpoch, Start: wire.Pos{Seq: start},
		Type: uint32(ex.cfg.Type), Policy: uint32(ex.cfg.Policy), MaxMessage: ex.cfg.MaxMessage}, nil
}

func (ex *exporter) onStreamAck(e wire.AckEntry) error {
	// Lock order: omu before ex.mu (runStream's).
	m := ex.s.p.m
	m.omu.Lock()
	defer m.omu.Unlock()
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if e.Next.Seq < ex.acked.Seq || e.Next.Seq > ex.ext.Seq {
		return fmt.Errorf("%w: stream flow %d acknowledged %d, outside %d..%d", ErrProtocol, ex.flow, e.Next.Seq, ex.acked.Seq, ex.ext.Seq)
	}
	if e.Next.Seq > ex.acked.Seq {
		ex.acked.Seq = e.Next.Seq
		if err := ex.ob.drop(e.Next.Seq); err != nil {
			return err
		}
		if err := ex.mark.store(markRec{streamEpoch, e.Next.Seq, 0}); err != nil {
			return err
		}
	}
	ex.credit, ex.window = e.Credit, max(ex.window, e.Window)
	select {
	case ex.ackc <- struct{}{}:
	default:
	}
	return nil
}

// runStream sends the outbox's records, then takes new ones from the ring
// while the peer's credit lasts.
func (ex *exporter) runStream() error {
	ctx := ex.s.ctx
	buf := make([]byte, 0, wire.DataFixedLen+batchTarget+wire.RecordSize(int(ex.cfg.MaxMessage)))
	var zero [wire.DataFixedLen]byte
	var msg []byte
	for ctx.Err() == nil {
		buf = append(buf[:0], zero[:wire.DataFixedLen]...)
		count, size := 0, 0
		put := func(id uint64, p []byte) {
			off := len(buf)
			buf = append(buf, make([]byte, wire.RecordSize(len(p)))...)
			copy(wire.PutRecord(buf[off:], id, len(p)), p)
			count++
			size += len(p)
		}
		ex.s.p.m.omu.Lock()
		ex.mu.Lock()
		next, limit, room := ex.ext.Seq, ex.acked.Seq+uint64(ex.credit), ex.roomLocked()
		ex.mu.Unlock()
		// Only what the peer's spool takes.
		fits := func() bool { return len(buf) < batchTarget && uint64(len(buf)-wire.DataFixedLen) < room }
		var err error
		if !ex.settled {
			if ex.settled, err = ex.ob.settle(ex.ring, ex.log); err != nil {
				ex.s.p.m.omu.Unlock()
				return err
			}
		}
		// Records taken before (an earlier link) first.
		for _, r := range ex.ob.recs {
			if r.id >= next && fits() {
				put(r.id, r.msg)
				next = r.id + 1
			}
		}
		// Records are taken through the journal, and what this host's
		// importers wrote is left to its own readers (no relaying: a
		// record that came over another link would race the origin's
		// later records to the peer). The journal is cleared once the
		// outbox has the record.
		for ex.settled && next == ex.ob.next && next < limit && fits() {
			if msg, err = ex.reader.TryTake(ex.ob.j, ex.ob.next, ex.im.is, msg); err != nil {
				break
			}
			if testHookTook != nil {
				testHookTook()
			}
			id, aerr := ex.ob.add(msg)
			if aerr != nil {
				err = aerr
				break
			}
			ex.ob.j.Clear()
			put(id, msg)
			next = id + 1
		}
		ex.s.p.m.omu.Unlock()
		if err != nil && !errors.Is(err, channel.ErrWouldBlock) {
			return err
		}
		if count == 0 {
			// Nothing to send: wait for credit, or for a record.
			if next < limit {
				if err := ex.waitRecord(); err != nil {
					return err
				}
				continue
			}
			select {
			case <-ctx.Done():
			case <-ex.ackc:
			}
			continue
		}
		wire.PutDataHeader(buf, ex.flow, uint32(len(buf)), wire.Pos{Seq: next}, 0, uint32(count))
		ex.mu.Lock() // sent before send returns: its Ack may overtake it
		ex.ext.Seq, ex.sentNext.Seq = next, next
		ex.sentRec += uint64(len(buf) - wire.DataFixedLen)
		ex.mu.Unlock()
		if err := ex.s.send(buf); err != nil {
			return err
		}
		ex.s.p.msgs.Add(uint64(count))
		ex.s.p.bytes.Add(uint64(size))
	}
	return nil
}

// testHookTook, set only by tests, runs after the exporter took a record
// from the ring and before the outbox has it: a test agent dies there.
var testHookTook func()

// streamPoll is how often an exporter with credit looks for records.
const streamPoll = 2 * time.Millisecond

// waitRecord waits briefly for a record or an Ack: a Reader cannot wait
// without taking, and a record must only be taken against credit.
func (ex *exporter) waitRecord() error {
	select {
	case <-ex.s.ctx.Done():
	case <-ex.ackc:
	case <-time.After(streamPoll):
	}
	return nil
}

// setExporting records that slot of k's ring is a reader of this mirror.
func (m *Mirror) setExporting(k chanKey, slot uint32, on bool) {
	m.xmu.Lock()
	defer m.xmu.Unlock()
	sk := slotKey{k, slot}
	if on {
		m.readers[sk] = true
	} else {
		delete(m.readers, sk)
	}
}

// exporting reports whether slot of k's ring is a reader of this mirror.
func (m *Mirror) exporting(k chanKey, slot uint32) bool {
	m.xmu.Lock()
	defer m.xmu.Unlock()
	return m.readers[slotKey{k, slot}]
}

type slotKey struct {
	k    chanKey
	slot uint32
}
