package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
)

func TestDump(t *testing.T) {
	if _, err := os.Stat(shm.DefaultDir); err != nil {
		t.Skipf("ring files live on tmpfs and this machine has no %s: %v", shm.DefaultDir, err)
	}
	name := fmt.Sprintf("ringdump-test-%d", os.Getpid())
	cfg := channel.Config{Capacity: 8192, MaxMessage: 1000, MemberSlots: 4, Lease: time.Second, Epoch: 42}
	seg, err := shm.CreatePOSIX(name, cfg.WithDefaults().Size(), shm.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Remove(); seg.Close() })
	r, err := channel.Format(seg.Bytes(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	sub, err := r.NewSubscriber(channel.SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := r.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		for i := 0; i < n; i++ {
			if err := pub.Publish(context.Background(), []byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1)
	// The subscriber reads what there is; its cursor is stored for
	// observers when it finds nothing more (it may lag while it reads).
	if _, err := sub.TryNext(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.TryNext(nil); !errors.Is(err, channel.ErrWouldBlock) {
		t.Fatalf("second read: %v, want ErrWouldBlock", err)
	}
	publish(2)

	var out bytes.Buffer
	if err := run(&out, filepath.Join(shm.DefaultDir, name), 0); err != nil {
		t.Fatal(err)
	}
	// Start is one lap in: 8192/16 = 512 units; three 5-byte messages take
	// two units each; the subscriber read one.
	for _, want := range []string{
		`magic\s+"SHIMRING"\s+version\s+2`,
		`type\s+pubsub\s+policy\s+block`,
		`capacity\s+8192\s+max message\s+1000`,
		`member slots\s+4\s+lease\s+1s`,
		`epoch\s+42 `,
		`\s0\s+3/518\s+0/512\s+0/512\s+`, // queue 0: tail, head, release
		`members \(2 of 4 slots in use\)`,
		`\s0\s+active\s+subscriber\s+0\s+\d+\s+\S+\s+1/514\s+2\s+-\s+0\s+1\s`,
		// Count is stored at a member's first message and every 256th.
		`\s1\s+active\s+publisher\s+0\s+\d+\s+\S+\s+-\s+-\s+-\s+0\s+1\s`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
}

func TestNotARing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(p, make([]byte, channel.HeaderLen), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(&bytes.Buffer{}, p, 0)
	if err == nil || !regexp.MustCompile(`bad magic`).MatchString(err.Error()) {
		t.Fatalf("run on zeroes: %v, want bad magic", err)
	}
}
