package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestAgentCrash: SIGKILL the agent while an mmap publisher and an mmap
// subscriber (separate processes, block policy) run, then restart it on
// the same state dir. The mmap clients lose nothing and never notice; a
// file client (cat sub) gets an error, reopens and continues.
func TestAgentCrash(t *testing.T) {
	a := startAgent(t, "--reap-interval", "50ms")
	dir := a.mkChan(t, "crash/c", "capacity 64K\nlease 300ms")
	const n, size = 60000, 16
	args := []string{"-dir", dir, "-count", strconv.Itoa(n), "-size", strconv.Itoa(size)}
	sub := helper(t, nil, append([]string{"-mode", "mmap-sub"}, args...)...)
	sub.waitLine(t, "ready")
	cat := sh(t, "exec cat "+dir+"/sub")
	waitStat(t, dir, "subscribers", 2)
	pub := helper(t, nil, append([]string{"-mode", "mmap-pub", "-rate", "10000"}, args...)...)
	waitStat(t, dir, "messages", n/10)

	a.kill()
	if pub.exited() {
		t.Fatalf("the publisher finished before the agent was killed: the test proves nothing")
	}
	// The file client's read fails (the mount's connection is gone).
	if err := cat.wait(t); err == nil {
		t.Errorf("cat sub ended without an error after the agent died; stderr %q", cat.errOut.String())
	}
	t.Logf("cat after the crash: %d lines, stderr %q", strings.Count(cat.out.String(), "\n"), strings.TrimSpace(cat.errOut.String()))

	a.start() // same mount point, same state dir
	// The file client reopens and continues with what is published next.
	cat2 := sh(t, "exec cat "+dir+"/sub")
	waitStat(t, dir, "subscribers", 2)

	pr, sr := pub.result(t), sub.result(t)
	checkRun(t, "mmap publisher", pr, 0, n, size)
	checkRun(t, "mmap subscriber", sr, 0, n, size)
	if sr.Lost != 0 {
		t.Errorf("mmap subscriber lost %d messages", sr.Lost)
	}
	shRun(t, fmt.Sprintf("for i in 1 2 3; do echo after-$i; done > %s/pub", dir))
	eventually(t, 20*time.Second, func() error {
		if out := cat2.out.String(); !strings.HasSuffix(out, "after-1\nafter-2\nafter-3\n") {
			return fmt.Errorf("reopened cat has %q (stderr %q)", tail(out, 4), cat2.errOut.String())
		}
		return nil
	})
	if m, err := stat(dir, "messages"); err != nil || m != n+3 {
		t.Errorf("stats messages after the restart: %d, %v; want %d", m, err, n+3)
	}
}

// TestSubscriberKilled: a block channel whose mmap subscriber stalls holds
// the publisher back; once the subscriber is SIGKILLed its lease expires,
// the agent reaps it and the publisher continues.
func TestSubscriberKilled(t *testing.T) {
	a := startAgent(t, "--reap-interval", "50ms")
	dir := a.mkChan(t, "member/sub", "capacity 16K\nlease 200ms")
	const n, size = 2000, 64
	sub := helper(t, nil, "-mode", "mmap-sub", "-dir", dir, "-count", strconv.Itoa(n), "-size", strconv.Itoa(size), "-hang-after", "10")
	sub.waitLine(t, "ready")
	r := mapRing(t, dir)
	p, err := r.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	published := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := 0; i < n; i++ {
			if err := p.Publish(ctx, message(i, size)); err != nil {
				published <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
		}
		published <- nil
	}()
	sub.waitLine(t, "hanging")
	// The ring is full behind the stalled subscriber: the publisher waits.
	waitStat(t, dir, "lag_max", 100)
	select {
	case err := <-published:
		t.Fatalf("publisher finished past a stalled subscriber of a block channel: %v", err)
	default:
	}
	sub.cmd.Process.Signal(syscall.SIGKILL)
	<-sub.done
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	waitStat(t, dir, "reaped", 1)
	if s, err := stat(dir, "subscribers"); err != nil || s != 0 {
		t.Errorf("subscribers after the reap: %d, %v", s, err)
	}
}

// TestPublisherKilledMidMessage: a publisher SIGKILLed while it holds a
// claim does not stop the channel: the claim is unblocked after its lease
// and the subscribers (mmap and file) go on with the next publisher's
// messages.
func TestPublisherKilledMidMessage(t *testing.T) {
	a := startAgent(t, "--reap-interval", "50ms")
	dir := a.mkChan(t, "member/pub", "capacity 16K\nlease 200ms")
	const k, m, size = 5, 5, 16
	r := mapRing(t, dir)
	s, err := r.NewSubscriber(channel.SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	head := sh(t, fmt.Sprintf("timeout 60 head -n %d %s/sub", k+m, dir))
	waitStat(t, dir, "subscribers", 2)
	hung := helper(t, nil, "-mode", "claim-hang", "-dir", dir, "-count", strconv.Itoa(k), "-size", strconv.Itoa(size))
	hung.waitLine(t, "claimed")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var buf []byte
	for i := 0; i < k; i++ {
		if buf, err = s.Next(ctx, buf); err != nil || string(buf) != string(message(i, size)) {
			t.Fatalf("message %d: %q, %v", i, buf, err)
		}
	}
	hung.cmd.Process.Signal(syscall.SIGKILL)
	<-hung.done
	p, err := r.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := k; i < k+m; i++ {
		if err := p.Publish(ctx, message(i, size)); err != nil {
			t.Fatal(err)
		}
	}
	for i := k; i < k+m; i++ {
		if buf, err = s.Next(ctx, buf); err != nil || string(buf) != string(message(i, size)) {
			t.Fatalf("message %d after the dead claim: %q, %v", i, buf, err)
		}
	}
	if err := head.wait(t); err != nil || head.out.String() != lines(0, k+m, size) {
		t.Errorf("file subscriber: %v, got %q", err, head.out.String())
	}
	waitStat(t, dir, "reaped", 1)
}
