// Command mmap-pub maps a channel's ring through the Shimmy mount and
// publishes messages with the copying API (Publisher.Publish), then prints
// the rate. No agent is on this path: the messages go straight into the
// shared memory every other member of the channel maps.
//
// Run it against a running agent (`make run` mounts /run/shimmy):
//
//	mkdir -p /run/shimmy/demo/chat
//	go run ./examples/mmap-sub -dir /run/shimmy/demo/chat -n 1000000 -count &
//	go run ./examples/mmap-pub -dir /run/shimmy/demo/chat -n 1000000
//
// In a pod, the channel directory comes in $SHIMMY_CHANNEL, so -dir can be
// left out. Message i is "msg <i, 8 digits>" padded with '.' to -size bytes,
// which mmap-sub checks.
package main

import (
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

func main() {
	dir := flag.String("dir", os.Getenv("SHIMMY_CHANNEL"), "channel directory (default $SHIMMY_CHANNEL)")
	n := flag.Int("n", 1_000_000, "messages to publish")
	size := flag.Int("size", 16, "message size in bytes (at least 12)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("mmap-pub: give the channel directory with -dir or $SHIMMY_CHANNEL")
	}
	if *size < 12 {
		log.Fatal("mmap-pub: -size must be at least 12")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *n, *size); err != nil {
		log.Fatalf("mmap-pub: %v", err)
	}
}

func run(ctx context.Context, dir string, n, size int) error {
	ring, err := channel.MapFile(filepath.Join(dir, "ring"))
	if err != nil {
		return err
	}
	defer ring.Close() // releases this process's members and unmaps

	pub, err := ring.NewPublisher(channel.PublisherOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer pub.Close()

	msg := make([]byte, size)
	start := time.Now()
	for i := 0; i < n; i++ {
		fill(msg, i)
		// On a block channel Publish waits while the slowest subscriber
		// is a full ring behind; on overwrite it never waits.
		if err := pub.Publish(ctx, msg); err != nil {
			if errors.Is(err, context.Canceled) {
				fmt.Printf("interrupted after %d messages\n", i)
				return nil
			}
			return fmt.Errorf("publish %d: %w", i, err)
		}
	}
	d := time.Since(start)
	fmt.Printf("published %d messages of %d bytes in %v: %.0f msgs/s, %.1f MB/s\n",
		n, size, d.Round(time.Microsecond), float64(n)/d.Seconds(), float64(n*size)/d.Seconds()/1e6)
	return nil
}

// fill writes message i: "msg 00000042" then '.' up to len(b).
func fill(b []byte, i int) {
	k := copy(b, fmt.Sprintf("msg %08d", i))
	for ; k < len(b); k++ {
		b[k] = '.'
	}
}
