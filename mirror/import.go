package mirror

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/mirror/internal/wire"
	"github.com/shimmy-dev/shimmy/registry"
)

// errNoQueue: a stream queue index a pubsub channel does not have.
var errNoQueue = errors.New("mirror: the channel has no such queue")

// importer re-publishes one peer's messages of one channel (one stream
// queue) into the local ring. It outlives sessions: its publisher slot,
// high-water mark and spool carry over to the next link.
//
// The session's completions goroutine takes each batch into the spool
// (a file of the state directory; straight into the ring while the spool
// is empty and the ring has room) and the importer's own goroutine
// (publish) moves the spool into the ring, waiting for room there: a
// ring that has none holds up neither the other flows of the link nor
// the acknowledgement of what the spool took, so two hosts whose rings
// are full never wait for each other. The window that the importer
// grants the origin (Ack's Window) keeps the spool within its file.
type importer struct {
	p   *peer
	key chanKey
	log logrus.FieldLogger

	h    *registry.Handle
	ring *channel.Ring
	cfg  channel.Config
	pub  *channel.Publisher
	im   *imports // pubsub: where this publisher's frames are recorded
	mark *mark
	sp   *spool
	room uint64 // record bytes the window lets the spool hold

	stop context.CancelFunc
	done chan struct{} // publish returned
	kick chan struct{} // 1-buffered: the spool grew

	mu       sync.Mutex
	hwm      hwmRec
	sess     *session
	flow     uint32
	open     bool
	opened   chan struct{} // closed by onOpen
	mismatch bool          // the origin's channel does not fit ours
	broken   bool          // the publisher failed: open a new importer
	recvd    uint64        // record bytes of the flow's batches handled this session
	told     uint64        // the Window of the last Ack entry
	gaps     bool          // the ring takes gap frames (channel.Publisher.ClaimBatchLost)
	gap      uint64        // messages the link lost that no gap frame reports yet
	gapAt    uint64        // the spool offset the pending gap goes in at (before the records from there)
	chunking bool          // publish holds the publisher: deliver spools

	// publish's
	chunk []byte
	msgs  [][]byte
	ends  []uint64 // log offset after each of msgs
	sizes []int
	// deliver's, straight from a batch
	dmsgs  [][]byte
	dseqs  []uint64
	dsizes []int
	dends  []int        // offset after each of dmsgs in the batch's records
	wake   exporterWake // pubsub: when to wake this host's exporters (quiet.go)
}

// importer returns the importer of k, opening it (and the channel) if
// needed.
func (p *peer) importer(k chanKey) (*importer, error) {
	if imp := p.importers[k]; imp != nil {
		imp.mu.Lock()
		stale := imp.broken || imp.ring.Recreated()
		imp.mu.Unlock()
		if !stale {
			return imp, nil
		}
		imp.close()
		delete(p.importers, k)
	}
	imp, err := p.m.openImporter(p, k)
	if err != nil {
		return nil, err
	}
	p.importers[k] = imp
	return imp, nil
}

func (m *Mirror) openImporter(p *peer, k chanKey) (*importer, error) {
	ch, err := m.o.Registry.Channel(k.NS, k.Ch)
	if err != nil {
		return nil, err
	}
	h, err := ch.Open()
	if err != nil {
		return nil, err
	}
	imp := &importer{p: p, key: k, h: h, ring: h.Ring(), log: p.log.WithField("channel", k.String()),
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	close(imp.done) // until publish runs
	m.useFiles(p.cfg.ID(), k)
	imp.cfg = imp.ring.Config()
	fail := func(err error) (*importer, error) {
		imp.close()
		return nil, err
	}
	if k.Q >= imp.ring.Queues() {
		return fail(errNoQueue)
	}
	if imp.pub, err = h.NewPublisher(channel.PublisherOptions{Queue: k.Q, Quiet: true, Reserver: true}); err != nil {
		return fail(err)
	}
	imp.gaps = imp.cfg.Type == channel.TypePubSub && imp.ring.Version() >= 2
	// Exporters of either type leave what this publisher writes alone.
	if imp.im, err = m.importsFor(k, imp.ring); err != nil {
		return fail(err)
	}
	if err := imp.im.add(imp.pub.Slot(), imp.ring.QueueStats(k.Q).Tail); err != nil {
		return fail(err)
	}
	mk, rec, err := openHWM(m.state.path("hwm", p.cfg.ID(), k))
	if err != nil {
		return fail(err)
	}
	imp.mark = mk
	if rec.Pend != 0 || rec.PendNext != 0 {
		// A previous run died with a claim in flight.
		rec = rec.reconcile(imp.ring, k.Q)
		if err := mk.storeHWM(rec); err != nil {
			return fail(err)
		}
	}
	imp.hwm = rec
	if imp.sp, err = openSpool(m.state.path("spool", p.cfg.ID(), k), imp.spoolSize(), rec.spooled()); err != nil {
		return fail(err)
	}
	imp.room = imp.sp.size - min(imp.sp.size, imp.maxRecord())
	imp.chunk = make([]byte, max(batchTarget, imp.maxRecord()))
	ctx, stop := context.WithCancel(context.Background())
	imp.stop, imp.done = stop, make(chan struct{})
	go imp.publish(ctx)
	imp.kickPublish()
	return imp, nil
}

// importsFor returns the import history of k's queue for ring's epoch.
func (m *Mirror) importsFor(k chanKey, ring *channel.Ring) (*imports, error) {
	m.imu.Lock()
	defer m.imu.Unlock()
	old := m.imports[k]
	if old != nil && old.doc.Epoch == ring.Epoch() {
		return old, nil
	}
	if old != nil {
		// The file is the new ring's: the old one's users (closing)
		// go on in memory.
		old.claims.close()
	}
	im, err := m.state.loadImports(k, ring.Epoch(), ring.QueueStats(k.Q).Tail)
	if err != nil {
		return nil, err
	}
	m.imports[k] = im
	return im, nil
}

// The window lets the spool hold Options.SpoolRings of the ring's
// capacity, and the origin may start its last record just within it: the
// spool file holds that and one largest record.
func (imp *importer) spoolSize() uint64 { return imp.spoolRoom() + imp.maxRecord() }

func (imp *importer) spoolRoom() uint64 { return imp.cfg.Capacity * uint64(imp.p.m.o.SpoolRings) }

func (imp *importer) maxRecord() uint64 { return uint64(wire.RecordSize(int(imp.cfg.MaxMessage))) }

func (imp *importer) isStream() bool { return imp.cfg.Type == channel.TypeStream }

// attach makes imp a flow of session s and returns the Sub to send;
// false if it is a flow of s already.
func (imp *importer) attach(s *session) (wire.Sub, bool) {
	imp.mu.Lock()
	defer imp.mu.Unlock()
	if imp.sess == s {
		return wire.Sub{}, false
	}
	imp.sess, imp.open, imp.mismatch = s, false, false
	imp.flow = imp.p.m.flowIDs.Add(1)
	imp.opened = make(chan struct{})
	imp.recvd = 0
	imp.told = min(imp.windowLocked(), math.MaxUint32)
	return wire.Sub{
		Flow: imp.flow, Epoch: imp.hwm.Epoch, Next: wire.Pos{Seq: imp.hwm.Seq, Units: imp.hwm.Units},
		Queue: uint32(imp.key.Q), Credit: imp.creditLocked(), Window: uint32(imp.told),
		Namespace: imp.key.NS, Channel: imp.key.Ch,
	}, true
}

// detach ends imp's flow when its session ends.
func (imp *importer) detach() {
	imp.mu.Lock()
	defer imp.mu.Unlock()
	imp.sess, imp.open = nil, false
}

func (imp *importer) onOpen(o wire.Open) error {
	imp.mu.Lock()
	defer imp.mu.Unlock()
	if imp.open {
		return fmt.Errorf("%w: flow %d opened twice", ErrProtocol, o.Flow)
	}
	if channel.Type(o.Type) != imp.cfg.Type || o.MaxMessage > imp.cfg.MaxMessage {
		imp.mismatch = true
		imp.log.WithFields(logrus.Fields{"type": channel.Type(o.Type), "max_message": o.MaxMessage}).
			Error("the peer's channel does not fit this one (type, or a larger max message): its messages are dropped and counted as losses")
	}
	lost := o.Lost
	if o.Epoch == imp.hwm.Epoch {
		lost = imp.beyond(lost, o.Start.Seq, 0)
	} else {
		// What the spool holds of the old epoch still goes into the ring.
		imp.hwm.markRec, imp.hwm.Next = markRec{Epoch: o.Epoch, Seq: o.Start.Seq, Units: o.Start.Units}, 0
	}
	if lost > 0 {
		imp.addGapLocked(lost)
		imp.log.WithField("lost", lost).Warn("the peer no longer had messages after our high-water mark")
		// Into the ring now if there is room at once (the control loop
		// must not wait for it): publish puts it in otherwise.
		if imp.directLocked() {
			if _, err := imp.publishDirect(nil, o.Start.Seq); err != nil {
				imp.log.WithError(err).Warn("the link's losses wait for publish to reach the ring")
			}
		}
		imp.kickPublish() // what did not fit
	}
	if o.Start.Seq > imp.hwm.Seq {
		imp.hwm.Seq, imp.hwm.Units = o.Start.Seq, o.Start.Units
	}
	if err := imp.mark.storeHWM(imp.hwm); err != nil {
		return err
	}
	imp.open = true
	close(imp.opened)
	return nil
}

func (imp *importer) onRefuse(r wire.Refuse) {
	imp.log.WithFields(logrus.Fields{"code": r.Code, "reason": r.Text}).Info("peer refused the flow; asking again later")
	imp.detach()
}

// deliver takes a batch's new records into the spool, then stores the
// high-water mark at the batch's end; publish moves them into the ring.
// It never waits for the ring.
func (imp *importer) deliver(ctx context.Context, bt wire.Batch) error {
	imp.mu.Lock()
	opened := imp.opened
	imp.mu.Unlock()
	// Open travels on the control channel, which is not ordered with
	// the batches: the first batch may overtake it.
	select {
	case <-opened:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	imp.mu.Lock()
	defer imp.mu.Unlock()
	recs := bt.RecordBytes()
	imp.recvd += uint64(len(recs))
	if imp.mismatch {
		imp.p.losses.Add(uint64(bt.Count))
		return nil
	}
	next := imp.hwm.next()
	end := imp.hwm.Seq // the batch may not end before its last record
	from, off, fresh := len(recs), 0, 0
	var bytes uint64
	err := bt.Records(imp.cfg.MaxMessage, func(seq uint64, b []byte) error {
		end = max(end, seq+1)
		switch {
		case seq >= next:
			// Records are in order: from the first new one on, all are.
			from = min(from, off)
			bytes += uint64(len(b))
			next = seq + 1
			fresh++
		case from < len(recs):
			return fmt.Errorf("record %d after %d", seq, next-1)
		}
		off += wire.RecordSize(len(b))
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if bt.Next.Seq < end {
		return fmt.Errorf("%w: batch resumes at %d, before its last record %d", ErrProtocol, bt.Next.Seq, end-1)
	}
	if bt.Lost > 0 {
		imp.addGapLocked(imp.beyond(bt.Lost, bt.Next.Seq, fresh))
	}
	rest := recs[from:]
	if (len(rest) > 0 || imp.gap > 0) && imp.directLocked() {
		n, err := imp.publishDirect(rest, bt.Next.Seq)
		if err != nil {
			imp.broken = true
			imp.mark.storeHWM(imp.hwm) // what went in, for the next link
			return fmt.Errorf("mirror: import into %s: %w", imp.key, err)
		}
		rest = rest[n:]
	}
	if n := uint64(len(rest)); n > 0 {
		if imp.hwm.spooled()+n > imp.sp.size {
			return fmt.Errorf("%w: flow %d sent %d bytes beyond its window", ErrProtocol, imp.flow, imp.hwm.spooled()+n-imp.sp.size)
		}
		if err := imp.sp.writeAt(imp.hwm.Tail, rest); err != nil {
			return err
		}
		imp.hwm.Tail += n
	}
	// The records are the spool's once the mark says so: a write that
	// the agent's death cut short lies beyond the stored Tail.
	imp.hwm.Seq, imp.hwm.Units = bt.Next.Seq, bt.Next.Units
	imp.p.bytes.Add(bytes)
	if err := imp.mark.storeHWM(imp.hwm); err != nil {
		return err
	}
	imp.kickPublish()
	return nil
}

// beyond is how many of the lost messages the origin reports up to its
// sequence end this host misses: no more than the sequences from what it
// has (hwmRec.next: a batch half published before a restart may reach
// past the mark the origin counts from) up to end, less the fresh records
// it got among them. The origin counts what its ring no longer held from
// the receiver's mark on; the records beyond that mark are here already.
func (imp *importer) beyond(lost, end uint64, fresh int) uint64 {
	next := imp.hwm.next()
	if end <= next {
		return 0
	}
	return min(lost, end-next-min(end-next, uint64(fresh)))
}

// addGapLocked counts lost messages of the link, for a gap frame before
// the records that follow them: those the spool takes from its tail on (a
// gap already pending keeps its earlier place).
func (imp *importer) addGapLocked(lost uint64) {
	if lost == 0 {
		return
	}
	imp.p.losses.Add(lost)
	if imp.gap == 0 {
		imp.gapAt = imp.hwm.Tail
	}
	imp.gap += lost
}

// directLocked reports whether deliver may publish into the ring itself:
// the spool is empty (the ring has every record before the batch) and
// publish holds no claim (the publisher is not safe for concurrent use).
func (imp *importer) directLocked() bool { return imp.hwm.spooled() == 0 && !imp.chunking }

// maxGap is the most lost messages one gap frame stands for.
const maxGap = 1<<31 - 1

// publishDirect puts imp.gap (as gap frames first) and the records b
// (new, in order, up to the flow's sequence end) straight into the ring
// while it has room, one claim at a time, and returns the bytes of b
// published; the spool takes the rest (and publish the gap, before
// it). Only with the spool empty: the ring has everything before b,
// and publish does not use the publisher. Each claim is recorded before
// its commit with the sequence after its records, or the next record's
// (end) after a gap alone (hwmRec.PendNext), as publishChunk records its
// spool offset. A ring that takes no gap frames (a version 1 ring) has
// the losses in the link's count only.
func (imp *importer) publishDirect(b []byte, end uint64) (int, error) {
	if !imp.gaps {
		imp.gap = 0
	}
	imp.dmsgs, imp.dseqs, imp.dsizes, imp.dends = imp.dmsgs[:0], imp.dseqs[:0], imp.dsizes[:0], imp.dends[:0]
	for off := 0; off < len(b); {
		seq, p, sz, err := wire.FirstRecord(b[off:], imp.cfg.MaxMessage)
		if err != nil {
			return 0, err
		}
		off += sz
		imp.dmsgs, imp.dseqs, imp.dsizes, imp.dends = append(imp.dmsgs, p), append(imp.dseqs, seq), append(imp.dsizes, len(p)), append(imp.dends, off)
	}
	done := 0
	for done < len(imp.dmsgs) || imp.gap > 0 {
		g := uint32(min(imp.gap, maxGap))
		bt, err := imp.pub.TryClaimBatchLost(g, imp.dsizes[done:])
		if errors.Is(err, channel.ErrWouldBlock) {
			break
		}
		if err != nil {
			return 0, err
		}
		k := bt.Len()
		for i := range k {
			copy(bt.Buf(i), imp.dmsgs[done+i])
		}
		next := end
		switch {
		case k > 0:
			next = imp.dseqs[done+k-1] + 1
		case done < len(imp.dmsgs):
			next = imp.dseqs[done]
		}
		imp.hwm.PendNext, imp.hwm.At, imp.hwm.Ring, imp.hwm.Slot = next, bt.Position(), imp.ring.Epoch(), imp.pub.Slot()
		claimEnd := bt.End()
		err = imp.mark.storeHWM(imp.hwm)
		if err == nil {
			err = imp.pub.CommitBatch(bt)
		}
		imp.hwm.PendNext = 0
		if err != nil {
			return 0, err
		}
		imp.hwm.Next = max(imp.hwm.Next, next)
		imp.claimed(bt.Position(), claimEnd, imp.dsizes[done:done+k])
		imp.gap -= uint64(g)
		done += k
		imp.p.msgs.Add(uint64(k))
	}
	if done == 0 {
		return 0, nil
	}
	return imp.dends[done-1], nil
}

// claimed tells the import history of a committed claim from at to end
// (exporters count a lapped reader's losses without it, and pass over it
// whole), whose messages had sizes, and wakes this host's exporters when
// due (quiet.go).
func (imp *importer) claimed(at, end channel.Position, sizes []int) {
	if imp.im != nil {
		imp.im.claims.add(at, end)
	}
	imp.wake.published(imp.pub, sizes, imp.cfg.Capacity)
}

func (imp *importer) kickPublish() {
	select {
	case imp.kick <- struct{}{}:
	default:
	}
}

// windowLocked is the Window of imp's Ack entries: the record bytes the
// origin may have sent on the flow this session, those handled and what
// the spool takes beyond what it holds.
func (imp *importer) windowLocked() uint64 {
	return imp.recvd + imp.room - min(imp.room, imp.hwm.spooled())
}

// publish moves the spool into the ring until ctx ends, waiting for room
// in the ring: only this flow waits.
func (imp *importer) publish(ctx context.Context) {
	defer close(imp.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-imp.kick:
		}
		for {
			n, err := imp.publishChunk(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				imp.log.WithError(err).Error("import failed; the flow starts again")
				imp.mu.Lock()
				imp.broken = true
				_ = imp.pub.Reserve(false) // nothing moves the spool until the flow starts again
				imp.mu.Unlock()
				imp.p.interrupt()
				return
			}
			if n == 0 {
				break
			}
			imp.ackRoom()
		}
	}
}

// publishChunk reads records from the spool and puts them into the ring,
// one claim at a time, waiting for room like PublishBatch, with the
// pending gap frame first once the spool reaches its place. Before each
// claim's commit it stores the claim with the log offset after its last
// record (hwmRec.Pend): an agent that dies between the commit and the
// next store learns from the ring after its restart that those records
// are in. It returns the log bytes it moved; 0 once the spool is empty.
func (imp *importer) publishChunk(ctx context.Context) (int, error) {
	imp.mu.Lock()
	if !imp.gaps {
		imp.gap = 0
	}
	have, n := imp.hwm.Have, min(imp.hwm.spooled(), uint64(len(imp.chunk)))
	gap := uint64(0)
	if imp.gap > 0 {
		if imp.gapAt > have {
			n = min(n, imp.gapAt-have) // the records before the gap first
		} else {
			gap = imp.gap
		}
	}
	if n == 0 && gap == 0 && imp.sp.size != imp.spoolSize() {
		// Emptied a spool that a previous run kept at another size.
		if err := imp.sp.resize(imp.spoolSize()); err != nil {
			imp.mu.Unlock()
			return 0, err
		}
		imp.room = imp.spoolRoom()
	}
	imp.chunking = n > 0 || gap > 0
	// While the spool holds records the ring's room is the importer's
	// (block pubsub): local publishers that took the room the origin's
	// acknowledgements free would keep both hosts' spools full for good.
	// An evicted publisher's error comes back from its next claim.
	_ = imp.pub.Reserve(imp.chunking)
	imp.mu.Unlock()
	if !imp.chunking {
		return 0, nil
	}
	defer func() {
		imp.mu.Lock()
		imp.chunking = false
		imp.mu.Unlock()
	}()
	// [Have, Tail) is only written again once publish moved Have past it.
	b := imp.chunk[:n]
	if err := imp.sp.readAt(have, b); err != nil {
		return 0, err
	}
	imp.msgs, imp.ends, imp.sizes = imp.msgs[:0], imp.ends[:0], imp.sizes[:0]
	for off := 0; off < len(b); {
		_, p, sz, err := wire.FirstRecord(b[off:], imp.cfg.MaxMessage)
		if err != nil {
			if len(imp.msgs) > 0 && len(b) == len(imp.chunk) {
				break // a record cut by the chunk's end: the next chunk has it
			}
			// Records of a channel whose max message shrank since (it was
			// re-created), or a damaged file: trying again cannot help.
			imp.mu.Lock()
			lost := imp.hwm.spooled()
			imp.hwm.Have = imp.hwm.Tail
			err2 := imp.mark.storeHWM(imp.hwm)
			imp.mu.Unlock()
			imp.log.WithError(err).WithField("bytes", lost).Error("the spool holds records this channel cannot take: dropped")
			return int(lost), err2
		}
		off += sz
		imp.msgs, imp.ends, imp.sizes = append(imp.msgs, p), append(imp.ends, have+uint64(off)), append(imp.sizes, len(p))
	}
	for done := 0; done < len(imp.msgs) || gap > 0; {
		g := uint32(min(gap, maxGap))
		bt, err := imp.pub.ClaimBatchLost(ctx, g, imp.sizes[done:])
		if err != nil {
			return 0, err
		}
		k := bt.Len()
		for i := range k {
			copy(bt.Buf(i), imp.msgs[done+i])
		}
		claimEnd := bt.End()
		imp.mu.Lock()
		if k > 0 { // a gap alone moves no record
			imp.hwm.Pend, imp.hwm.At, imp.hwm.Ring, imp.hwm.Slot = imp.ends[done+k-1], bt.Position(), imp.ring.Epoch(), imp.pub.Slot()
			err = imp.mark.storeHWM(imp.hwm)
		}
		if err == nil {
			err = imp.pub.CommitBatch(bt)
		}
		// A claim whose record failed is not committed: it stays open
		// until the broken importer closes and pads it.
		pend := imp.hwm.Pend
		imp.hwm.Pend = 0
		if err == nil {
			if k > 0 {
				imp.hwm.Have = pend
			}
			imp.gap -= uint64(g)
		}
		imp.mu.Unlock()
		if err != nil {
			return 0, err
		}
		imp.claimed(bt.Position(), claimEnd, imp.sizes[done:done+k])
		gap -= uint64(g)
		done += k
		imp.p.msgs.Add(uint64(k))
	}
	if len(imp.ends) == 0 {
		return 0, nil // a gap alone
	}
	return int(imp.ends[len(imp.ends)-1] - have), nil
}

// ackRoom tells the origin of room the spool gained: at once while the
// origin has less than a quarter of the window left (it may be waiting
// for it), else once the room is a quarter of the window.
func (imp *importer) ackRoom() {
	imp.mu.Lock()
	s, grow := imp.sess, imp.windowLocked()-imp.told
	due := imp.open && s != nil && grow > 0 && (grow >= imp.room/4 || imp.recvd+imp.room/4 > imp.told)
	imp.mu.Unlock()
	if due {
		s.ack([]*importer{imp}) // a failed Send ends the session, which reports it
	}
}

// ackEntry is imp's progress for an Ack; false while its flow is not open.
func (imp *importer) ackEntry() (wire.AckEntry, bool) {
	imp.mu.Lock()
	defer imp.mu.Unlock()
	if !imp.open {
		return wire.AckEntry{}, false
	}
	return wire.AckEntry{Flow: imp.flow, Credit: imp.creditLocked(), Next: wire.Pos{Seq: imp.hwm.Seq, Units: imp.hwm.Units}, Window: imp.windowLocked()}, true
}

// tell is ackEntry for an Ack about to be sent: its Window is what the
// origin knows of the spool's room from then on.
func (imp *importer) tell() (wire.AckEntry, bool) {
	e, ok := imp.ackEntry()
	if ok {
		imp.mu.Lock()
		imp.told = max(imp.told, e.Window)
		imp.mu.Unlock()
	}
	return e, ok
}

// creditLocked is how many stream records the local readers of the queue
// can take now: none without readers (the mirror's own, which take for
// other hosts, do not count: records would bounce between hosts), fewer
// as records wait.
func (imp *importer) creditLocked() uint32 {
	if !imp.isStream() {
		return 0
	}
	readers := 0
	for _, mi := range imp.ring.Members() {
		if mi.State == channel.MemberActive && mi.Role == channel.RoleSubscriber && int(mi.Queue) == imp.key.Q &&
			!imp.p.m.exporting(imp.key, mi.Slot) {
			readers++
		}
	}
	if readers == 0 {
		return 0
	}
	c := uint64(imp.p.m.o.Credit)
	return uint32(c - min(c, imp.ring.QueueStats(imp.key.Q).Waiting))
}

func (imp *importer) close() {
	if imp.stop != nil {
		imp.stop()
		<-imp.done
	}
	if imp.sp != nil {
		imp.mu.Lock()
		if imp.hwm.spooled() == 0 {
			// Its pages go back to the tmpfs until the flow opens again.
			imp.sp.f.Truncate(0)
		}
		imp.mu.Unlock()
		imp.sp.close()
	}
	if imp.pub != nil {
		if imp.im != nil {
			imp.im.end(imp.pub.Slot(), imp.ring.QueueStats(imp.key.Q).Tail)
		}
		imp.pub.Close()
	}
	if imp.mark != nil {
		imp.mark.close()
	}
	imp.h.Close()
	imp.p.m.doneFiles(imp.p.cfg.ID(), imp.key)
}
