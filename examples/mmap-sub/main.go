// Command mmap-sub maps a channel's ring through the Shimmy mount and
// subscribes to it: it prints every message (or, with -count, only how many
// arrived), and reports the messages it lost when the channel's policy is
// overwrite and it fell a lap behind the publishers (Subscriber.Lost).
//
// Run it against a running agent (`make run` mounts /run/shimmy):
//
//	mkdir -p /run/shimmy/demo/chat
//	go run ./examples/mmap-sub -dir /run/shimmy/demo/chat &
//	echo hello > /run/shimmy/demo/chat/pub      # any publisher: files or mmap
//
// Flags: -oldest starts at the oldest message still in the ring instead of
// the next one published; -idle says how to wait for messages (busy: poll,
// lowest latency, one core at 100%; sleep: sleep on the ring's futex word at
// once; default: spin briefly, then sleep); -n stops after n messages
// received or lost. In a pod, the channel directory comes in
// $SHIMMY_CHANNEL, so -dir can be left out.
//
// Messages go to stdout, one a line; status ("subscribed", losses and the
// final count) to stderr. To see losses:
//
//	mkdir /run/shimmy/demo/fast
//	printf 'policy overwrite\ncapacity 4K\n' > /run/shimmy/demo/fast/ctl
//	go run ./examples/mmap-sub -dir /run/shimmy/demo/fast -count -idle sleep &
//	go run ./examples/mmap-pub -dir /run/shimmy/demo/fast -n 1000000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

var idles = map[string]channel.Idle{
	"busy":    channel.IdleBusy,
	"sleep":   channel.IdleSleep,
	"default": channel.IdleDefault,
}

func main() {
	dir := flag.String("dir", os.Getenv("SHIMMY_CHANNEL"), "channel directory (default $SHIMMY_CHANNEL)")
	n := flag.Uint64("n", 0, "stop after this many messages received or lost (0: run until interrupted)")
	oldest := flag.Bool("oldest", false, "start at the oldest message still in the ring")
	idle := flag.String("idle", "default", "how to wait for messages: busy, sleep or default")
	count := flag.Bool("count", false, "print only the counts, not the messages")
	flag.Parse()
	if *dir == "" {
		log.Fatal("mmap-sub: give the channel directory with -dir or $SHIMMY_CHANNEL")
	}
	strategy, ok := idles[*idle]
	if !ok {
		log.Fatalf("mmap-sub: -idle %q: want busy, sleep or default", *idle)
	}
	from := channel.StartNewest
	if *oldest {
		from = channel.StartOldest
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *n, channel.SubscriberOptions{Idle: strategy, From: from}, *count); err != nil {
		log.Fatalf("mmap-sub: %v", err)
	}
}

func run(ctx context.Context, dir string, n uint64, opts channel.SubscriberOptions, countOnly bool) error {
	ring, err := channel.MapFile(filepath.Join(dir, "ring"))
	if err != nil {
		return err
	}
	defer ring.Close() // releases this process's members and unmaps

	sub, err := ring.NewSubscriber(opts)
	if err != nil {
		return err
	}
	defer sub.Close()
	fmt.Fprintln(os.Stderr, "subscribed")

	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	var (
		buf      []byte
		received uint64
		lost     uint64
		start    time.Time
	)
	for n == 0 || received+lost < n {
		// Flush before waiting, so that a slow channel's messages show
		// at once while a fast one is written in large batches.
		buf, err = sub.TryNext(buf)
		if errors.Is(err, channel.ErrWouldBlock) {
			out.Flush()
			buf, err = sub.Next(ctx, buf)
		}
		if errors.Is(err, context.Canceled) {
			break
		}
		if err != nil {
			return err
		}
		if received == 0 {
			start = time.Now()
		}
		received++
		// Lost counts the messages overwritten before this subscriber
		// read them: on a block channel it stays 0.
		if l := sub.Lost(); l != lost {
			out.Flush()
			fmt.Fprintf(os.Stderr, "lost %d messages (%d in all): the publishers lapped this subscriber\n", l-lost, l)
			lost = l
		}
		if !countOnly {
			out.Write(buf)
			if len(buf) == 0 || buf[len(buf)-1] != '\n' {
				out.WriteByte('\n')
			}
		}
	}
	out.Flush()
	d := time.Since(start)
	fmt.Fprintf(os.Stderr, "received %d messages, lost %d", received, lost)
	if received > 1 {
		fmt.Fprintf(os.Stderr, ", in %v: %.0f msgs/s", d.Round(time.Microsecond), float64(received)/d.Seconds())
	}
	fmt.Fprintln(os.Stderr)
	return nil
}
