package channel

import (
	"context"
	"fmt"
)

// Batch is a run of frames that ClaimBatch reserved in one claim: fill
// each Buf(i), then publish them all with CommitBatch. A batch costs one
// claim, one wake-up check and one commit fence for all its messages,
// which is what makes small messages cheap; subscribers see all of them
// or none.
type Batch struct {
	p  *Publisher
	fp pos
	n  int
}

// Len returns the number of frames in the batch.
func (b Batch) Len() int { return b.n }

// Position returns where the batch's first frame (its gap frame, if any)
// lies: with the
// publisher's Slot, what Ring.ClaimOutcome asks about after a crash.
func (b Batch) Position() Position { return b.fp }

// End returns the position after the batch's last frame, where the next
// message starts: a reader that knows the batch (the mirror's exporter,
// of its own importer's) passes over the rest of it with one
// Subscriber.SkipTo. Valid until the publisher's next claim.
func (b Batch) End() Position { return b.p.run.end(b.p.r) }

// Buf returns frame i's payload, to be filled in place.
func (b Batch) Buf(i int) []byte {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("channel: frame %d of a %d-frame batch", i, b.n))
	}
	return b.p.buf(i)
}

// ClaimBatch reserves frames for the messages of sizes, in order, in one
// claim: as many as fit now (at least the first, for which it waits like
// Claim until ctx is done), up to the end of the ring and up to
// MaxMessage bytes of frames in all. Fill every frame, then CommitBatch;
// Len says how many were claimed, and the rest go in the next batch.
func (p *Publisher) ClaimBatch(ctx context.Context, sizes []int) (Batch, error) {
	return p.ClaimBatchLost(ctx, 0, sizes)
}

// ClaimBatchLost is ClaimBatch with a gap frame first: lost messages
// (below 2^31) that never reached this ring, which every subscriber that
// passes the frame counts in its Lost (section 5 of the ABI); the mirror's
// importer reports what the link lost this way. sizes may be empty. The
// gap frame goes in the batch's claim, so subscribers see it with the
// frames or not at all; when it does not fit with the first frame it
// goes alone, and Len is 0. A pubsub ring of ABI version 2 or later only
// (ErrConfig otherwise: a version 1 reader would take the frame for a
// corrupt ring).
func (p *Publisher) ClaimBatchLost(ctx context.Context, lost uint32, sizes []int) (Batch, error) {
	k, err := p.claimRun(ctx, sizes, lost, true)
	if err != nil {
		return Batch{}, err
	}
	p.batch = true
	return Batch{p: p, fp: p.run.fp, n: k}, nil
}

// TryClaimBatchLost is ClaimBatchLost without waiting: ErrWouldBlock
// when the first frame (or the gap frame) does not fit now.
func (p *Publisher) TryClaimBatchLost(lost uint32, sizes []int) (Batch, error) {
	k, err := p.claimRun(nil, sizes, lost, false)
	if err != nil {
		return Batch{}, err
	}
	p.batch = true
	return Batch{p: p, fp: p.run.fp, n: k}, nil
}

// CommitBatch publishes every frame of a batch from ClaimBatch.
func (p *Publisher) CommitBatch(b Batch) error {
	if !p.out || !p.batch || b.p != p || b.fp != p.run.fp || b.n != len(p.run.lens) {
		return fmt.Errorf("%w: commit without a matching batch", ErrConfig)
	}
	return p.commit()
}

// PublishBatch copies msgs into the ring, in order, in as few claims as
// they fit in, waiting for space like Publish. It returns how many
// messages were published: all of them, unless err is set.
func (p *Publisher) PublishBatch(ctx context.Context, msgs [][]byte) (int, error) {
	// A claim holds at most one largest frame's bytes, so at most that
	// many 16-byte frames: no need to size more messages than that.
	most := int(align16(FrameHeaderLen+uint64(p.r.cfg.MaxMessage)) / FrameAlign)
	done := 0
	for done < len(msgs) {
		p.sizes = p.sizes[:0]
		for _, m := range msgs[done:min(len(msgs), done+most)] {
			p.sizes = append(p.sizes, len(m))
		}
		k, err := p.claimRun(ctx, p.sizes, 0, true)
		if err != nil {
			return done, err
		}
		for i := 0; i < k; i++ {
			copy(p.buf(i), msgs[done+i])
		}
		if err := p.commit(); err != nil {
			return done, err
		}
		done += k
	}
	return done, nil
}
