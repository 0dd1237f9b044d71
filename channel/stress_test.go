package channel

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stressLease is the lease of TestStressStalls: the stops are measured
// against it.
const stressLease = 200 * time.Millisecond

// Environment of the stress children.
const (
	envSelfStop = "SHIMMY_CHILD_SELFSTOP" // stresspub: SIGSTOP itself holding a filled claim every this many messages
	envSeed     = "SHIMMY_CHILD_SEED"     // stresspub: seed of its choices
)

// TestStressStalls runs publishers and subscribers in child processes and
// stops them with SIGSTOP while the others run, as a debugger, a cgroup
// freezer or an overloaded host would:
//
//   - a stoppable subscriber is stopped at random instants for one to
//     three leases: it is evicted, publishers go on without it, and when it
//     resumes it must not hand out a message overwritten under it; it joins
//     again and goes on, with a gap but in order and bytes intact;
//   - publishers stop themselves holding a claim they filled, and are kept
//     stopped for up to three leases: a reaper pads the claim, publishers
//     lap it, and the late commit must fail (the publisher publishes that
//     message again) and must not touch the newer frame;
//   - publishers are also stopped at random instants for less than a lease
//     (a stop past the lease in the middle of writing a payload is the one
//     thing the protocol cannot guard: docs/ring-format.md section 16).
//
// Meanwhile the test process reaps, as the agent does. A subscriber that is
// never stopped must get every message of every publisher exactly once, in
// order, bytes intact.
func TestStressStalls(t *testing.T) {
	r, path := newShmRing(t, Config{Capacity: procCapacity, MaxMessage: 1000, Lease: stressLease})
	counts := []int{2000, 2000, 2000}
	ring := envRing + "=" + path
	steady := startChild(t, "steady subscriber", "sub", ring, countsEnv(counts), envIdle+"=default")
	steady.waitLine("READY")
	stallable := startChild(t, "stoppable subscriber", "stresssub", ring, countsEnv(counts), envIdle+"=sleep")
	stallable.waitLine("READY")
	var pubs []*child
	for i, n := range counts {
		pubs = append(pubs, startChild(t, fmt.Sprintf("publisher %d", i), "stresspub", ring, envPub+"="+strconv.Itoa(i),
			envCount+"="+strconv.Itoa(n), envSelfStop+"=400", envSeed+"="+strconv.Itoa(i+1), envIdle+"=default"))
	}
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	var stopped []stop
	resumed := map[*child]bool{} // publishers woken from a self-stop once: the next one may wait longer
	stops, selfStops := 0, 0
	deadline := time.Now().Add(childTimeout)
	for running := true; running; {
		if time.Now().After(deadline) {
			t.Fatalf("publishers not done after %v", childTimeout)
		}
		r.Reap()
		now := time.Now()
		kept := stopped[:0]
		for _, s := range stopped {
			if now.After(s.until) {
				s.c.cmd.Process.Signal(syscall.SIGCONT)
			} else {
				kept = append(kept, s)
			}
		}
		stopped = kept
		running = false
		for _, p := range pubs {
			select {
			case <-p.done:
				continue
			default:
				running = true
			}
			if procStopped(p.pid()) && !stoppedIn(p, stopped) {
				// It stopped itself holding a claim: keep it stopped a
				// quarter of a lease to one and a half, every other time
				// three leases.
				d := stressLease * time.Duration(1+rnd.Intn(6)) / 4
				if resumed[p] {
					d = stressLease * 3
				}
				resumed[p] = !resumed[p]
				stopped = append(stopped, stop{p, now.Add(d)})
				selfStops++
			}
		}
		if c := append([]*child{stallable}, pubs...)[rnd.Intn(1+len(pubs))]; rnd.Intn(4) == 0 && !stoppedIn(c, stopped) {
			d := stressLease / 4
			if c == stallable {
				d = stressLease * time.Duration(2+rnd.Intn(5)) / 2
			}
			c.cmd.Process.Signal(syscall.SIGSTOP)
			stopped = append(stopped, stop{c, now.Add(d)})
			stops++
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range stopped {
		s.c.cmd.Process.Signal(syscall.SIGCONT)
	}
	for _, p := range pubs {
		p.waitOK()
	}
	steady.waitOK()
	stallable.release()
	stallable.waitOK()
	total := 0
	for _, n := range counts {
		total += n
	}
	if got := resultLine(t, steady); got[0] != total || got[1] != 0 {
		t.Errorf("steady subscriber got %d and lost %d of %d", got[0], got[1], total)
	}
	evicted := 0
	for _, p := range pubs {
		evicted += resultLine(t, p)[0]
	}
	res := resultLine(t, stallable)
	t.Logf("%d random stops, %d self-stops holding a claim; publishers evicted %d times; the stoppable subscriber got %d messages and was evicted %d times; %d claims reaped",
		stops, selfStops, evicted, res[0], res[1], r.QueueStats(0).Reaped)
}

// stop is a child the stress test stopped, and when to resume it.
type stop struct {
	c     *child
	until time.Time
}

// stoppedIn reports whether c is one of the children the test stopped.
func stoppedIn(c *child, stopped []stop) bool {
	for _, s := range stopped {
		if s.c == c {
			return true
		}
	}
	return false
}

// procStopped reports whether process pid is stopped (state T).
func procStopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, so look after the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] == "T"
}

// childStressPublish publishes COUNT messages as publisher PUB, in the
// order of their sequence, each exactly once: a message whose Publish or
// Commit failed with ErrEvicted was not published, so it joins again and
// publishes it again. Every SELFSTOP messages it claims, fills, stops
// itself (SIGSTOP) and then commits. It prints "RESULT <evictions>".
func childStressPublish(ctx context.Context, r *Ring, idle Idle, say func(string)) error {
	pub, count, max := envInt(envPub), envInt(envCount), int(r.Config().MaxMessage)
	every := envInt(envSelfStop)
	rnd := rand.New(rand.NewSource(int64(envInt(envSeed))))
	join := func() (*Publisher, error) { return r.NewPublisher(PublisherOptions{Idle: idle}) }
	p, err := join()
	if err != nil {
		return err
	}
	buf := make([]byte, max)
	evictions := 0
	for seq := 0; seq < count; {
		n := msgSize(pub, seq, max)
		if every > 0 && rnd.Intn(every) == 0 {
			var c Claim
			if c, err = p.Claim(ctx, n); err == nil {
				encodeMsg(c.Buf, pub, seq, n)
				syscall.Kill(os.Getpid(), syscall.SIGSTOP)
				err = p.Commit(c)
			}
		} else {
			err = p.Publish(ctx, encodeMsg(buf, pub, seq, n))
		}
		switch {
		case err == nil:
			seq++
		case errors.Is(err, ErrEvicted):
			evictions++
			p.Close()
			if p, err = join(); err != nil {
				return fmt.Errorf("join again at seq %d: %w", seq, err)
			}
		default:
			return fmt.Errorf("seq %d: %w", seq, err)
		}
	}
	p.Close()
	say(fmt.Sprintf("RESULT %d", evictions))
	return nil
}

// childStressSubscribe reads until stdin closes and the ring is then
// empty. When it finds itself evicted (it was stopped past its lease) it
// joins again at the newest message: messages may be missing across such a
// gap, but what it gets must be in order per publisher and intact, and it
// must never get a message whose frame was reused under it. It prints
// "RESULT <messages> <evictions>".
func childStressSubscribe(ctx context.Context, r *Ring, idle Idle, released chan struct{}, say func(string)) error {
	counts, _ := parseCounts()
	max := int(r.Config().MaxMessage)
	join := func() (*Subscriber, error) { return r.NewSubscriber(SubscriberOptions{Idle: idle}) }
	s, err := join()
	if err != nil {
		return err
	}
	say("READY")
	rctx, cancel := untilReleased(ctx, released)
	defer cancel()
	last := make([]int, len(counts))
	for i := range last {
		last[i] = -1
	}
	got, evictions := 0, 0
	var msg []byte
	for drain := false; ; {
		if drain {
			msg, err = s.TryNext(msg)
			if errors.Is(err, ErrWouldBlock) {
				break
			}
		} else {
			msg, err = s.Next(rctx, msg)
			if errors.Is(err, context.Canceled) && ctx.Err() == nil {
				drain = true
				continue
			}
		}
		if errors.Is(err, ErrEvicted) {
			evictions++
			s.Close()
			if s, err = join(); err != nil {
				return fmt.Errorf("join again after %d messages: %w", got, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("after %d messages: %w", got, err)
		}
		got++
		if len(msg) < seqMin {
			continue // too short to carry its sequence; checked by the steady subscriber
		}
		pub, seq := int(msg[0]), int(uint32(msg[1])|uint32(msg[2])<<8|uint32(msg[3])<<16|uint32(msg[4])<<24)
		if pub >= len(counts) || seq <= last[pub] || seq >= counts[pub] {
			return fmt.Errorf("message %d: publisher %d seq %d after seq %d", got, pub, seq, last[pub])
		}
		if want := encodeMsg(make([]byte, max), pub, seq, msgSize(pub, seq, max)); string(msg) != string(want) {
			return fmt.Errorf("message %d: publisher %d seq %d: %x..., want %x...", got, pub, seq, head(msg), head(want))
		}
		last[pub] = seq
	}
	s.Close()
	say(fmt.Sprintf("RESULT %d %d", got, evictions))
	return nil
}
