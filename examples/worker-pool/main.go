// Command worker-pool shows a stream channel used as a job queue: a client
// writes jobs to the channel's "up" direction with plain write(2)s on the
// up.pub file; workers map the ring and take jobs from "up" with competing
// stream readers (Ring.NewReader), so that each job goes to exactly one
// worker; each worker writes its reply to the "down" direction with an mmap
// publisher, and the client reads the replies from the down.msg file, one
// message per read(2). The client checks that every job was answered
// exactly once and prints how the jobs were spread over the workers.
//
// Run it against a running agent (`make run` mounts /run/shimmy):
//
//	mkdir -p /run/shimmy/demo/jobs
//	echo 'type stream' > /run/shimmy/demo/jobs/ctl
//	go run ./examples/worker-pool -dir /run/shimmy/demo/jobs -jobs 10000 -workers 4
//
// That runs the client and four worker goroutines in one process. Workers
// can as well be processes (or pods), started before or after the client:
//
//	go run ./examples/worker-pool -dir /run/shimmy/demo/jobs -mode worker -id 1 &
//	go run ./examples/worker-pool -dir /run/shimmy/demo/jobs -mode worker -id 2 &
//	go run ./examples/worker-pool -dir /run/shimmy/demo/jobs -mode client -jobs 10000 -workers 2
//
// When every reply is in, the client writes one "stop" job per worker
// (-workers of them); a worker exits at its first. In a pod, the channel
// directory comes in $SHIMMY_CHANNEL, so -dir can be left out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// The stream's two directions: queue 0 is "up" (up.pub, up.msg ...),
// queue 1 is "down".
const (
	up   = 0
	down = 1
)

func main() {
	dir := flag.String("dir", os.Getenv("SHIMMY_CHANNEL"), "stream channel directory (default $SHIMMY_CHANNEL)")
	mode := flag.String("mode", "all", "all: client and worker goroutines; client: the client only; worker: one worker")
	jobs := flag.Int("jobs", 10_000, "jobs the client sends")
	workers := flag.Int("workers", 4, "worker goroutines (mode all), or worker processes to stop at the end (mode client)")
	id := flag.Int("id", os.Getpid(), "worker id (mode worker)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("worker-pool: give the channel directory with -dir or $SHIMMY_CHANNEL")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch *mode {
	case "all":
		err = runAll(ctx, *dir, *jobs, *workers)
	case "client":
		err = client(*dir, *jobs, *workers)
	case "worker":
		err = runWorker(ctx, *dir, *id)
	default:
		err = fmt.Errorf("-mode %q: want all, client or worker", *mode)
	}
	if err != nil {
		log.Fatalf("worker-pool: %v", err)
	}
}

// runAll runs the workers as goroutines beside the client.
func runAll(ctx context.Context, dir string, jobs, workers int) error {
	ring, err := channel.MapFile(filepath.Join(dir, "ring"))
	if err != nil {
		return err
	}
	defer ring.Close() // releases this process's members and unmaps

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := worker(ctx, ring, w); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	err = client(dir, jobs, workers)
	if err != nil {
		cancel() // no stop jobs were sent
	}
	wg.Wait()
	close(errs)
	return errors.Join(err, <-errs)
}

func runWorker(ctx context.Context, dir string, id int) error {
	ring, err := channel.MapFile(filepath.Join(dir, "ring"))
	if err != nil {
		return err
	}
	defer ring.Close() // releases this process's members and unmaps
	return worker(ctx, ring, id)
}

// worker takes jobs from up until it takes "stop", and answers each on down.
func worker(ctx context.Context, ring *channel.Ring, id int) error {
	// Every reader of a queue competes with the others: a job is taken by
	// exactly one of them, and nothing is lost while the taker lives.
	rd, err := ring.NewReader(channel.ReaderOptions{Queue: up, Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer rd.Close()
	pub, err := ring.NewPublisher(channel.PublisherOptions{Queue: down, Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer pub.Close()
	var buf, reply []byte
	done := 0
	for {
		buf, err = rd.Next(ctx, buf)
		if err != nil {
			return fmt.Errorf("worker %d: %w", id, err)
		}
		if string(buf) == "stop" {
			fmt.Printf("worker %d: %d jobs\n", id, done)
			return nil
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(string(buf), "job "), 10, 64)
		if err != nil {
			return fmt.Errorf("worker %d: bad job %q", id, buf)
		}
		// The work: square the number. The reply names the job and the worker.
		reply = fmt.Appendf(reply[:0], "done %d %d worker %d", n, n*n, id)
		if err := pub.Publish(ctx, reply); err != nil {
			return fmt.Errorf("worker %d: %w", id, err)
		}
		done++
	}
}

// client writes the jobs to up.pub, reads the replies from down.msg and
// checks that each job was answered exactly once, and correctly.
func client(dir string, jobs, workers int) error {
	in, err := os.OpenFile(filepath.Join(dir, "up.pub"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Open(filepath.Join(dir, "down.msg"))
	if err != nil {
		return err
	}
	defer out.Close()

	start := time.Now()
	// Write while reading: both directions have bounded room, so a
	// client that wrote every job before reading a reply could stall with
	// the workers waiting for room in down and itself for room in up.
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < jobs; i++ {
			if _, err := fmt.Fprintf(in, "job %d", i); err != nil { // one write(2), one message
				sent <- fmt.Errorf("write job %d: %w", i, err)
				return
			}
		}
		sent <- nil
	}()

	answers := make([]int, jobs)
	perWorker := map[string]int{}
	buf := make([]byte, 64<<10)
	for got := 0; got < jobs; got++ {
		n, err := out.Read(buf) // exactly one message
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("read reply %d: %w", got, err)
		}
		var job, square int64
		var who string
		if _, err := fmt.Sscanf(string(buf[:n]), "done %d %d worker %s", &job, &square, &who); err != nil || job < 0 || job >= int64(jobs) {
			return fmt.Errorf("bad reply %q", buf[:n])
		}
		if square != job*job {
			return fmt.Errorf("wrong answer %q", buf[:n])
		}
		answers[job]++
		perWorker[who]++
	}
	if err := <-sent; err != nil {
		return err
	}
	d := time.Since(start)

	missing, dup := 0, 0
	for _, a := range answers {
		switch {
		case a == 0:
			missing++
		case a > 1:
			dup += a - 1
		}
	}
	var spread []string
	for w, k := range perWorker {
		spread = append(spread, fmt.Sprintf("worker %s: %d", w, k))
	}
	sort.Strings(spread)
	fmt.Printf("%d jobs, %d replies in %v (%.0f jobs/s); missing %d, duplicated %d\n",
		jobs, jobs, d.Round(time.Microsecond), float64(jobs)/d.Seconds(), missing, dup)
	fmt.Println(strings.Join(spread, ", "))
	if missing > 0 || dup > 0 {
		return fmt.Errorf("not exactly once: %d jobs missing, %d duplicated", missing, dup)
	}
	fmt.Println("every job answered exactly once")

	for i := 0; i < workers; i++ {
		if _, err := in.Write([]byte("stop")); err != nil {
			return fmt.Errorf("write stop: %w", err)
		}
	}
	return nil
}
