package channel

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestManySubscribersAcrossProcesses: 4 000 subscribers in four processes,
// asleep between messages that come a quarter lease apart over several
// leases, while an agent reaps: none of these live, scheduled subscribers
// is evicted, and each receives every message, in order (issue 10 item
// 15).
func TestManySubscribersAcrossProcesses(t *testing.T) {
	const (
		procs = 4
		per   = 1000
		msgs  = 16
		lease = 2 * time.Second
	)
	r, path := newShmRing(t, Config{Capacity: 64 << 10, MemberSlots: 4096, Lease: lease})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reaped, reaper := startReaper(ctx, t, r, lease/20)
	kids := make([]*child, procs)
	for i := range kids {
		kids[i] = startChild(t, fmt.Sprintf("fansub %d", i), "fansub", envRing+"="+path, envSubs+"="+strconv.Itoa(per), envCount+"="+strconv.Itoa(msgs))
	}
	for _, k := range kids {
		k.waitLine("READY")
	}
	p := mustPub(t, r)
	for i := 0; i < msgs; i++ {
		if err := p.Publish(ctx, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(lease / 4)
	}
	for _, k := range kids {
		k.waitOK()
		if out := strings.Join(k.output(), "\n"); !strings.Contains(out, fmt.Sprintf("RESULT %d", per)) {
			t.Errorf("%s: %q", k.name, out)
		}
	}
	cancel()
	<-reaper
	if n, ev := reaped.Load(), r.QueueStats(0).Evicted; n != 0 || ev != 0 {
		t.Fatalf("%d of %d subscribers in %d processes evicted (Evicted counter %d), lease %v", n, procs*per, procs, ev, lease)
	}
}

// childFanSubscribe joins SUBS subscribers, prints READY, and has each
// receive COUNT messages "0", "1", ... in order; it prints RESULT and the
// number of subscribers that got them all.
func childFanSubscribe(ctx context.Context, r *Ring, say func(string)) error {
	n, count := envInt(envSubs), envInt(envCount)
	subs := make([]*Subscriber, n)
	for i := range subs {
		s, err := r.NewSubscriber(SubscriberOptions{Idle: IdleSleep})
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
		defer s.Close()
		subs[i] = s
	}
	say("READY")
	errs := make(chan error, n)
	for _, s := range subs {
		go func() {
			var msg []byte
			var err error
			for i := 0; i < count; i++ {
				if msg, err = s.Next(ctx, msg); err != nil {
					errs <- fmt.Errorf("message %d: %w", i, err)
					return
				}
				if string(msg) != strconv.Itoa(i) {
					errs <- fmt.Errorf("message %d is %q", i, msg)
					return
				}
			}
			errs <- nil
		}()
	}
	ok := 0
	var first error
	for range subs {
		if err := <-errs; err == nil {
			ok++
		} else if first == nil {
			first = err
		}
	}
	say(fmt.Sprintf("RESULT %d", ok))
	return first
}
