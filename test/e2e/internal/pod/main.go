// Command pod is the end-to-end tests' helper process: a channel member
// (mmap or data-file publisher or subscriber) that can first turn itself
// into a "pod": new IPC, mount and PID namespaces (made by the parent with
// clone flags), a private mount tree, a fresh tmpfs holding only its
// channel directory bind-mounted at <root>/chan, and the rest of the shimmy
// mount and /dev/shm hidden, as a Kubernetes pod with a hostPath volume
// would have it.
//
// It prints "ready" once it has joined the channel, "claimed" when a
// claim-hang publisher holds its claim, and a JSON Result as its last line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
	"github.com/shimmy-dev/shimmy/test/internal/member"
)

var (
	mode      = flag.String("mode", "", "mmap-pub, mmap-sub, mmap-read, file-pub, file-sub, claim-hang, try-write, try-read, ns-info")
	dir       = flag.String("dir", "", "channel directory")
	file      = flag.String("file", "", "data file inside the channel directory (file-* and try-* modes)")
	count     = flag.Int("count", 0, "messages to publish or receive")
	start     = flag.Int("start", 0, "sequence number of the first message")
	size      = flag.Int("size", 0, "pad messages to this size")
	queue     = flag.Int("queue", 0, "queue (stream direction: 0 up, 1 down)")
	oldest    = flag.Bool("oldest", false, "subscribe from the oldest retained message")
	rate      = flag.Int("rate", 0, "mmap-pub, mmap-read: publish or take at most this many messages a second (0: no limit)")
	hangAfter = flag.Int("hang-after", -1, "mmap-sub: stop reading after this many messages and sleep")
	data      = flag.String("data", "x\n", "try-write: what to write")
	print     = flag.Bool("print", false, "file-sub: print each message on a line of its own")
	timeout   = flag.Duration("timeout", time.Minute, "give up after this long")
	sysvID    = flag.Int("sysv-id", -1, "mmap-* modes: attach the SysV segment with this id instead of mapping <dir>/ring")
	list      = flag.Bool("list", false, "report the number of every message received (Result.Seqs)")
	untilStop = flag.Bool("until-stop", false, "mmap-sub, mmap-read: read until a \"stop\" message (not counted), at most -count messages")
	stops     = flag.Int("stops", 0, "mmap-pub: publish this many \"stop\" messages after the run")

	podRoot = flag.String("pod-root", "", "become a pod: mount a tmpfs here and bind -dir at <pod-root>/chan")
	hide    = flag.String("hide", "", "pod: the shimmy mount point to detach from the pod's mount tree")
	hidden  = flag.String("hidden", "", "pod: a path that must not be reachable (another channel)")
)

func main() {
	flag.Parse()
	res := member.Result{Mode: *mode}
	err := run(&res)
	if err != nil {
		res.Error = err.Error()
	}
	out, _ := json.Marshal(res)
	fmt.Printf("%s\n", out)
	if err != nil {
		os.Exit(1)
	}
}

func run(res *member.Result) error {
	if *podRoot != "" {
		if err := becomePod(res); err != nil {
			return fmt.Errorf("pod setup: %w", err)
		}
	}
	if l, err := os.Readlink("/proc/self/ns/ipc"); err == nil {
		res.IPC = l
	}
	res.Chan = *dir
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch *mode {
	case "ns-info":
		return nil
	case "mmap-pub", "mmap-sub", "mmap-read", "claim-hang":
		return mmapMode(ctx, res)
	case "file-pub":
		return filePub(res)
	case "file-sub":
		return fileSub(res)
	case "try-write", "try-read":
		return try(res)
	}
	return fmt.Errorf("unknown mode %q", *mode)
}

// becomePod runs in fresh mount, IPC and PID namespaces (the parent's
// clone flags) and leaves only the channel directory reachable.
func becomePod(res *member.Result) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := unix.Mount("pod", *podRoot, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs on %s: %w", *podRoot, err)
	}
	chanDir := filepath.Join(*podRoot, "chan")
	if err := os.Mkdir(chanDir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(*dir, chanDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", *dir, err)
	}
	if *hide != "" {
		if err := unix.Unmount(*hide, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach %s: %w", *hide, err)
		}
	}
	// The pod's own /dev/shm: nothing of the host's shared memory (where
	// the agent keeps the rings) is visible.
	if err := unix.Mount("podshm", "/dev/shm", "tmpfs", 0, "mode=1777"); err != nil {
		return fmt.Errorf("tmpfs on /dev/shm: %w", err)
	}
	if *hidden != "" {
		if _, err := os.Stat(*hidden); err == nil {
			return fmt.Errorf("%s is reachable from the pod", *hidden)
		} else {
			res.Hidden = err.Error()
		}
	}
	*dir = chanDir
	return nil
}

type checker struct {
	res  *member.Result
	next int
}

func (c *checker) add(msg []byte) {
	c.res.Fnv = member.Fold(c.res.Fnv, msg)
	if string(msg) != string(member.Message(c.next, *size)) {
		c.res.InOrder = false
	}
	n, intact := member.Seq(msg)
	if !intact {
		c.res.Corrupt++
	}
	if n >= 0 {
		c.next = n + 1
	}
	if *list {
		c.res.Seqs = append(c.res.Seqs, n)
	}
	if c.res.Count == 0 {
		c.res.First = string(msg[:min(len(msg), 9)])
	}
	c.res.Last = string(msg[:min(len(msg), 9)])
	c.res.Count++
}

func newChecker(res *member.Result) *checker {
	res.InOrder = true
	return &checker{res: res, next: *start}
}

func pace(i int, t0 time.Time) {
	if *rate > 0 {
		if d := time.Until(t0.Add(time.Duration(i) * time.Second / time.Duration(*rate))); d > 0 {
			time.Sleep(d)
		}
	}
}

func mmapMode(ctx context.Context, res *member.Result) error {
	r, err := mapRing()
	if err != nil {
		return err
	}
	defer r.Close()
	c := newChecker(res)
	switch *mode {
	case "mmap-pub", "claim-hang":
		p, err := r.NewPublisher(channel.PublisherOptions{Queue: *queue})
		if err != nil {
			return err
		}
		defer p.Close()
		fmt.Println("ready")
		t0 := time.Now()
		for i := 0; i < *count; i++ {
			msg := member.Message(*start+i, *size)
			if err := p.Publish(ctx, msg); err != nil {
				return fmt.Errorf("publish %d: %w", i, err)
			}
			c.add(msg)
			pace(i, t0)
		}
		for i := 0; i < *stops; i++ {
			if err := p.Publish(ctx, []byte(member.Stop)); err != nil {
				return fmt.Errorf("publish stop %d: %w", i, err)
			}
		}
		if *mode == "claim-hang" {
			if _, err := p.Claim(ctx, 64); err != nil {
				return err
			}
			fmt.Println("claimed")
			select {} // hold the claim until killed
		}
	case "mmap-sub":
		from := channel.StartNewest
		if *oldest {
			from = channel.StartOldest
		}
		s, err := r.NewSubscriber(channel.SubscriberOptions{From: from})
		if err != nil {
			return err
		}
		defer s.Close()
		fmt.Println("ready")
		var buf []byte
		for i := 0; i < *count; i++ {
			if i == *hangAfter {
				fmt.Println("hanging")
				select {}
			}
			if buf, err = s.Next(ctx, buf); err != nil {
				return fmt.Errorf("message %d: %w", i, err)
			}
			if *untilStop && string(buf) == member.Stop {
				break
			}
			c.add(buf)
		}
		res.Lost = s.Lost()
	case "mmap-read":
		rd, err := r.NewReader(channel.ReaderOptions{Queue: *queue})
		if err != nil {
			return err
		}
		defer rd.Close()
		fmt.Println("ready")
		var buf []byte
		t0 := time.Now()
		for i := 0; i < *count; i++ {
			if buf, err = rd.Next(ctx, buf); err != nil {
				return fmt.Errorf("message %d: %w", i, err)
			}
			if *untilStop && string(buf) == member.Stop {
				break
			}
			c.add(buf)
			pace(i, t0)
		}
	}
	return nil
}

// filePub writes -count messages to -file, one write(2) each.
func filePub(res *member.Result) error {
	f, err := os.OpenFile(filepath.Join(*dir, *file), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Println("ready")
	c := newChecker(res)
	t0 := time.Now()
	for i := 0; i < *count; i++ {
		msg := member.Message(*start+i, *size)
		if _, err := f.Write(msg); err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
		c.add(msg)
		pace(i, t0)
	}
	return f.Close()
}

// fileSub reads -count messages from a msg-style file (one message per read).
func fileSub(res *member.Result) error {
	f, err := os.Open(filepath.Join(*dir, *file))
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Println("ready")
	c := newChecker(res)
	buf := make([]byte, 1<<20)
	for i := 0; i < *count; i++ {
		n, err := f.Read(buf)
		if err != nil {
			return fmt.Errorf("read %d: %w", i, err)
		}
		c.add(buf[:n])
		if *print {
			fmt.Printf("%s\n", strings.TrimSuffix(string(buf[:n]), "\n"))
		}
	}
	return nil
}

// try opens -file for writing or reading and reports the errno.
func try(res *member.Result) error {
	path := filepath.Join(*dir, *file)
	var err error
	if *mode == "try-write" {
		var f *os.File
		if f, err = os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			_, err = f.Write([]byte(*data))
			f.Close()
		}
	} else {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			buf := make([]byte, 1<<16)
			var n int
			n, err = f.Read(buf)
			if errors.Is(err, io.EOF) {
				err = nil
			}
			res.Data = string(buf[:n])
			f.Close()
		}
	}
	var errno syscall.Errno
	switch {
	case err == nil:
	case errors.As(err, &errno):
		res.Errno = unix.ErrnoName(errno)
	default:
		res.Errno = err.Error()
	}
	return nil
}

// mapRing maps the channel's ring: its file, or the SysV segment by id as
// a client in the host's IPC namespace attaches it.
func mapRing() (*channel.Ring, error) {
	if *sysvID < 0 {
		return channel.MapFile(filepath.Join(*dir, "ring"))
	}
	seg, err := shm.AttachSysV(*sysvID, channel.HeaderLen)
	if err != nil {
		return nil, err
	}
	// The segment stays attached until the process exits.
	return channel.Open(seg.Bytes())
}
