// Command camera is the source of the image pipeline (examples/pipeline,
// the Shimmy paper's Figure 1). It waits for commands on the control
// channel, "run <id> <frames> <fps>" (anyone may send one: `echo run 1
// 2000 0 > $SHIMMY_CHANNEL_CONTROL/pub`), and for each publishes that many
// synthetic grey images (-width x -height bytes, 100 KiB by default), each
// with its run, sequence number, total, send time and CRC-32C, on the
// frames stream channel: every frame goes to exactly one of the workers.
// Frames are filled in place in the ring (Claim/Commit, no copy). fps 0
// publishes as fast as the workers take them (the stream holds the camera
// back when full: nothing is lost).
//
// Both channels are mapped once, through the mount: an agent restart
// does not disturb a run.
//
//	camera [-frames DIR] [-control DIR] [-width 320] [-height 320]
//
// The directories default to $SHIMMY_CHANNEL_FRAMES and
// $SHIMMY_CHANNEL_CONTROL, which the admission webhook gives a pod.
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
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/examples/pipeline/internal/vision"
)

func main() {
	frames := flag.String("frames", os.Getenv("SHIMMY_CHANNEL_FRAMES"), "the frames stream channel's directory (default $SHIMMY_CHANNEL_FRAMES)")
	control := flag.String("control", os.Getenv("SHIMMY_CHANNEL_CONTROL"), "the control channel's directory (default $SHIMMY_CHANNEL_CONTROL)")
	width := flag.Int("width", 320, "image width in pixels (bytes)")
	height := flag.Int("height", 320, "image height in pixels")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("camera: ")
	if *frames == "" || *control == "" {
		log.Fatal("give the channels' directories with -frames and -control (or $SHIMMY_CHANNEL_FRAMES, $SHIMMY_CHANNEL_CONTROL)")
	}
	if *width <= 0 || *height <= 0 {
		log.Fatal("-width and -height must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *frames, *control, *width, *height); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func run(ctx context.Context, framesDir, controlDir string, width, height int) error {
	rings, closeAll, err := vision.Open(framesDir, controlDir)
	if err != nil {
		return err
	}
	defer closeAll()
	frames, control := rings[0], rings[1]

	// Queue 0 of the stream ("up"): the workers take from it.
	pub, err := frames.NewPublisher(channel.PublisherOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer pub.Close()
	cmds, err := control.NewSubscriber(channel.SubscriberOptions{Idle: channel.IdleSleep})
	if err != nil {
		return err
	}
	defer cmds.Close()
	log.Printf("ready: %dx%d frames (%d bytes) on %s, commands from %s", width, height, vision.FrameLen(width, height), framesDir, controlDir)

	var line []byte
	for {
		line, err = cmds.Next(ctx, line)
		if err != nil {
			return err
		}
		cmd, ok, err := vision.ParseCommand(string(line))
		if !ok {
			continue // a report, or a line for someone else
		}
		if err != nil {
			log.Print(err)
			continue
		}
		if err := publish(ctx, pub, cmd, width, height); err != nil {
			return err
		}
	}
}

// publish sends one run's frames, paced at cmd.FPS when it is not 0.
func publish(ctx context.Context, pub *channel.Publisher, cmd vision.Command, width, height int) error {
	log.Printf("run %d: %d frames at %s", cmd.Run, cmd.Frames, rate(cmd.FPS))
	n := vision.FrameLen(width, height)
	start := time.Now()
	for seq := uint64(0); seq < cmd.Frames; seq++ {
		if cmd.FPS > 0 {
			due := start.Add(time.Duration(float64(seq) / cmd.FPS * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		c, err := pub.Claim(ctx, n)
		if err != nil {
			return fmt.Errorf("run %d frame %d: %w", cmd.Run, seq, err)
		}
		vision.Fill(c.Buf, vision.Frame{Run: cmd.Run, Seq: seq, Total: cmd.Frames, Width: uint32(width), Height: uint32(height)})
		if err := pub.Commit(c); err != nil {
			return fmt.Errorf("run %d frame %d: %w", cmd.Run, seq, err)
		}
	}
	d := time.Since(start)
	log.Printf("run %d: published %d frames in %v (%.0f frames/s)", cmd.Run, cmd.Frames, d.Round(time.Millisecond), float64(cmd.Frames)/d.Seconds())
	return nil
}

func rate(fps float64) string {
	if fps == 0 {
		return "full speed"
	}
	return fmt.Sprintf("%g frames/s", fps)
}
