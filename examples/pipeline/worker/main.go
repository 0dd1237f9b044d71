// Command worker is the processing service of the image pipeline
// (examples/pipeline): run as many as you like (a Deployment's replicas).
// Each takes frames from the frames stream channel, competing with the
// others so that every frame goes to exactly one worker, checks the
// frame's CRC-32C, computes its luminance histogram and publishes the
// result (with the frame's identity and send time, and its own name) on
// the results pubsub channel.
//
//	worker [-frames DIR] [-results DIR] [-name NAME]
//
// The directories default to $SHIMMY_CHANNEL_FRAMES and
// $SHIMMY_CHANNEL_RESULTS, which the admission webhook gives a pod; the
// name to $POD_NAME, else host-pid.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/examples/pipeline/internal/vision"
)

func main() {
	host, _ := os.Hostname()
	frames := flag.String("frames", os.Getenv("SHIMMY_CHANNEL_FRAMES"), "the frames stream channel's directory (default $SHIMMY_CHANNEL_FRAMES)")
	results := flag.String("results", os.Getenv("SHIMMY_CHANNEL_RESULTS"), "the results channel's directory (default $SHIMMY_CHANNEL_RESULTS)")
	name := flag.String("name", vision.Env("POD_NAME", fmt.Sprintf("%s-%d", host, os.Getpid())), "this worker's name in its results (default $POD_NAME)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("worker: ")
	if *frames == "" || *results == "" {
		log.Fatal("give the channels' directories with -frames and -results (or $SHIMMY_CHANNEL_FRAMES, $SHIMMY_CHANNEL_RESULTS)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *frames, *results, *name); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func run(ctx context.Context, framesDir, resultsDir, name string) error {
	rings, closeAll, err := vision.Open(framesDir, resultsDir)
	if err != nil {
		return err
	}
	defer closeAll()
	frames, results := rings[0], rings[1]

	rd, err := frames.NewReader(channel.ReaderOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer rd.Close()
	pub, err := results.NewPublisher(channel.PublisherOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer pub.Close()
	log.Printf("%s: taking frames from %s, results to %s", name, framesDir, resultsDir)

	var msg, out []byte
	done, bad := 0, 0
	defer func() { log.Printf("%s: processed %d frames, %d malformed", name, done, bad) }()
	for {
		msg, err = rd.Next(ctx, msg)
		if err != nil {
			return err
		}
		f, px, err := vision.ParseFrame(msg)
		if err != nil {
			bad++
			log.Print(err)
			continue
		}
		out = vision.AppendResult(out[:0], vision.Process(f, px, name))
		if err := pub.Publish(ctx, out); err != nil {
			return err
		}
		done++
	}
}
