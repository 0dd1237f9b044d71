package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/mirror/internal/wire"
	"github.com/shimmy-dev/shimmy/registry"
)

// errNoQueue: a stream queue index a pubsub channel does not have.
var errNoQueue = errors.New("mirror: the channel has no such queue")

// importer re-publishes one peer's messages of one channel (one stream
// queue) into the local ring. It outlives sessions: its publisher slot
// and high-water mark carry over to the next link.
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

	mu       sync.Mutex
	hwm      hwmRec
	sess     *session
	flow     uint32
	open     bool
	opened   chan struct{} // closed by onOpen
	mismatch bool          // the origin's channel does not fit ours
	broken   bool          // the publisher failed: open a new importer
	gaps     bool          // the ring takes gap frames (channel.Publisher.ClaimBatchLost)
	gap      uint64        // messages the link lost that no gap frame reports yet

	msgs  [][]byte
	seqs  []uint64
	sizes []int
	wake  exporterWake // pubsub: when to wake this host's exporters (quiet.go)
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
	imp := &importer{p: p, key: k, h: h, ring: h.Ring(), log: p.log.WithField("channel", k.String())}
	imp.cfg = imp.ring.Config()
	fail := func(err error) (*importer, error) {
		imp.close()
		return nil, err
	}
	if k.Q >= imp.ring.Queues() {
		return fail(errNoQueue)
	}
	if imp.pub, err = h.NewPublisher(channel.PublisherOptions{Queue: k.Q, Quiet: true}); err != nil {
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
	if rec.Pend != 0 {
		// A previous run died with a part of a batch in flight.
		rec = rec.reconcile(imp.ring, k.Q)
		if err := mk.storeHWM(rec); err != nil {
			return fail(err)
		}
	}
	imp.hwm = rec
	return imp, nil
}

// importsFor returns the import history of k's queue for ring's epoch.
func (m *Mirror) importsFor(k chanKey, ring *channel.Ring) (*imports, error) {
	m.imu.Lock()
	defer m.imu.Unlock()
	if im := m.imports[k]; im != nil && im.doc.Epoch == ring.Epoch() {
		return im, nil
	}
	im, err := m.state.loadImports(k, ring.Epoch(), ring.QueueStats(k.Q).Tail)
	if err != nil {
		return nil, err
	}
	m.imports[k] = im
	return im, nil
}

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
	return wire.Sub{
		Flow: imp.flow, Epoch: imp.hwm.Epoch, Next: wire.Pos{Seq: imp.hwm.Seq, Units: imp.hwm.Units},
		Queue: uint32(imp.key.Q), Credit: imp.creditLocked(), Namespace: imp.key.NS, Channel: imp.key.Ch,
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
		imp.hwm = hwmRec{markRec: markRec{Epoch: o.Epoch, Seq: o.Start.Seq, Units: o.Start.Units}}
	}
	if lost > 0 {
		imp.p.losses.Add(lost)
		imp.gap += lost
		imp.log.WithField("lost", lost).Warn("the peer no longer had messages after our high-water mark")
		// Into the ring now if there is room at once (the control loop
		// must not wait for it): the next batch carries it otherwise.
		now, cancel := context.WithCancel(context.Background())
		cancel()
		imp.msgs, imp.seqs, imp.sizes = imp.msgs[:0], imp.seqs[:0], imp.sizes[:0]
		if err := imp.publish(now, o.Start.Seq); err != nil && !errors.Is(err, context.Canceled) {
			imp.log.WithError(err).Warn("the link's losses wait for the next batch to reach the ring")
		}
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

// deliver publishes a batch's new messages into the local ring and then
// stores the high-water mark.
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
	if imp.mismatch {
		imp.p.losses.Add(uint64(bt.Count))
		return nil
	}
	next := imp.hwm.next()
	end := imp.hwm.Seq // the batch may not end before its last record
	imp.msgs, imp.seqs, imp.sizes = imp.msgs[:0], imp.seqs[:0], imp.sizes[:0]
	var bytes uint64
	err := bt.Records(imp.cfg.MaxMessage, func(seq uint64, b []byte) error {
		end = max(end, seq+1)
		if seq < next {
			return nil // had it: a batch sent again after a cut or a restart
		}
		imp.msgs, imp.seqs, imp.sizes = append(imp.msgs, b), append(imp.seqs, seq), append(imp.sizes, len(b))
		bytes += uint64(len(b))
		next = seq + 1
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if bt.Next.Seq < end {
		return fmt.Errorf("%w: batch resumes at %d, before its last record %d", ErrProtocol, bt.Next.Seq, end-1)
	}
	if bt.Lost > 0 {
		lost := imp.beyond(bt.Lost, bt.Next.Seq, len(imp.msgs))
		imp.p.losses.Add(lost)
		imp.gap += lost
	}
	if err := imp.publish(ctx, bt.Next.Seq); err != nil {
		imp.mark.storeHWM(imp.hwm) // what went in, for the next link
		if !errors.Is(err, context.Canceled) {
			imp.broken = true
		}
		return fmt.Errorf("mirror: import into %s: %w", imp.key, err)
	}
	imp.hwm.Seq, imp.hwm.Units = bt.Next.Seq, bt.Next.Units
	imp.p.bytes.Add(bytes)
	return imp.mark.storeHWM(imp.hwm)
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

// maxGap is the most lost messages one gap frame stands for.
const maxGap = 1<<31 - 1

// publish puts imp.gap (as gap frames first) and imp.msgs into the ring,
// one claim at a time, waiting for room like PublishBatch. Before each
// claim's commit it stores the claim with the sequence after its last
// record, or end after a gap alone (hwmRec.Pend): an agent that dies
// between the commit and the next store learns from the ring after its
// restart that those records, and the losses, are in. imp.hwm.Have
// follows what is in. A ring that takes no gap frames (a version 1 ring)
// has the losses in the link's count only.
func (imp *importer) publish(ctx context.Context, end uint64) error {
	if !imp.gaps {
		imp.gap = 0
	}
	for done := 0; done < len(imp.msgs) || imp.gap > 0; {
		g := uint32(min(imp.gap, maxGap))
		b, err := imp.pub.ClaimBatchLost(ctx, g, imp.sizes[done:])
		if err != nil {
			return err
		}
		k := b.Len()
		for i := range k {
			copy(b.Buf(i), imp.msgs[done+i])
		}
		pend := end
		switch {
		case k > 0:
			pend = imp.seqs[done+k-1] + 1
		case done < len(imp.msgs):
			pend = imp.seqs[done]
		}
		imp.hwm.Pend, imp.hwm.At, imp.hwm.Ring, imp.hwm.Slot = pend, b.Position(), imp.ring.Epoch(), imp.pub.Slot()
		claimEnd := b.End()
		err = imp.mark.storeHWM(imp.hwm)
		if err == nil {
			err = imp.pub.CommitBatch(b)
		}
		// A claim whose record failed is not committed: it stays open
		// until the broken importer closes and pads it.
		imp.hwm.Pend = 0
		if err != nil {
			return err
		}
		imp.hwm.Have = max(imp.hwm.Have, pend)
		if imp.im != nil {
			imp.im.claims.add(b.Position(), claimEnd)
		}
		imp.gap -= uint64(g)
		imp.wake.published(imp.pub, imp.sizes[done:done+k], imp.cfg.Capacity)
		done += k
		imp.p.msgs.Add(uint64(k))
	}
	return nil
}

// ackEntry is imp's progress for an Ack; false while its flow is not open.
func (imp *importer) ackEntry() (wire.AckEntry, bool) {
	imp.mu.Lock()
	defer imp.mu.Unlock()
	if !imp.open {
		return wire.AckEntry{}, false
	}
	return wire.AckEntry{Flow: imp.flow, Credit: imp.creditLocked(), Next: wire.Pos{Seq: imp.hwm.Seq, Units: imp.hwm.Units}}, true
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
}
