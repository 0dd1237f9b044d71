package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fuzzers of a ring shared with a hostile peer: FuzzHostilePeer writes any
// field while an honest client opens, reads, publishes and reaps, and
// FuzzRogueMembers has members that follow the protocol's letter but die,
// stall and leave stale state, beside honest members whose guarantees
// must hold.

// peerSizes are the geometries FuzzHostilePeer picks from: small rings
// wrap often; big ones have the most member slots and MiB capacities.
var peerSizes = []Config{
	{Capacity: MinCapacity, MaxMessage: 1000, MemberSlots: 8},
	{Capacity: 64 << 10, MaxMessage: 4000, MemberSlots: 64},
	{Capacity: 1 << 20, MemberSlots: MaxMembers},
	{Capacity: 4 << 20, MemberSlots: MaxMembers},
}

// peerMapLen fits the largest geometry.
const peerMapLen = HeaderLen + MaxMembers*MemberSlotLen + 2*(4<<20)

// peerOp is one write of the hostile peer, decoded from 10 input bytes:
// [0] what (low 2 bits: descriptor, queue header, member table, data; bit
// 2: add to the field instead of storing; bit 3: put the old value back
// right after, a flip), [1] which word, [2:10] the value.
type peerOp struct {
	what, which uint8
	v           uint64
}

func peerOps(b []byte) []peerOp {
	var ops []peerOp
	for ; len(b) >= 10 && len(ops) < 64; b = b[10:] {
		ops = append(ops, peerOp{b[0], b[1], binary.LittleEndian.Uint64(b[2:])})
	}
	return ops
}

// word returns the u64 the op hits in a ring of geometry cfg mapped at mem.
func (o peerOp) word(mem []byte, cfg Config) *uint64 {
	var off uint64
	switch o.what & 3 {
	case 0: // descriptor, including the reserved words and the agent line
		off = uint64(o.which) % 24 * 8
	case 1: // the queue headers: counters, futex words, index
		off = OffQueues + uint64(o.which)%(2*QueueHeaderLen/8)*8
	case 2: // member slots, spread over the whole table
		off = HeaderLen + uint64(o.which)*uint64(cfg.MemberSlots)/256*MemberSlotLen + uint64(o.which)%8*8
	default: // frames near where the data regions start and end
		data := HeaderLen + membersLen(cfg.MemberSlots)
		off = data + uint64(o.which)%64*16
		if o.which >= 128 {
			off = data + cfg.queues()*cfg.Capacity - 1024 + uint64(o.which)%64*16
		}
	}
	return (*uint64)(unsafePointer(&mem[off]))
}

// FuzzHostilePeer runs a peer that keeps rewriting descriptor, queue,
// member and frame words (storing, adding, or flipping a word and putting
// it back) while an honest client opens the ring again and again, joins,
// publishes (blocking and not, one frame and batches), reads, closes with
// claims outstanding, reaps and checks. Whatever the peer writes, the
// client must not panic or hang, must see only documented errors, never a
// message longer than MaxMessage, and Check must report ErrCorrupt or nil.
func FuzzHostilePeer(f *testing.F) {
	op := func(what, which uint8, v uint64) []byte {
		b := []byte{what, which, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint64(b[2:], v)
		return b
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	for size := uint8(0); size < 4; size++ {
		f.Add(size<<2, []byte{})
		f.Add(size<<2|2, cat(op(8, OffDataOffset/8, 4096), op(8, OffFileSize/8, 1<<40)))
		f.Add(size<<2|1, cat(op(1, 0, 1<<32), op(5, 16, 1<<31), op(9, 8, 3)))
		f.Add(size<<2, cat(op(2, 1, uint64(RolePublisher)<<32|uint64(MemberActive)), op(2, 2, 1), op(2, 5, 1<<20), op(6, 4, 7)))
		f.Add(size<<2|3, cat(op(3, 0, 0x40001000_00001000), op(11, 200, 0xffffffff_ffffffff), op(1, 72, 9)))
		// The Reserve word (+964, the high half of the word at +960):
		// garbage, the first slot (an honest member's), and a publisher
		// slot of the peer's.
		f.Add(size<<2, cat(op(1, QOffExclusive/8, 0xdeadbeef<<32)))
		f.Add(size<<2, cat(op(1, QOffExclusive/8, 1<<32)))
		f.Add(size<<2, cat(op(2, 1, uint64(RolePublisher)<<32|uint64(MemberActive)), op(2, 2, 1), op(1, QOffExclusive/8, 2<<32)))
	}
	f.Fuzz(func(t *testing.T, mode uint8, script []byte) {
		fuzzWatchdog(t, "FuzzHostilePeer")
		cfg := peerSizes[mode>>2&3]
		cfg.Lease, cfg.Epoch = MinLease, 1
		switch mode & 3 {
		case 1:
			cfg.Policy = PolicyOverwrite
		case 2, 3:
			cfg.Type = TypeStream
		}
		cfg = cfg.WithDefaults()
		mem, err := unix.Mmap(-1, 0, peerMapLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(mem) })
		r, err := Format(mem[:cfg.Size()], cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		ops := peerOps(script)
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the hostile peer
			defer wg.Done()
			for len(ops) > 0 && !stop.Load() {
				for _, o := range ops {
					w := o.word(mem, cfg)
					old := atomic.LoadUint64(w)
					v := o.v
					if o.what&4 != 0 {
						v += old
					}
					atomic.StoreUint64(w, v)
					if o.what&8 != 0 {
						runtime.Gosched()
						atomic.StoreUint64(w, old)
					}
				}
				runtime.Gosched()
			}
		}()
		defer func() { stop.Store(true); wg.Wait() }()
		peerHonest(t, r, mem)
	})
}

// peerErrOK reports whether err is one an honest client may see on a ring a
// peer corrupts, or from its own short deadlines.
func peerErrOK(err error) bool {
	return fuzzErrOK(err) || errors.Is(err, ErrNoSlot) || errors.Is(err, ErrExclusive) ||
		errors.Is(err, ErrClosed) || errors.Is(err, context.DeadlineExceeded)
}

// peerSleepy waits on the futex words soon: the first publisher and
// reader of FuzzHostilePeer use it, in a few of their blocking calls (each
// may sleep its whole safety timeout, since no one else publishes); the others
// poll (IdleBusy), which sees their short deadlines at once.
var peerSleepy = Idle{Spins: 50, Yields: 5}

// peerIdle returns the idle strategy of the i-th member of a kind, and
// whether a blocking call may be made for it at step.
func peerIdle(i, step int) (Idle, bool) {
	if i == 0 {
		return peerSleepy, step%25 == 3 || step%25 == 7
	}
	return IdleBusy, step%4 == 1
}

// peerHonest is the honest client of FuzzHostilePeer.
func peerHonest(t *testing.T, r *Ring, mem []byte) {
	max := r.Config().MaxMessage
	must := func(what string, err error) {
		if err != nil && !peerErrOK(err) {
			t.Fatalf("%s: undocumented error %v", what, err)
		}
	}
	msgOK := func(what string, msg []byte, err error) {
		must(what, err)
		if err == nil && uint64(len(msg)) > uint64(max) {
			t.Fatalf("%s: %d-byte message, max %d", what, len(msg), max)
		}
	}
	wait := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), time.Millisecond)
	}
	var next []func([]byte) ([]byte, error)
	var blocking []func(context.Context, []byte) ([]byte, error)
	var pubs []*Publisher
	var buf []byte
	for step := 0; step < 50; step++ {
		// Open again: each field loaded once, so whatever Open accepts fits.
		if o, err := Open(mem[:len(r.Bytes())]); err == nil {
			if c := o.Config(); c.Validate() != nil || c.Size() > int64(len(r.Bytes())) {
				t.Fatalf("step %d: Open accepted %+v", step, c)
			}
			o.Close()
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrVersion) {
			t.Fatalf("step %d: Open: undocumented error %v", step, err)
		}
		switch step % 10 {
		case 0: // join
			idle, _ := peerIdle(len(pubs), 0)
			if p, err := r.NewPublisher(PublisherOptions{Idle: idle, Exclusive: step%20 == 10}); err == nil {
				pubs = append(pubs, p)
			} else {
				must("publisher", err)
			}
			idle, _ = peerIdle(len(next), 0)
			if r.Config().Type == TypeStream {
				rd, err := r.NewReader(ReaderOptions{Queue: step / 10 % 2, Idle: idle})
				if must("reader", err); err == nil {
					next, blocking = append(next, rd.TryNext), append(blocking, rd.Next)
				}
			} else {
				s, err := r.NewSubscriber(SubscriberOptions{From: Start(step / 10 % 2), Idle: idle})
				if must("subscriber", err); err == nil {
					try := s.TryNext
					if len(next)%2 == 1 { // the mirror exporter's read
						try = peerBatch(t, s, max)
					}
					next, blocking = append(next, try), append(blocking, s.Next)
				}
			}
		case 5: // reap and check
			r.Reap()
			if err := r.Check(); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("step %d: Check: %v", step, err)
			}
			for _, m := range r.Members() {
				if m.Slot >= r.Config().MemberSlots {
					t.Fatalf("member slot %d of %d", m.Slot, r.Config().MemberSlots)
				}
			}
			for q := 0; q < r.Queues(); q++ {
				_ = r.QueueStats(q)
			}
		case 9: // leave with a claim outstanding
			if len(pubs) > 0 {
				p := pubs[0]
				pubs = pubs[1:]
				ctx, cancel := wait()
				_, err := p.Claim(ctx, step%int(max+1))
				must("claim before close", err)
				cancel()
				p.Close()
			}
		}
		for i, p := range pubs {
			msg := fuzzPayload(step+i, max)
			_, block := peerIdle(i, step)
			switch {
			case !block:
				must("publish", p.TryPublish(msg))
			case (step+i)%3 == 0:
				ctx, cancel := wait()
				_, err := p.PublishBatch(ctx, [][]byte{msg, msg[:len(msg)/2], nil})
				must("batch", err)
				cancel()
			case (step+i)%7 == 5 && r.Config().Type == TypePubSub:
				ctx, cancel := wait()
				b, err := p.ClaimBatchLost(ctx, uint32(step+1), []int{len(msg)})
				if must("gap claim", err); err == nil {
					must("gap commit", p.CommitBatch(b))
				}
				cancel()
			default:
				ctx, cancel := wait()
				must("blocking publish", p.Publish(ctx, msg))
				cancel()
			}
		}
		for i, nx := range next {
			if _, block := peerIdle(i, step); !block {
				msg, err := nx(buf)
				msgOK(fmt.Sprintf("read %d", i), msg, err)
			} else {
				ctx, cancel := wait()
				msg, err := blocking[i](ctx, buf)
				msgOK(fmt.Sprintf("blocking read %d", i), msg, err)
				cancel()
			}
		}
	}
}

// peerBatch reads s as the mirror's exporter does (AppendBatch, passing
// over one publisher's messages): no message Put gets is longer than max.
func peerBatch(t *testing.T, s *Subscriber, max uint32) func([]byte) ([]byte, error) {
	o := AppendOptions{
		Limit: 4 << 10,
		Skip:  func(slot uint32, _ Position) bool { return slot%2 == 1 },
		Put: func(buf, msg []byte, _ Position) []byte {
			if uint64(len(msg)) > uint64(max) {
				t.Fatalf("AppendBatch: %d-byte message, max %d", len(msg), max)
			}
			return append(buf, msg...)
		},
	}
	return func(buf []byte) ([]byte, error) {
		_, _, err := s.AppendBatch(buf[:0], o)
		return nil, err
	}
}

// rogueLease is the lease of FuzzRogueMembers: rogue members stall past it
// in real time, honest ones must never miss it, even with the race
// detector on a 2-vCPU machine running other test packages beside (at
// 100 ms an honest reader missed it once there).
const rogueLease = 250 * time.Millisecond

// rogueMsgs is how many messages each honest publisher of FuzzRogueMembers
// publishes; publisher 0 then publishes one more, the end marker.
const rogueMsgs = 150

// roguePub is the publisher id of the rogue members' messages.
const roguePub = 2

// rogueMsg is message seq of publisher pub in FuzzRogueMembers: at least 16
// bytes, so that it carries its publisher, sequence and checksum.
func rogueMsg(pub, seq int, max uint32) []byte {
	return encodeMsg(make([]byte, max), pub, seq, 16+int(mix(uint64(pub)<<32^uint64(seq))%uint64(max-15)))
}

// rogueDecode checks msg against rogueMsg and returns its publisher and seq.
func rogueDecode(msg []byte, max uint32) (pub, seq int, err error) {
	if len(msg) < 16 {
		return 0, 0, fmt.Errorf("%d-byte message %x", len(msg), msg)
	}
	pub, seq = int(msg[0]), int(binary.LittleEndian.Uint32(msg[1:]))
	if pub > roguePub || seq > 1<<20 || !bytes.Equal(msg, rogueMsg(pub, seq, max)) {
		return 0, 0, fmt.Errorf("publisher %d seq %d: %d bytes %x... are not what was published", pub, seq, len(msg), head(msg))
	}
	return pub, seq, nil
}

// FuzzRogueMembers runs honest publishers and readers beside rogue members
// that follow the protocol's letter but die holding claims, stall past
// their lease and come back, abandon claims, die as subscribers or while
// joining, leave leases in the future and reap. The honest members'
// guarantees must hold: every reader gets every honest message (pubsub:
// each subscriber all of them, in order per publisher, nothing lost;
// stream: each exactly once across the readers), bytes intact, and
// exactly the rogue messages whose Commit or Publish succeeded.
func FuzzRogueMembers(f *testing.F) {
	f.Add(uint8(0), []byte{0, 1, 10, 19, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(1), []byte{0, 1, 10, 2, 5, 6, 7, 8})
	f.Add(uint8(2), []byte{3, 5, 0, 28, 4, 13})
	f.Add(uint8(3), []byte{0, 0, 9, 9, 8, 17})
	f.Fuzz(func(t *testing.T, mode uint8, actions []byte) {
		fuzzWatchdog(t, "FuzzRogueMembers")
		cfg := Config{Capacity: MinCapacity, MaxMessage: 1000, MemberSlots: 32, Lease: rogueLease}
		if mode&2 != 0 {
			cfg.Capacity, cfg.MaxMessage = 64<<10, 4000
		}
		if mode&1 != 0 {
			cfg.Type = TypeStream
		}
		r := newRing(t, cfg)
		max := r.Config().MaxMessage
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		readers := rogueReaders(t, r)
		var wg sync.WaitGroup
		for pub := 0; pub < 2; pub++ {
			p := mustPub(t, r)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := 0; seq < rogueMsgs; seq++ {
					if err := p.Publish(ctx, rogueMsg(pub, seq, max)); err != nil {
						t.Errorf("honest publisher %d, message %d: %v", pub, seq, err)
						return
					}
				}
			}()
		}
		committed := rogueAct(t, r, actions[:min(len(actions), 8)])
		wg.Wait()
		if t.Failed() {
			return
		}
		marker := mustPub(t, r)
		if err := marker.Publish(ctx, rogueMsg(0, rogueMsgs, max)); err != nil {
			t.Fatalf("end marker: %v", err)
		}
		got := readers.wait(t, r)
		want := map[[2]int]int{}
		for pub := 0; pub < 2; pub++ {
			for seq := 0; seq < rogueMsgs; seq++ {
				want[[2]int{pub, seq}] = 1
			}
		}
		want[[2]int{0, rogueMsgs}] = 1
		for seq := range committed {
			want[[2]int{roguePub, seq}] = 1
		}
		for i, g := range got {
			for k, n := range want {
				if g[k] != n {
					t.Errorf("reader %d got publisher %d seq %d %d times, want %d", i, k[0], k[1], g[k], n)
				}
			}
			for k, n := range g {
				if want[k] == 0 {
					t.Errorf("reader %d got publisher %d seq %d %d times, never committed", i, k[0], k[1], n)
				}
			}
		}
	})
}

// rogueAct runs the rogue members' actions and returns the seqs of the
// rogue messages whose Commit or Publish succeeded.
func rogueAct(t *testing.T, r *Ring, actions []byte) map[int]bool {
	max := r.Config().MaxMessage
	committed := map[int]bool{}
	seq := 0
	ctx := context.Background()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*rogueLease) }
	join := func() *Publisher {
		p, err := r.NewPublisher(PublisherOptions{})
		if err != nil {
			t.Fatalf("rogue publisher: %v", err)
		}
		return p
	}
	claim := func(p *Publisher) (Claim, bool) {
		c, cancel := short()
		defer cancel()
		cl, err := p.Claim(c, len(rogueMsg(roguePub, seq, max)))
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("rogue claim: %v", err)
		}
		return cl, err == nil
	}
	freeSlot := func() *memberSlot {
		for i := r.Config().MemberSlots; i > 0; i-- {
			if s := r.slot(i - 1); atomic.CompareAndSwapUint32(&s.State, MemberFree, MemberInit) {
				return s
			}
		}
		return nil
	}
	for _, a := range actions {
		stall := rogueLease * time.Duration(1+a/9%3) / 2 // half a lease to one and a half
		seq++
		switch a % 9 {
		case 0: // dies holding a claim
			p := join()
			claim(p)
			r.untrack(p.m)
		case 1: // stalls holding a claim, comes back and commits
			p := join()
			if c, ok := claim(p); ok {
				copy(c.Buf, rogueMsg(roguePub, seq, max))
				r.untrack(p.m)
				time.Sleep(stall)
				r.track(p.m)
				if err := p.Commit(c); err == nil {
					committed[seq] = true
				} else if !errors.Is(err, ErrEvicted) {
					t.Errorf("late commit: %v", err)
				}
			}
			p.Close()
		case 2: // abandons a claim
			p := join()
			claim(p)
			p.Close()
		case 3: // a subscriber (stream: reader) that dies
			if r.Config().Type == TypeStream {
				rd, err := r.NewReader(ReaderOptions{})
				if err == nil {
					r.untrack(rd.m)
				}
			} else if s, err := r.NewSubscriber(SubscriberOptions{}); err == nil {
				r.untrack(s.m)
			}
		case 4: // a subscriber that stalls holding a message (pubsub)
			if r.Config().Type == TypeStream {
				continue
			}
			s, err := r.NewSubscriber(SubscriberOptions{})
			if err != nil {
				continue
			}
			c, cancel := short()
			if _, err := s.Peek(c); err == nil {
				r.untrack(s.m)
				time.Sleep(stall)
				r.track(s.m)
				_ = s.Valid()
			}
			cancel()
			s.Close()
		case 5: // a subscriber slot whose lease lies an hour ahead
			if s := freeSlot(); s != nil {
				atomic.StoreUint32(&s.Role, RoleSubscriber)
				atomic.StoreUint64(&s.Cursor, atomic.LoadUint64(&r.queues[0].Tail))
				atomic.StoreUint64(&s.Lease, uint64(monotonic())+uint64(time.Hour))
				atomic.StoreUint32(&s.State, MemberActive)
			}
		case 6: // a joiner that dies before its first lease
			if s := freeSlot(); s != nil {
				atomic.StoreUint64(&s.Lease, 0)
			}
		case 7:
			r.Reap()
		case 8: // publishes, as anyone does
			p := join()
			c, cancel := short()
			if err := p.Publish(c, rogueMsg(roguePub, seq, max)); err == nil {
				committed[seq] = true
			} else if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("rogue publish: %v", err)
			}
			cancel()
			p.Close()
		}
	}
	return committed
}

// rogueReaderSet is FuzzRogueMembers' honest readers, reading in the
// background into got.
type rogueReaderSet struct {
	wg   sync.WaitGroup
	stop atomic.Bool
	got  []map[[2]int]int
}

// rogueReaders starts two honest readers (pubsub subscribers, or stream
// readers of queue 0); a subscriber stops at the end marker, a stream
// reader when told to.
func rogueReaders(t *testing.T, r *Ring) *rogueReaderSet {
	rs := &rogueReaderSet{}
	t.Cleanup(func() { rs.stop.Store(true); rs.wg.Wait() })
	max := r.Config().MaxMessage
	for i := 0; i < 2; i++ {
		var next func(context.Context, []byte) ([]byte, error)
		if r.Config().Type == TypeStream {
			rd, err := r.NewReader(ReaderOptions{Idle: IdleDefault})
			if err != nil {
				t.Fatal(err)
			}
			next = rd.Next
		} else {
			s, err := r.NewSubscriber(SubscriberOptions{Idle: IdleDefault})
			if err != nil {
				t.Fatal(err)
			}
			next = func(ctx context.Context, b []byte) ([]byte, error) {
				msg, err := s.Next(ctx, b)
				if err == nil && s.Lost() != 0 {
					err = fmt.Errorf("block subscriber lost %d messages", s.Lost())
				}
				return msg, err
			}
		}
		got := map[[2]int]int{}
		rs.got = append(rs.got, got)
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			last := map[int]int{0: -1, 1: -1, roguePub: -1}
			var buf []byte
			for end := time.Now().Add(8 * time.Second); time.Now().Before(end); {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				msg, err := next(ctx, buf)
				cancel()
				if rs.stop.Load() && err != nil {
					return
				}
				if errors.Is(err, context.DeadlineExceeded) {
					continue
				}
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
					return
				}
				buf = msg
				pub, seq, err := rogueDecode(msg, max)
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
					return
				}
				if seq <= last[pub] {
					t.Errorf("reader %d: publisher %d seq %d after %d", i, pub, seq, last[pub])
				}
				last[pub] = seq
				got[[2]int{pub, seq}]++
				if r.Config().Type == TypePubSub && pub == 0 && seq == rogueMsgs {
					return // the end marker: everything before it was read
				}
			}
			t.Errorf("reader %d: no end after 8 s", i)
		}()
	}
	return rs
}

// wait returns what each reader got once every published message was
// read: pubsub subscribers stop at the end marker; stream readers are
// stopped once Head reached Tail.
func (rs *rogueReaderSet) wait(t *testing.T, r *Ring) []map[[2]int]int {
	if r.Config().Type == TypeStream {
		eventually(t, 8*time.Second, func() error {
			if h, tl := atomic.LoadUint64(&r.queues[0].Head), atomic.LoadUint64(&r.queues[0].Tail); h != tl {
				return fmt.Errorf("head %#x, tail %#x", h, tl)
			}
			return nil
		})
		rs.stop.Store(true)
	}
	rs.wg.Wait()
	if r.Config().Type == TypeStream {
		all := map[[2]int]int{}
		for _, g := range rs.got {
			for k, n := range g {
				all[k] += n
			}
		}
		return []map[[2]int]int{all}
	}
	return rs.got
}
