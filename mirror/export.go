package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/mirror/internal/wire"
	"github.com/shimmy-dev/shimmy/registry"
)

// batchTarget is the payload a batch gathers before it is sent (a batch
// also goes out as soon as the ring has nothing more).
const batchTarget = 64 << 10

// streamEpoch is the epoch of every stream flow: outbox ids do not start
// again when the ring is re-created.
const streamEpoch = 1

// exporter sends one channel (one stream queue) of this host to a peer,
// for one session.
type exporter struct {
	s    *session
	flow uint32
	key  chanKey
	log  logrus.FieldLogger
	h    *registry.Handle
	ring *channel.Ring
	cfg  channel.Config
	mark *mark // acknowledged position (pubsub) or id (stream)

	// pubsub
	rd    *registry.Subscriber
	hold  *registry.Subscriber // block: the peer's slot, at its acknowledged position
	im    *imports
	epoch uint64
	lost  uint64 // readerLost() reported so far
	// lapped: the host's own messages the reader lost (onLapped), written
	// by whichever goroutine reads rd (openPubSub, then runPubSub).
	lapped uint64

	// stream
	reader  *channel.Reader
	ob      *outbox
	settled bool // the take a previous run died in is settled

	mu       sync.Mutex
	ext      channel.Extended   // pubsub: reader's position; stream: next id sent
	sentNext channel.Extended   // Next of the last batch sent
	base     channel.Extended   // pubsub: ext where the reader's AppendBatch started
	inflight []channel.Extended // pubsub: Nexts of batches not acknowledged
	acked    channel.Extended
	credit   uint32
	ackc     chan struct{} // 1-buffered: an Ack arrived
	// The peer's spool: record bytes sent on the flow since the Open, and
	// the Window of its Acks (record bytes it may have been sent).
	sentRec, window uint64
}

type holdKey struct {
	peer string
	key  chanKey
}

// hold is a block peer's subscriber slot kept while its link is down.
type hold struct {
	sub   *registry.Subscriber
	h     *registry.Handle
	ext   channel.Extended
	epoch uint64
	timer *time.Timer
}

func (hd *hold) release() {
	hd.sub.Close()
	hd.h.Close()
}

func (m *Mirror) parkHold(k holdKey, hd *hold) {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	if old := m.holds[k]; old != nil {
		old.timer.Stop()
		old.release()
	}
	m.holds[k] = hd
	hd.timer = time.AfterFunc(m.o.Hold, func() {
		m.hmu.Lock()
		mine := m.holds[k] == hd
		if mine {
			delete(m.holds, k)
		}
		m.hmu.Unlock()
		if mine {
			m.log.WithFields(logrus.Fields{"peer": k.peer, "channel": k.key.String()}).
				Warn("peer away longer than the hold: its slot is released, and what it misses is counted as its loss")
			hd.release()
		}
	})
}

func (m *Mirror) takeHold(k holdKey, epoch uint64) *hold {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	hd := m.holds[k]
	if hd == nil {
		return nil
	}
	delete(m.holds, k)
	hd.timer.Stop()
	if hd.epoch != epoch {
		hd.release()
		return nil
	}
	return hd
}

// abandonHolds lets go of the peers' slots when the mirror stops without
// freeing them: they hold publishers for a lease more, time for a new
// agent to take them up again (restoreHolds).
func (m *Mirror) abandonHolds() {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	for k, hd := range m.holds {
		hd.timer.Stop()
		hd.sub.Abandon()
		hd.h.Close()
		delete(m.holds, k)
	}
}

// restoreHolds, for a new peer, puts a slot back at the position each
// block channel shared with it had acknowledged (the acked mark), before
// any link is up: after an agent restart within the channel's lease the
// old slot still held publishers, and the new one takes over.
func (m *Mirror) restoreHolds(p *peer) {
	for _, sh := range p.shares {
		k := chanKey{NS: sh[0], Ch: sh[1]}
		hk := holdKey{p.cfg.ID(), k}
		m.hmu.Lock()
		held := m.holds[hk] != nil
		m.hmu.Unlock()
		if held {
			continue
		}
		mk, rec, ok, err := openMark(m.state.path("acked", p.cfg.ID(), k))
		if err != nil {
			continue
		}
		mk.close()
		ch, err := m.o.Registry.Channel(k.NS, k.Ch)
		if !ok || err != nil {
			continue
		}
		h, err := ch.Open()
		if err != nil {
			continue
		}
		cfg := h.Ring().Config()
		if cfg.Type != channel.TypePubSub || cfg.Policy != channel.PolicyBlock || cfg.Epoch != rec.Epoch {
			h.Close()
			continue
		}
		ext := channel.Extended{Seq: rec.Seq, Units: rec.Units}
		sub, err := h.NewSubscriber(channel.SubscriberOptions{From: channel.StartAt, At: ext.Position()})
		if err != nil {
			h.Close()
			continue
		}
		m.parkHold(hk, &hold{sub: sub, h: h, ext: ext, epoch: rec.Epoch})
	}
}

// asExtended takes a ring position at face value: the base from which a
// new reader extends the positions it reads.
func asExtended(p channel.Position) channel.Extended {
	return channel.Extended{Seq: uint64(p.Seq()), Units: uint64(p.Units())}
}

// onSub answers a peer's Sub: Refuse, or Open and an exporter.
func (s *session) onSub(sub wire.Sub) error {
	k := chanKey{NS: sub.Namespace, Ch: sub.Channel, Q: int(sub.Queue)}
	refuse := func(code uint32, why string) error {
		s.p.log.WithFields(logrus.Fields{"channel": k.String(), "reason": why}).Info("flow refused")
		return s.conn.Send(s.ctx, wire.Refuse{Flow: sub.Flow, Code: code, Text: why}.Append(nil))
	}
	if registry.CheckName(k.NS) != nil || registry.CheckName(k.Ch) != nil || k.Q > 1 {
		return refuse(wire.RefuseNotShared, "not a channel name")
	}
	if !slices.Contains(s.p.getShares(), [2]string{k.NS, k.Ch}) {
		return refuse(wire.RefuseNotShared, "not shared with this peer")
	}
	s.fmu.Lock()
	dup := s.exports[sub.Flow] != nil
	for _, ex := range s.exports {
		dup = dup || ex.key == k
	}
	s.fmu.Unlock()
	if dup {
		return fmt.Errorf("%w: second sub for flow %d (%s)", ErrProtocol, sub.Flow, k)
	}
	ch, err := s.p.m.o.Registry.Channel(k.NS, k.Ch)
	if err != nil {
		return refuse(wire.RefuseNotFound, err.Error())
	}
	h, err := ch.Open()
	if err != nil {
		return refuse(wire.RefuseBroken, err.Error())
	}
	ex := &exporter{s: s, flow: sub.Flow, key: k, h: h, ring: h.Ring(), ackc: make(chan struct{}, 1),
		log: s.p.log.WithField("channel", k.String())}
	ex.cfg = ex.ring.Config()
	if k.Q >= ex.ring.Queues() {
		h.Close()
		return refuse(wire.RefuseMismatch, "no such queue")
	}
	if wire.DataFixedLen+batchTarget+wire.RecordSize(int(ex.cfg.MaxMessage)) > int(s.remote.Len/2) {
		h.Close()
		return refuse(wire.RefuseMismatch, "the channel's max message does not fit the peer's inbox")
	}
	s.p.m.useFiles(s.p.cfg.ID(), k)
	var open wire.Open
	if ex.cfg.Type == channel.TypeStream {
		open, err = ex.openStream(sub)
	} else {
		open, err = ex.openPubSub(sub)
	}
	if err != nil {
		ex.close()
		return refuse(wire.RefuseBroken, err.Error())
	}
	s.fmu.Lock()
	s.exports[sub.Flow] = ex
	s.fmu.Unlock()
	if err := s.conn.Send(s.ctx, open.Append(nil)); err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var err error
		if ex.reader != nil {
			err = ex.runStream()
		} else {
			err = ex.runPubSub()
		}
		if err != nil && s.ctx.Err() == nil {
			s.cancel(fmt.Errorf("export %s: %w", k, err))
		}
	}()
	return nil
}

// openPubSub places the reader (and the block slot) where the peer's
// high-water mark says: at the slot kept while the link was down, else
// at the acknowledged position this host stored, else at the mark itself,
// then skips to the mark's sequence. A fresh peer, or one that knew
// another epoch, starts at the oldest message the ring holds.
func (ex *exporter) openPubSub(sub wire.Sub) (wire.Open, error) {
	m := ex.s.p.m
	var err error
	if ex.im, err = m.importsFor(ex.key, ex.ring); err != nil {
		return wire.Open{}, err
	}
	mk, rec, ok, err := openMark(m.state.path("acked", ex.s.p.cfg.ID(), ex.key))
	if err != nil {
		return wire.Open{}, err
	}
	ex.mark = mk
	ex.epoch = ex.ring.Epoch()
	opts := channel.SubscriberOptions{From: channel.StartOldest, Lapped: ex.onLapped, DeafToQuiet: true}
	var base channel.Extended
	resume := sub.Epoch == ex.epoch
	if resume {
		opts.From = channel.StartAt
		hk := holdKey{ex.s.p.cfg.ID(), ex.key}
		switch hd := m.takeHold(hk, ex.epoch); {
		case hd != nil:
			ex.hold, base = hd.sub, hd.ext
			hd.h.Close() // ex.h holds the channel now
		case ok && rec.Epoch == ex.epoch && rec.Seq <= sub.Next.Seq:
			base = channel.Extended{Seq: rec.Seq, Units: rec.Units}
		default:
			base = channel.Extended{Seq: sub.Next.Seq, Units: sub.Next.Units}
		}
		opts.At = base.Position()
		if ex.hold != nil {
			opts.At = ex.hold.Position()
		}
	}
	if ex.rd, err = ex.h.NewSubscriber(opts); err != nil {
		return wire.Open{}, err
	}
	if ex.hold == nil && ex.cfg.Policy == channel.PolicyBlock {
		opts.Lapped = nil // the reader counts the losses
		if ex.hold, err = ex.h.NewSubscriber(opts); err != nil {
			return wire.Open{}, err
		}
	}
	if !resume {
		base = asExtended(ex.rd.Position())
	}
	ex.ext = ex.rd.Position().Extend(base)
	// Skip what the peer has (it stored its mark after publishing them),
	// and no further: a message past its mark is the peer's to get.
	for resume && ex.ext.Seq < sub.Next.Seq {
		next := sub.Next.Seq
		skipped, err := ex.rd.SkipIf(func(_ uint32, after channel.Position) bool {
			return after.Extend(ex.ext).Seq <= next
		})
		ex.ext = ex.rd.Position().Extend(ex.ext)
		if err != nil || !skipped {
			break
		}
	}
	ex.lost = ex.readerLost()
	ex.acked, ex.sentNext = ex.ext, ex.ext
	ex.window = uint64(sub.Window)
	ex.advanceHold(ex.ext.Position())
	if err := ex.mark.store(markRec{ex.epoch, ex.ext.Seq, ex.ext.Units}); err != nil {
		return wire.Open{}, err
	}
	return wire.Open{
		Flow: ex.flow, Epoch: ex.epoch, Start: wire.Pos{Seq: ex.ext.Seq, Units: ex.ext.Units},
		Type: uint32(ex.cfg.Type), Policy: uint32(ex.cfg.Policy), Lost: ex.peerLost(sub), MaxMessage: ex.cfg.MaxMessage,
	}, nil
}

// peerLost is how many messages the peer of sub misses where the reader
// starts: those the ring no longer held from its mark on. The reader
// may have started behind the mark (at the acknowledged position, when
// the Acks of the last batches went down with the link), and what it
// lost before the mark the peer has.
func (ex *exporter) peerLost(sub wire.Sub) uint64 {
	if sub.Epoch != ex.epoch {
		return ex.lost
	}
	return min(ex.lost, ex.ext.Seq-min(ex.ext.Seq, sub.Next.Seq))
}

// readerLost is what the reader lost of this host's own messages:
// publishers lapped it over them. The imports it skipped meanwhile, and
// the gap frames it passed (Subscriber.Gaps: losses of this host's
// links), the peer gets from their origins or learns of on its own links.
func (ex *exporter) readerLost() uint64 { return ex.lapped }

// onLapped counts the host's own messages among those a lapped reader
// skipped.
func (ex *exporter) onLapped(from, to channel.Position) { ex.lapped += ex.im.claims.own(from, to) }

// advanceHold moves the block slot to p (a position the reader passed)
// and stores it for publishers.
func (ex *exporter) advanceHold(p channel.Position) {
	if ex.hold == nil {
		return
	}
	if err := ex.hold.SkipTo(p); err != nil {
		ex.log.WithError(err).Warn("the peer's slot in the ring failed: publishers are no longer held for it")
	}
}

func (ex *exporter) runPubSub() error {
	ctx := ex.s.ctx
	most := wire.DataFixedLen + batchTarget + wire.RecordSize(int(ex.cfg.MaxMessage))
	var zero [wire.DataFixedLen]byte
	opts := channel.AppendOptions{Skip: ex.im.is, Put: ex.putRecord}
	for ctx.Err() == nil {
		// The batch is built where it is sent from: in the session's send
		// region, holding its turn (and never waiting meanwhile).
		buf, err := ex.s.reserve(most)
		if err != nil {
			return err
		}
		buf = append(buf, zero[:wire.DataFixedLen]...)
		count, bytes := 0, 0
		ex.mu.Lock()
		ext, room := ex.ext, ex.roomLocked()
		ex.mu.Unlock()
		// One look at each frame: what our importer wrote is passed over
		// uncopied (its origin sends it), the rest appended as records.
		opts.Limit = batchTarget
		if room < uint64(batchTarget) {
			opts.Limit = min(batchTarget, wire.DataFixedLen+int(room))
		}
		starved := false // a message waits for room in the peer's spool
		for {
			ex.base = ext
			var got channel.Appended
			buf, got, err = ex.rd.AppendBatch(buf, opts)
			count += got.Msgs
			bytes += got.Bytes
			if err != nil {
				ex.s.unreserve()
				return err
			}
			ext = ex.rd.Position().Extend(ext)
			if got.End != channel.AppendSkipped {
				starved = got.End == channel.AppendFull && uint64(len(buf)-wire.DataFixedLen) >= room
				break
			}
			if end, ok := ex.im.claims.endOf(ex.rd.Position()); ok {
				// The rest of that claim is imports too. A failed
				// SkipTo leaves the cursor: they are passed over one
				// by one, and a reader evicted meanwhile fails next.
				_ = ex.rd.SkipTo(end)
				ext = ex.rd.Position().Extend(ext)
			}
		}
		// A lapped reader resyncs wherever it looks (even when it then
		// finds no message, or the batch stops for the peer's room): the
		// loss it counted goes with the position after it, never before
		// (the peer counts only what lies beyond what it has).
		ext = ex.rd.Position().Extend(ext)
		lost := ex.readerLost() - ex.lost
		ex.mu.Lock()
		ex.ext = ext
		idle := count == 0 && lost == 0 && ext == ex.sentNext
		ex.mu.Unlock()
		if idle {
			ex.s.unreserve()
			if starved {
				// Wait for the peer's Ack of room in its spool, holding
				// no room the reader passed.
				ex.rd.Flush()
				select {
				case <-ctx.Done():
				case <-ex.ackc:
				}
				continue
			}
			if err := ex.rd.Wait(ctx); err != nil && ctx.Err() == nil {
				return err
			}
			continue
		}
		// Starved, the position past imports goes at once: the peer's
		// slot in this ring may move there, making room for its import.
		if count == 0 && lost == 0 && !starved && !ex.skipDue(ext) {
			ex.s.unreserve()
			// Only imports passed over: the peer needs the position (its
			// high-water mark; in a block ring, where its slot may move
			// to), not a batch, and an acknowledgement back, for every
			// message it sent here. It gets it after a quarter of the
			// ring, or once no message came for skipDelay.
			wctx, cancel := context.WithTimeout(ctx, skipDelay)
			err := ex.rd.Wait(wctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				continue
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			// The position alone, in a batch of no records.
			if buf, err = ex.s.reserve(wire.DataFixedLen); err != nil {
				return err
			}
			buf = append(buf, zero[:wire.DataFixedLen]...)
		}
		wire.PutDataHeader(buf, ex.flow, uint32(len(buf)), wire.Pos{Seq: ext.Seq, Units: ext.Units}, lost, uint32(count))
		// In flight before it is sent: its Ack may come back before send
		// returns.
		ex.mu.Lock()
		ex.inflight = append(ex.inflight, ext)
		ex.sentNext = ext
		ex.lost += lost
		ex.sentRec += uint64(len(buf) - wire.DataFixedLen)
		ex.mu.Unlock()
		if err := ex.s.commit(buf); err != nil {
			return err
		}
		ex.s.p.msgs.Add(uint64(count))
		ex.s.p.bytes.Add(uint64(bytes))
	}
	return nil
}

// putRecord appends the message msg, at position at of the ring, to the
// batch b as a record; ex.base is the extended position the batch's read
// started from.
func (ex *exporter) putRecord(b, msg []byte, at channel.Position) []byte {
	off, n := len(b), len(msg)
	b = slices.Grow(b, wire.RecordSize(n))[:off+wire.RecordSize(n)]
	copy(wire.PutRecord(b[off:], at.Extend(ex.base).Seq, n), msg)
	return b
}

// skipDelay is how long an exporter that only passed over imports waits
// for a message of its own before it sends the position alone.
const skipDelay = 2 * time.Millisecond

// skipDue reports whether the position ext, reached by passing over
// imports only, is a quarter of the ring past the last one sent: the
// peer must learn it now, so that a block ring's space comes back.
func (ex *exporter) skipDue(ext channel.Extended) bool {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return (ext.Units-ex.sentNext.Units)*channel.FrameAlign >= ex.cfg.Capacity/4
}

// onAck takes the peer's acknowledgement of the flow: for pubsub it must
// name the end of a batch in flight; the peer's slot moves there.
func (ex *exporter) onAck(e wire.AckEntry) error {
	if ex.reader != nil {
		return ex.onStreamAck(e)
	}
	ext := channel.Extended{Seq: e.Next.Seq, Units: e.Next.Units}
	ex.mu.Lock()
	ex.window = max(ex.window, e.Window)
	select { // runPubSub may wait for the window
	case ex.ackc <- struct{}{}:
	default:
	}
	i := slices.Index(ex.inflight, ext)
	if i < 0 {
		acked := ex.acked
		ex.mu.Unlock()
		if ext == acked {
			return nil
		}
		return fmt.Errorf("%w: flow %d acknowledged %v, which ends no batch in flight", ErrProtocol, ex.flow, ext)
	}
	ex.inflight = append(ex.inflight[:0], ex.inflight[i+1:]...)
	ex.acked = ext
	ex.mu.Unlock()
	ex.advanceHold(ext.Position())
	return ex.mark.store(markRec{ex.epoch, ext.Seq, ext.Units})
}

// roomLocked is the record bytes the peer's spool takes now: a batch
// starts a record only below it.
func (ex *exporter) roomLocked() uint64 { return ex.window - min(ex.window, ex.sentRec) }

func (ex *exporter) lag() uint64 {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.sentNext.Seq - ex.acked.Seq
}

// close ends the flow once its goroutine and the session's control loop
// are done with it; a block slot is kept for Hold while the plan still
// shares the channel with the peer.
func (ex *exporter) close() {
	defer ex.s.p.m.doneFiles(ex.s.p.cfg.ID(), ex.key)
	if ex.rd != nil {
		ex.rd.Close()
	}
	if ex.reader != nil {
		ex.s.p.m.setExporting(ex.key, ex.reader.Slot(), false)
		ex.reader.Close()
	}
	if ex.mark != nil {
		ex.mark.close()
	}
	if ex.hold != nil {
		ex.mu.Lock()
		acked := ex.acked
		ex.mu.Unlock()
		ex.s.p.m.parkHold(holdKey{ex.s.p.cfg.ID(), ex.key}, &hold{sub: ex.hold, h: ex.h, ext: acked, epoch: ex.epoch})
		ex.s.p.m.releaseUnshared()
		return
	}
	ex.h.Close()
}
