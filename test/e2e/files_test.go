package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestShellTools: echo, cat, head, tail -f, dd and timeout work on the
// data files with no library.
func TestShellTools(t *testing.T) {
	a := startAgent(t)
	dir := a.mkChan(t, "tools/echo", "")

	head := sh(t, fmt.Sprintf("timeout 60 head -n 3 %s/sub", dir))
	cat := sh(t, fmt.Sprintf("exec cat %s/sub", dir))
	// "tail -f sub" reads the file to its end to find the last ten lines,
	// and a subscriber never ends: "tail -n +1 -f" (print from the first
	// line) is the form that follows a channel. stdbuf: tail's stdio buffers
	// a pipe, where a terminal would get each line at once.
	tailN := sh(t, fmt.Sprintf("exec stdbuf -o0 tail -n +1 -f %s/sub", dir))
	waitStat(t, dir, "subscribers", 3)

	for _, w := range []string{"one", "two", "three"} {
		shRun(t, fmt.Sprintf("echo %s > %s/pub", w, dir))
	}
	if err := head.wait(t); err != nil || head.out.String() != "one\ntwo\nthree\n" {
		t.Errorf("head -n 3: %v, got %q", err, head.out.String())
	}
	// printf into publines: one write carrying three lines, three messages.
	shRun(t, fmt.Sprintf("printf 'four\\nfive\\nsix\\n' > %s/publines", dir))
	want := "one\ntwo\nthree\nfour\nfive\nsix\n"
	for _, c := range []struct {
		name string
		p    *proc
	}{{"cat", cat}, {"tail -n +1 -f", tailN}} {
		if err := poll(10*time.Second, func() error {
			if got := c.p.out.String(); got != want {
				return fmt.Errorf("%s got %q (stderr %q), want %q", c.name, got, c.p.errOut.String(), want)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if n, err := stat(dir, "messages"); err != nil || n != 6 {
		t.Errorf("stats messages %d, %v; want 6", n, err)
	}
	// dd and head on sub.oldest read what is retained, from the start.
	if got := shRun(t, fmt.Sprintf("timeout 20 head -n 6 %s/sub.oldest", dir)); got != want {
		t.Errorf("head sub.oldest: %q", got)
	}
	if got := shRun(t, fmt.Sprintf("timeout 20 dd if=%s/msg.oldest bs=64k count=2 status=none", dir)); got != "one\ntwo\n" {
		t.Errorf("dd msg.oldest (one raw message per read): %q", got)
	}
	// timeout ends a subscriber that waits for nothing: exit status 124.
	err := exec.Command("timeout", "0.3", "cat", filepath.Join(dir, "sub")).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 124 {
		t.Errorf("timeout cat sub: %v, want exit status 124", err)
	}
	// Non-blocking read of an empty subscriber: EAGAIN.
	f, err := os.OpenFile(filepath.Join(dir, "sub"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := syscall.Read(int(f.Fd()), make([]byte, 100)); err != syscall.EAGAIN {
		t.Errorf("non-blocking read of an empty sub: %v, want EAGAIN", err)
	}
}

// TestMmapAndFiles: a Go mmap publisher and shell subscribers see the same
// messages (fan-out to several readers), and the reverse.
func TestMmapAndFiles(t *testing.T) {
	a := startAgent(t)
	const n, size = 5000, 16
	t.Run("mmap publisher, shell subscribers", func(t *testing.T) {
		dir := a.mkChan(t, "mix/fanout", "capacity 64K")
		var heads []*proc
		for i := 0; i < 3; i++ {
			heads = append(heads, sh(t, fmt.Sprintf("timeout 60 head -n %d %s/sub", n, dir)))
		}
		waitStat(t, dir, "subscribers", 3)
		r := mapRing(t, dir)
		p, err := r.NewPublisher(channel.PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := 0; i < n; i++ {
			if err := p.Publish(ctx, message(i, size)); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
		want := lines(0, n, size)
		for i, h := range heads {
			if err := h.wait(t); err != nil || h.out.String() != want {
				got := h.out.String()
				t.Errorf("subscriber %d: %v, %d bytes (want %d), %d lines, stderr %q", i, err, len(got), len(want), strings.Count(got, "\n"), h.errOut.String())
			}
		}
	})
	t.Run("shell publisher, mmap subscriber", func(t *testing.T) {
		dir := a.mkChan(t, "mix/reverse", "capacity 64K")
		r := mapRing(t, dir)
		s, err := r.NewSubscriber(channel.SubscriberOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var buf []byte
			for i := 0; i < n+300; i++ {
				if buf, err = s.Next(ctx, buf); err != nil {
					got <- fmt.Errorf("message %d: %w", i, err)
					return
				}
				want := message(i, 0)
				if i >= n {
					want = append(message(i, 0), '\n') // echo's newline is part of a pub message
				}
				if string(buf) != string(want) {
					got <- fmt.Errorf("message %d is %q, want %q", i, buf, want)
					return
				}
			}
			got <- nil
		}()
		// seq into publines: many lines per write, one message per line.
		shRun(t, fmt.Sprintf("seq -f 'm%%08g' 0 %d > %s/publines", n-1, dir))
		// echo into pub: one write(2), one message, per echo.
		shRun(t, fmt.Sprintf("for i in $(seq -f m%%08g %d %d); do echo $i; done > %s/pub", n, n+299, dir))
		if err := <-got; err != nil {
			t.Error(err)
		}
	})
}

// TestStreamCompetingReaders: on a stream, every message of a direction
// goes to exactly one of the readers, whatever their interface (cat on
// up.sub, one read per message on up.msg, mmap), and none is lost.
func TestStreamCompetingReaders(t *testing.T) {
	a := startAgent(t)
	dir := a.mkChan(t, "svc/jobs", "type stream\ncapacity 64K")
	for _, f := range []string{"up.pub", "up.publines", "up.sub", "up.msg", "down.pub", "down.publines", "down.sub", "down.msg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("stream file: %v", err)
		}
	}
	const n = 6000
	var readers []*proc
	for i := 0; i < 3; i++ {
		readers = append(readers, sh(t, fmt.Sprintf("exec cat %s/up.sub", dir)))
	}
	for i := 0; i < 2; i++ {
		readers = append(readers, helper(t, nil, "-mode", "file-sub", "-dir", dir, "-file", "up.msg", "-count", "1000000", "-print"))
	}
	r := mapRing(t, dir)
	rd, err := r.NewReader(channel.ReaderOptions{Queue: 0})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var mmapGot []string
	ctx, cancel := context.WithCancel(context.Background())
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var buf []byte
		for {
			var err error
			if buf, err = rd.Next(ctx, buf); err != nil {
				return
			}
			mu.Lock()
			mmapGot = append(mmapGot, string(buf))
			mu.Unlock()
		}
	}()
	waitStat(t, dir, "subscribers", 6)
	shRun(t, fmt.Sprintf("seq -f 'm%%08g' 0 %d > %s/up.publines", n-1, dir))

	collect := func() (all []string, per []int) {
		for _, p := range readers {
			var got []string
			for _, l := range strings.Fields(p.out.String()) {
				if strings.HasPrefix(l, "m") {
					got = append(got, l)
				}
			}
			all = append(all, got...)
			per = append(per, len(got))
		}
		mu.Lock()
		all = append(all, mmapGot...)
		per = append(per, len(mmapGot))
		mu.Unlock()
		return all, per
	}
	eventually(t, 30*time.Second, func() error {
		if all, per := collect(); len(all) < n {
			return fmt.Errorf("readers got %d of %d messages (per reader %v)", len(all), n, per)
		}
		return nil
	})
	cancel()
	<-readerDone
	rd.Close()
	all, per := collect()
	seen := map[string]int{}
	for _, m := range all {
		seen[m]++
	}
	var bad []string
	for m, c := range seen {
		var i int
		if _, err := fmt.Sscanf(m, "m%08d", &i); err != nil || i < 0 || i >= n || c != 1 {
			bad = append(bad, fmt.Sprintf("%s x%d", m, c))
		}
	}
	sort.Strings(bad)
	if len(all) != n || len(seen) != n || len(bad) > 0 {
		t.Errorf("readers got %d messages, %d distinct, want %d each; wrong or repeated: %q", len(all), len(seen), n, bad)
	}
	t.Logf("messages per reader (3 cat up.sub, 2 up.msg, 1 mmap): %v", per)
	if msgs, err := stat(dir, "messages"); err != nil || msgs != n {
		t.Errorf("stats messages %d, %v; want %d", msgs, err, n)
	}

	// The other direction: an mmap writer on queue 1 is what down.sub reads.
	head := sh(t, fmt.Sprintf("timeout 60 head -n 100 %s/down.sub", dir))
	waitStat(t, dir, "subscribers", 6) // five file readers of up + this one
	p, err := r.NewPublisher(channel.PublisherOptions{Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 0; i < 100; i++ {
		if err := p.Publish(context.Background(), message(i, 16)); err != nil {
			t.Fatal(err)
		}
	}
	if err := head.wait(t); err != nil || head.out.String() != lines(0, 100, 16) {
		t.Errorf("down.sub: %v, got %q", err, tail(head.out.String(), 3))
	}
}
