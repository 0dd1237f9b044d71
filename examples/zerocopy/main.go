// Command zerocopy shows the zero-copy halves of the channel API on a ring
// mapped through the Shimmy mount: a publisher reserves a frame in the ring
// with Claim, fills it in place and publishes it with Commit; a subscriber
// reads each message in place with Peek, checks with Valid that no
// publisher overwrote it meanwhile (only possible on overwrite channels),
// and releases it with Done. No message is copied on either side.
//
// Run it against a running agent (`make run` mounts /run/shimmy):
//
//	mkdir -p /run/shimmy/demo/zc
//	go run ./examples/zerocopy -dir /run/shimmy/demo/zc -n 100000 -size 4096
//
// Both sides run in this one process (two goroutines) to keep the example
// short; they could as well be two processes or two pods. Message i holds i
// as a little-endian u64, then bytes equal to byte(i): the subscriber checks
// every byte where it lies. In a pod, the channel directory comes in
// $SHIMMY_CHANNEL, so -dir can be left out.
package main

import (
	"context"
	"encoding/binary"
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

func main() {
	dir := flag.String("dir", os.Getenv("SHIMMY_CHANNEL"), "channel directory (default $SHIMMY_CHANNEL)")
	n := flag.Uint64("n", 100_000, "messages to send")
	size := flag.Int("size", 4096, "message size in bytes (8 to the channel's max_message)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("zerocopy: give the channel directory with -dir or $SHIMMY_CHANNEL")
	}
	if *size < 8 {
		log.Fatal("zerocopy: -size must be at least 8")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *n, *size); err != nil {
		log.Fatalf("zerocopy: %v", err)
	}
}

// result is what the subscriber saw.
type result struct {
	valid, overwritten, lost, corrupt uint64
}

func run(ctx context.Context, dir string, n uint64, size int) error {
	ring, err := channel.MapFile(filepath.Join(dir, "ring"))
	if err != nil {
		return err
	}
	defer ring.Close() // releases this process's members and unmaps

	// Join as a subscriber before publishing: a new subscriber starts at
	// the next message published.
	sub, err := ring.NewSubscriber(channel.SubscriberOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer sub.Close()
	pub, err := ring.NewPublisher(channel.PublisherOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubErr := make(chan error, 1)
	start := time.Now()
	go func() {
		defer pub.Close()
		pubErr <- publish(ctx, pub, n, size)
	}()
	res, err := subscribe(ctx, sub, n)
	if err != nil {
		cancel()
		<-pubErr
		return err
	}
	if err := <-pubErr; err != nil {
		return err
	}
	d := time.Since(start)
	fmt.Printf("committed %d messages of %d bytes in %v (%.0f msgs/s, %.0f MB/s)\n",
		n, size, d.Round(time.Microsecond), float64(n)/d.Seconds(), float64(n)*float64(size)/d.Seconds()/1e6)
	fmt.Printf("peeked %d: %d valid and intact, %d overwritten while read; lost %d; corrupt %d\n",
		res.valid+res.overwritten+res.corrupt, res.valid, res.overwritten, res.lost, res.corrupt)
	if res.corrupt > 0 {
		return fmt.Errorf("%d valid messages did not hold what was committed", res.corrupt)
	}
	return nil
}

func publish(ctx context.Context, pub *channel.Publisher, n uint64, size int) error {
	for i := uint64(0); i < n; i++ {
		// Claim reserves size bytes in the ring; c.Buf is that memory.
		c, err := pub.Claim(ctx, size)
		if err != nil {
			return fmt.Errorf("claim %d: %w", i, err)
		}
		binary.LittleEndian.PutUint64(c.Buf, i)
		for k := 8; k < len(c.Buf); k++ {
			c.Buf[k] = byte(i)
		}
		// Commit publishes it. Readers cannot pass a claim not yet
		// committed, so fill and commit promptly.
		if err := pub.Commit(c); err != nil {
			return fmt.Errorf("commit %d: %w", i, err)
		}
	}
	return nil
}

func subscribe(ctx context.Context, sub *channel.Subscriber, n uint64) (result, error) {
	var res result
	next := uint64(0) // the least sequence number still expected
	for res.valid+res.overwritten+res.corrupt+sub.Lost() < n {
		// Peek returns the message where it lies in the ring.
		msg, err := sub.Peek(ctx)
		if err != nil {
			return res, err
		}
		seq, intact := check(msg)
		// On an overwrite channel a publisher may have lapped this
		// subscriber while it read: Valid says whether what was read
		// can be trusted. (A block channel is always valid.)
		switch {
		case !sub.Valid():
			res.overwritten++
		case !intact || seq < next:
			res.corrupt++
		default:
			next = seq + 1
			res.valid++
		}
		sub.Done() // release the frame; the slice must not be used after this
	}
	res.lost = sub.Lost()
	if errors.Is(ctx.Err(), context.Canceled) {
		return res, ctx.Err()
	}
	return res, nil
}

// check reads a message in place: its sequence number and whether every
// byte after it matches.
func check(msg []byte) (uint64, bool) {
	if len(msg) < 8 {
		return 0, false
	}
	seq := binary.LittleEndian.Uint64(msg)
	for _, b := range msg[8:] {
		if b != byte(seq) {
			return seq, false
		}
	}
	return seq, true
}
