package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// clientFlags are the flags every client command takes.
func clientFlags(fl *flagSet, e *env) *string {
	return fl.String("mount", defaultMount(e), "mount point of the shimmy agent ($SHIMMY_MOUNT)")
}

// explain adds what a user can do to the errors the mount gives.
func explain(err error) error {
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("%w (the agent serving this mount is gone: restart it)", err)
	case errors.Is(err, syscall.EMSGSIZE):
		return fmt.Errorf("%w (the message is larger than the channel's max_message)", err)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("%w (the channel has members; it can only change or go while unused)", err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w (is the agent running, and the channel created?)", err)
	case errors.Is(err, syscall.EIO):
		return fmt.Errorf("%w (the channel's ring may be broken: see shimmy stat)", err)
	}
	return err
}

// ctlError reads the reason the agent left in <dir>/error.
func ctlError(dir string, err error) error {
	if b, rerr := os.ReadFile(filepath.Join(dir, chanfile.Error)); rerr == nil {
		if reason := strings.TrimSpace(string(b)); reason != "" {
			return fmt.Errorf("%w: %s", err, reason)
		}
	}
	return explain(err)
}

// prefix returns the data-file prefix of a channel: "" for pubsub, "up." or
// "down." for a stream (whose files are up.pub, down.sub, ...).
func prefix(dir string, streamDir *choiceFlag, base string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, base)); err == nil {
		if streamDir.set {
			return "", usagef("--stream-dir is for stream channels; %s is pubsub", dir)
		}
		return "", nil
	}
	if _, err := os.Stat(filepath.Join(dir, chanfile.StreamFile(0, base))); err == nil {
		if !streamDir.set {
			return "", usagef("%s is a stream channel: say which direction with --stream-dir up|down", dir)
		}
		return streamDir.val + ".", nil
	} else if _, derr := os.Stat(dir); derr != nil {
		return "", explain(derr)
	}
	return "", fmt.Errorf("%s has neither %s nor up.%s: not a shimmy channel", dir, base, base)
}

// channelArg parses the command line of a command whose one argument is a
// channel and returns the channel's directory.
func channelArg(fl *flagSet, e *env, args []string, mount *string) (string, error) {
	pos, err := parse(fl, e, args, 1, 1)
	if err != nil {
		return "", err
	}
	return channelDir(*mount, pos[0]) // after parse: --mount may have changed it
}

func streamDirFlag(fl *flagSet) *choiceFlag {
	f := &choiceFlag{val: "", choices: chanfile.Directions[:]}
	fl.Var(f, "stream-dir", "direction of a stream channel: up or down")
	return f
}

func runCreate(e *env, args []string) error {
	fl := newFlagSet("create", "shimmy create <namespace>/<channel> [flags]",
		`Create a channel directory (and its namespace if needed), then apply the
flags through the channel's ctl file in one write. Flags not given keep the
agent's defaults. The channel is created even if a flag is refused; the
refusal and the reason are reported and the channel keeps its defaults.`,
		"shimmy create demo/jobs --type stream --capacity 4M --max-message 256K --mode 0660\nshimmy create demo/legacy --backing sysv   # attach with shmat(sysv_id) from the host")
	mount := clientFlags(fl, e)
	typ, policy := channel.TypePubSub, channel.PolicyBlock
	typF, policyF := &textFlag{v: &typ}, &textFlag{v: &policy}
	fl.Var(typF, "type", "channel type: pubsub (every subscriber sees every message) or stream (competing readers per direction)")
	fl.Var(policyF, "policy", "overflow policy of a pubsub channel: block (lossless) or overwrite (publishers never wait)")
	var capacity, maxMsg sizeFlag
	fl.Var(&capacity, "capacity", "ring data bytes per direction, a power of two (K, M, G suffixes; default: the agent's)")
	fl.Var(&maxMsg, "max-message", "largest message in bytes (K, M, G suffixes; default: the agent's)")
	slots := fl.Uint("member-slots", 0, "member slots (publishers + subscribers at once; 0: the agent's default)")
	lease := fl.Duration("lease", 0, "member lease: a member silent this long is reaped (0: the agent's default)")
	backing := registry.BackingPOSIX
	backingF := &textFlag{v: &backing}
	fl.Var(backingF, "backing", "memory of the ring: posix (a shm file, mapped through the ring file) or sysv (a SysV segment, attached from the host's IPC namespace by the sysv_key or sysv_id that stat shows; no ring file)")
	var mode modeFlag
	fl.Var(&mode, "mode", "permission bits of the channel directory, octal; search bits are added where read or write is granted (0660 -> 0770)")
	dir, err := channelArg(fl, e, args, mount)
	if err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Dir(dir), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return explain(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("channel %s already exists", dir)
		}
		return explain(err)
	}
	var c registry.Change
	if typF.set {
		c.Type = &typ
	}
	if policyF.set {
		c.Policy = &policy
	}
	if capacity.set {
		c.Capacity = &capacity.n
	}
	if maxMsg.set {
		m := uint32(min(maxMsg.n, math.MaxUint32)) // larger: refused by the agent, with its reason

		c.MaxMessage = &m
	}
	if *slots != 0 {
		n := uint32(*slots)
		c.MemberSlots = &n
	}
	if *lease != 0 {
		c.Lease = lease
	}
	if backingF.set {
		c.Backing = &backing
	}
	if ctl := chanfile.FormatCtl(c); len(ctl) > 0 {
		// One write: the agent applies the lines together, so that a new
		// capacity and max_message are checked against each other.
		if err := writeFile(filepath.Join(dir, chanfile.Ctl), ctl); err != nil {
			return fmt.Errorf("channel %s created, configuration refused: %w", dir, ctlError(dir, err))
		}
	}
	if mode.set {
		m := mode.mode
		for _, b := range []uint32{0o700, 0o070, 0o007} {
			if m&b&^(b&0o111) != 0 {
				m |= b & 0o111
			}
		}
		if err := os.Chmod(dir, os.FileMode(m&0o777)|modeSpecial(m)); err != nil {
			return fmt.Errorf("channel %s created, chmod: %w", dir, explain(err))
		}
	}
	fmt.Fprintln(e.stdout, dir)
	return nil
}

func modeSpecial(m uint32) os.FileMode {
	var f os.FileMode
	if m&0o4000 != 0 {
		f |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		f |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		f |= os.ModeSticky
	}
	return f
}

// writeFile writes b to an existing file in one write(2).
func writeFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func runPub(e *env, args []string) error {
	fl := newFlagSet("pub", "shimmy pub <channel> [message...]",
		`Publish messages. Each argument is one message; with no arguments each
line of standard input is one message (its newline is not part of it), sent
in batches through the channel's publines file. With --raw all of standard
input is one message. <channel> is <namespace>/<channel> under the mount, or
the channel's absolute directory path (in a pod: $SHIMMY_CHANNEL).`,
		"shimmy pub demo/chat hello world      # two messages\nseq 1000 | shimmy pub demo/chat       # 1000 messages\nshimmy pub --raw demo/blobs < image.png")
	mount := clientFlags(fl, e)
	raw := fl.Bool("raw", false, "publish all of standard input as one message")
	dirFlag := streamDirFlag(fl)
	pos, err := parse(fl, e, args, 1, -1)
	if err != nil {
		return err
	}
	if *raw && len(pos) > 1 {
		return usagef("--raw publishes standard input; give no message arguments")
	}
	dir, err := channelDir(*mount, pos[0])
	if err != nil {
		return err
	}
	pre, err := prefix(dir, dirFlag, chanfile.Pub)
	if err != nil {
		return err
	}
	if len(pos) > 1 || *raw {
		f, err := os.OpenFile(filepath.Join(dir, pre+chanfile.Pub), os.O_WRONLY, 0)
		if err != nil {
			return explain(err)
		}
		defer f.Close()
		if *raw {
			msg, err := io.ReadAll(e.stdin)
			if err != nil {
				return fmt.Errorf("reading standard input: %w", err)
			}
			return publishOne(f, msg)
		}
		for _, m := range pos[1:] {
			if err := publishOne(f, []byte(m)); err != nil {
				return err
			}
		}
		return f.Close()
	}
	f, err := os.OpenFile(filepath.Join(dir, pre+chanfile.PubLines), os.O_WRONLY, 0)
	if err != nil {
		return explain(err)
	}
	defer f.Close()
	if err := publishLines(f, e.stdin); err != nil {
		return err
	}
	return f.Close()
}

func publishOne(f *os.File, msg []byte) error {
	n, err := f.Write(msg)
	if err != nil {
		return fmt.Errorf("publishing a %d-byte message: %w", len(msg), explain(err))
	}
	if n != len(msg) {
		return fmt.Errorf("publishing a %d-byte message: short write of %d bytes", len(msg), n)
	}
	return nil
}

// linesBatch bounds one write to publines. Writes carry whole lines only,
// so that a line is never split between two writes.
const linesBatch = 64 << 10

// publishLines copies newline-terminated lines from r to a publines file,
// many lines per write. A last line without a newline gets one.
func publishLines(w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, linesBatch)
	batch := make([]byte, 0, linesBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := w.Write(batch)
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("publishing lines: %w", explain(err))
		}
		return nil
	}
	for {
		line, err := br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the batch: send it on its own, whole.
			long := append([]byte(nil), line...)
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
			line = long
		}
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				line = append(line, '\n')
			}
			if len(batch)+len(line) > linesBatch {
				if ferr := flush(); ferr != nil {
					return ferr
				}
			}
			if len(line) > linesBatch {
				if _, werr := w.Write(line); werr != nil {
					return fmt.Errorf("publishing a %d-byte line: %w", len(line)-1, explain(werr))
				}
			} else {
				batch = append(batch, line...)
			}
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return fmt.Errorf("reading standard input: %w", err)
		}
		// Flush when no more input is waiting, so that an interactive
		// publisher's lines go out as they are typed.
		if br.Buffered() == 0 {
			if ferr := flush(); ferr != nil {
				return ferr
			}
		}
	}
}

func runSub(e *env, args []string) error {
	fl := newFlagSet("sub", "shimmy sub <channel> [-n N] [--oldest] [--raw]",
		`Subscribe and print messages as they arrive, one per line (a newline is
added to a message that lacks one), until interrupted or, with -n, after N
messages. A new subscriber starts at the newest message; --oldest starts at
the oldest one still in the ring. On a stream channel the reader competes with
the other readers of that direction: each message goes to one of them.`,
		"shimmy sub demo/chat -n 10\nshimmy sub --oldest --raw -n 1 demo/blobs > image.png\nshimmy sub --stream-dir up demo/jobs")
	mount := clientFlags(fl, e)
	count := fl.Int("n", 0, "stop after this many messages (0: never)")
	oldest := fl.Bool("oldest", false, "start at the oldest retained message instead of the newest")
	raw := fl.Bool("raw", false, "print messages exactly as published, with no newline added")
	dirFlag := streamDirFlag(fl)
	dir, err := channelArg(fl, e, args, mount)
	if err != nil {
		return err
	}
	if *count < 0 {
		return usagef("-n %d: want a count of at least 0", *count)
	}
	pre, err := prefix(dir, dirFlag, chanfile.Sub)
	if err != nil {
		return err
	}
	suffix := ""
	if *oldest {
		if pre != "" {
			return usagef("--oldest is for pubsub channels: a stream reader always takes the oldest unread message")
		}
		suffix = ".oldest"
	}
	if *count == 0 && !*raw {
		// The sub file batches many messages per read: the fast path.
		f, err := os.Open(filepath.Join(dir, pre+chanfile.Sub+suffix))
		if err != nil {
			return explain(err)
		}
		defer f.Close()
		if _, err := io.CopyBuffer(e.stdout, f, make([]byte, 1<<20)); err != nil {
			return explain(err)
		}
		return nil
	}
	// The msg file gives exactly one message per read, so that -n takes no
	// more than N messages (on a stream, extra ones would be lost to the
	// other readers).
	f, err := os.Open(filepath.Join(dir, pre+chanfile.Msg+suffix))
	if err != nil {
		return explain(err)
	}
	defer f.Close()
	buf := make([]byte, maxMessage(dir)+1)
	for i := 0; *count == 0 || i < *count; i++ {
		n, err := f.Read(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return explain(err)
		}
		out := buf[:n]
		if !*raw && (n == 0 || out[n-1] != '\n') {
			out = append(out, '\n')
		}
		if _, err := e.stdout.Write(out); err != nil {
			return err
		}
	}
	return nil
}

// maxMessage reads the channel's max_message, so that one read takes any
// message whole.
func maxMessage(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, chanfile.Config))
	if err == nil {
		if cfg, err := chanfile.ParseConfig(b); err == nil && cfg.Config.MaxMessage > 0 && cfg.Config.MaxMessage <= 1<<30 {
			return int(cfg.Config.MaxMessage)
		}
	}
	return 16 << 20
}

func runLs(e *env, args []string) error {
	fl := newFlagSet("ls", "shimmy ls [namespace]",
		`List channels, all of them or those of one namespace, with their type,
policy, messages published, subscribers and the largest subscriber lag.`,
		"shimmy ls\nshimmy ls demo")
	mount := clientFlags(fl, e)
	pos, err := parse(fl, e, args, 0, 1)
	if err != nil {
		return err
	}
	var nss []string
	if len(pos) == 1 {
		if !registry.ValidName(pos[0]) {
			return usagef("invalid namespace %q", pos[0])
		}
		nss = []string{pos[0]}
	} else {
		ents, err := os.ReadDir(*mount)
		if err != nil {
			return explain(err)
		}
		for _, d := range ents {
			if d.IsDir() {
				nss = append(nss, d.Name())
			}
		}
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tTYPE\tPOLICY\tMESSAGES\tSUBSCRIBERS\tLAG\tSTATE")
	for _, ns := range nss {
		ents, err := os.ReadDir(filepath.Join(*mount, ns))
		if err != nil {
			return explain(err)
		}
		names := make([]string, 0, len(ents))
		for _, d := range ents {
			if d.IsDir() {
				names = append(names, d.Name())
			}
		}
		sort.Strings(names)
		for _, ch := range names {
			dir := filepath.Join(*mount, ns, ch)
			cfgs, cerr := chanfile.ReadFile(filepath.Join(dir, chanfile.Config))
			sts, serr := chanfile.ReadFile(filepath.Join(dir, chanfile.Stats))
			if cerr != nil || serr != nil {
				fmt.Fprintf(tw, "%s/%s\t?\t?\t?\t?\t?\t%v\n", ns, ch, explain(errors.Join(cerr, serr)))
				continue
			}
			cfg, st := cfgs.Map(), sts.Map()
			state := "ok"
			if b := st["broken"]; b != "" && b != "0" && b != "false" {
				state = "broken"
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ns, ch, orDash(cfg["type"]), orDash(cfg["policy"]),
				orDash(st["messages"]), orDash(st["subscribers"]), orDash(st["lag_max"]), state)
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runStat(e *env, args []string) error {
	fl := newFlagSet("stat", "shimmy stat <channel> | shimmy stat --links",
		`Print a channel's configuration (its config file) and live statistics (its
stats file). With --links, print the agent's mirror links instead: per peer
its state, bytes and messages carried, lag, window, reconnects and losses,
read from the agent's /metrics (--metrics).`,
		"shimmy stat demo/chat\nshimmy stat --links --metrics 127.0.0.1:9477")
	mount := clientFlags(fl, e)
	links := fl.Bool("links", false, "print the mirror's links instead of a channel")
	metrics := fl.String("metrics", agent.DefaultMetricsAddr, "with --links: the address of the agent's metrics server")
	pos, err := parse(fl, e, args, 0, 1)
	switch {
	case err != nil:
		return err
	case *links && len(pos) > 0:
		return usagef("--links takes no channel")
	case *links:
		return printLinks(e, *metrics)
	case len(pos) == 0:
		return usagef("missing argument (usage: %s)", fl.synopsis)
	}
	dir, err := channelDir(*mount, pos[0])
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "channel\t%s\n", dir)
	for _, file := range []string{chanfile.Config, chanfile.Stats} {
		kvs, err := chanfile.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return explain(err)
		}
		fmt.Fprintf(tw, "%s:\t\n", file)
		for _, kv := range kvs {
			fmt.Fprintf(tw, "  %s\t%s\n", kv.Key, kv.Value)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, chanfile.Error)); err == nil && len(bytes.TrimSpace(b)) > 0 {
		fmt.Fprintf(tw, "last error:\t%s\n", bytes.TrimSpace(b))
	}
	return tw.Flush()
}

func runRm(e *env, args []string) error {
	fl := newFlagSet("rm", "shimmy rm <channel>",
		"Remove a channel. Only an idle channel (no publishers or subscribers) can go; a busy one gives EBUSY.",
		"shimmy rm demo/chat")
	mount := clientFlags(fl, e)
	dir, err := channelArg(fl, e, args, mount)
	if err != nil {
		return err
	}
	if err := syscall.Rmdir(dir); err != nil {
		return fmt.Errorf("rmdir %s: %w", dir, explain(err))
	}
	return nil
}
