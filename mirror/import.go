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
	if imp.cfg.Type == channel.TypePubSub {
		if imp.im, err = m.importsFor(k.NS, k.Ch, imp.ring); err != nil {
			return fail(err)
		}
		if err := imp.im.add(imp.pub.Slot(), imp.ring.QueueStats(0).Tail); err != nil {
			return fail(err)
		}
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

// importsFor returns the import history of ns/ch for ring's epoch.
func (m *Mirror) importsFor(ns, ch string, ring *channel.Ring) (*imports, error) {
	m.imu.Lock()
	defer m.imu.Unlock()
	k := [2]string{ns, ch}
	if im := m.imports[k]; im != nil && im.doc.Epoch == ring.Epoch() {
		return im, nil
	}
	im, err := m.state.loadImports(ns, ch, ring.Epoch(), ring.QueueStats(0).Tail)
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
	switch {
	case o.Epoch != imp.hwm.Epoch:
		imp.hwm = hwmRec{markRec: markRec{Epoch: o.Epoch, Seq: o.Start.Seq, Units: o.Start.Units}}
	case o.Start.Seq > imp.hwm.Seq:
		imp.hwm.Seq, imp.hwm.Units = o.Start.Seq, o.Start.Units
	}
	if err := imp.mark.storeHWM(imp.hwm); err != nil {
		return err
	}
	if o.Lost > 0 {
		imp.p.losses.Add(o.Lost)
		imp.log.WithField("lost", o.Lost).Warn("the peer no longer had messages after our high-water mark")
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
	if err := imp.publish(ctx); err != nil {
		imp.mark.storeHWM(imp.hwm) // what went in, for the next link
		if !errors.Is(err, context.Canceled) {
			imp.broken = true
		}
		return fmt.Errorf("mirror: import into %s: %w", imp.key, err)
	}
	imp.hwm.Seq, imp.hwm.Units = bt.Next.Seq, bt.Next.Units
	imp.p.bytes.Add(bytes)
	if bt.Lost > 0 {
		imp.p.losses.Add(bt.Lost)
	}
	return imp.mark.storeHWM(imp.hwm)
}

// publish puts imp.msgs into the ring, one claim at a time, waiting for
// room like PublishBatch. Before each claim's commit it stores the claim
// with the sequence after its last record (hwmRec.Pend): an agent that
// dies between the commit and the next store learns from the ring after
// its restart that those records are in. imp.hwm.Have follows what is in.
func (imp *importer) publish(ctx context.Context) error {
	for done := 0; done < len(imp.msgs); {
		b, err := imp.pub.ClaimBatch(ctx, imp.sizes[done:])
		if err != nil {
			return err
		}
		k := b.Len()
		for i := range k {
			copy(b.Buf(i), imp.msgs[done+i])
		}
		imp.hwm.Pend, imp.hwm.At, imp.hwm.Ring, imp.hwm.Slot = imp.seqs[done+k-1]+1, b.Position(), imp.ring.Epoch(), imp.pub.Slot()
		end := b.End()
		err = imp.mark.storeHWM(imp.hwm)
		if err == nil {
			err = imp.pub.CommitBatch(b)
		}
		// A claim whose record failed is not committed: it stays open
		// until the broken importer closes and pads it.
		pend := imp.hwm.Pend
		imp.hwm.Pend = 0
		if err != nil {
			return err
		}
		imp.hwm.Have = pend
		if imp.im != nil {
			imp.im.claims.add(b.Position(), end)
		}
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
			imp.im.end(imp.pub.Slot(), imp.ring.QueueStats(0).Tail)
		}
		imp.pub.Close()
	}
	if imp.mark != nil {
		imp.mark.close()
	}
	imp.h.Close()
}
