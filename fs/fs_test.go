package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/registry"
	"github.com/shimmy-dev/shimmy/shm"
)

// eventually polls f until it returns nil, failing t after timeout.
var eventually = wait.Eventually

type testFS struct {
	mnt   string
	state string
	reg   *registry.Registry
}

func newStateDir(t *testing.T) string { return testenv.ShmDir(t, "shimmy-fs-test-") }

// mountAt mounts a tree over state into a fresh t.TempDir and unmounts
// at cleanup.
func mountAt(t *testing.T, state string, defaults channel.Config) *testFS {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	reg, err := registry.New(registry.Options{StateDir: state, Defaults: defaults, Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Recover(); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	server, _, err := Mount(mnt, reg, MountOptions{AllowOther: true, Log: testenv.QuietLog()})
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("mounting FUSE needs root here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		reg.Close()
	})
	return &testFS{mnt: mnt, state: state, reg: reg}
}

func mountFS(t *testing.T) *testFS {
	return mountAt(t, newStateDir(t), channel.Config{})
}

func (f *testFS) path(p ...string) string { return filepath.Join(append([]string{f.mnt}, p...)...) }

// mkchan makes namespace ns (if missing) and channel ch.
func (f *testFS) mkchan(t *testing.T, ns, ch string) string {
	t.Helper()
	if err := os.Mkdir(f.path(ns), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	if err := os.Mkdir(f.path(ns, ch), 0o755); err != nil {
		t.Fatal(err)
	}
	return f.path(ns, ch)
}

var (
	open      = testenv.Open
	openOwned = testenv.OpenOwned
	read      = testenv.Read
	write     = testenv.Write
	mustWrite = testenv.MustWrite
	mustRead  = testenv.MustRead
)

// readKV reads a "key value" file of a channel directory into a map.
func readKV(t *testing.T, path string) map[string]string {
	t.Helper()
	p, err := chanfile.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return p.Map()
}

// TestNames: the registry's name rule reaches mkdir as EINVAL.
func TestNames(t *testing.T) {
	f := mountFS(t)
	for _, bad := range []string{".x", strings.Repeat("y", 64), "a:b"} {
		if err := os.Mkdir(f.path(bad), 0o755); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("mkdir %q: %v, want EINVAL", bad, err)
		}
	}
}

func TestMkdirRmdir(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := "config ctl error lost msg msg.oldest pub publines ring stats sub sub.oldest"
	if got := strings.Join(slices.Sorted(slices.Values(names)), " "); got != want {
		t.Errorf("files: %s, want %s", got, want)
	}
	ring := filepath.Join(f.state, "ns", "ch", "ring")
	if _, err := os.Stat(ring); err != nil {
		t.Fatalf("ring not created in state dir: %v", err)
	}
	if err := os.Mkdir(dir, 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("second mkdir: %v, want EEXIST", err)
	}
	if err := syscall.Rmdir(f.path("ns")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of non-empty namespace: %v, want ENOTEMPTY", err)
	}
	fd := open(t, filepath.Join(dir, "sub"), unix.O_RDONLY)
	if err := syscall.Rmdir(dir); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmdir of busy channel: %v, want EBUSY", err)
	}
	unix.Close(fd)
	eventually(t, 5*time.Second, func() error { return syscall.Rmdir(dir) })
	if _, err := os.Stat(ring); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ring still in state dir after rmdir: %v", err)
	}
	if err := syscall.Rmdir(f.path("ns")); err != nil {
		t.Errorf("rmdir of empty namespace: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.state, "ns")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace still in state dir: %v", err)
	}
}

func TestPubSubLines(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	sub := open(t, filepath.Join(dir, "sub"), unix.O_RDONLY)
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	mustWrite(t, pub, "one")
	mustWrite(t, pub, "two\n")
	mustWrite(t, pub, "three")
	// One read returns every whole message that fits, newline-terminated.
	var got string
	for len(got) < len("one\ntwo\nthree\n") {
		got += mustRead(t, sub, 4096)
	}
	if got != "one\ntwo\nthree\n" {
		t.Errorf("sub read %q", got)
	}
	// A message longer than the buffer continues in the next read.
	mustWrite(t, pub, "abcdefgh")
	if s := mustRead(t, sub, 4); s != "abcd" {
		t.Errorf("short read: %q, want the message's first 4 bytes", s)
	}
	if s := mustRead(t, sub, 64); s != "efgh\n" {
		t.Errorf("the rest: %q", s)
	}
	// Batching stops before a message that does not fit.
	mustWrite(t, pub, "aaaa")
	mustWrite(t, pub, "bbbb")
	eventually(t, 5*time.Second, func() error {
		if s := readKV(t, filepath.Join(dir, "stats"))["messages"]; s != "6" {
			return fmt.Errorf("messages %s", s)
		}
		return nil
	})
	if s := mustRead(t, sub, 7); s != "aaaa\n" {
		t.Errorf("batched read: %q, want only the first message", s)
	}
	if s := mustRead(t, sub, 7); s != "bbbb\n" {
		t.Errorf("next read: %q", s)
	}
}

func TestSubOldestAndMsg(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	for _, m := range []string{"a", "bb\n", "ccc"} {
		mustWrite(t, pub, m)
	}
	msg := open(t, filepath.Join(dir, "msg.oldest"), unix.O_RDONLY)
	// Exactly one raw message per read.
	for _, want := range []string{"a", "bb\n", "ccc"} {
		if got := mustRead(t, msg, 4096); got != want {
			t.Errorf("msg read %q, want %q", got, want)
		}
	}
	sub := open(t, filepath.Join(dir, "sub.oldest"), unix.O_RDONLY)
	var got string
	for len(got) < len("a\nbb\nccc\n") {
		got += mustRead(t, sub, 4096)
	}
	if got != "a\nbb\nccc\n" {
		t.Errorf("sub.oldest read %q", got)
	}
	// sub (newest) sees nothing old: non-blocking read says EAGAIN.
	nb := open(t, filepath.Join(dir, "sub"), unix.O_RDONLY|unix.O_NONBLOCK)
	if _, err := read(nb, make([]byte, 100)); err != unix.EAGAIN {
		t.Errorf("empty non-blocking sub: %v, want EAGAIN", err)
	}
	mustWrite(t, pub, "new")
	eventually(t, 5*time.Second, func() error {
		n, err := read(nb, make([]byte, 100))
		if err != nil {
			return err
		}
		if n != 4 {
			return fmt.Errorf("read %d bytes", n)
		}
		return nil
	})
	// A message bigger than a msg reader's buffer is EMSGSIZE, not cut.
	if s := mustRead(t, msg, 64); s != "new" {
		t.Errorf("msg read %q", s)
	}
	mustWrite(t, pub, "0123456789")
	if _, err := read(msg, make([]byte, 5)); err != unix.EMSGSIZE {
		t.Errorf("small msg read: %v, want EMSGSIZE", err)
	}
	if s := mustRead(t, msg, 64); s != "0123456789" {
		t.Errorf("msg after EMSGSIZE %q", s)
	}
}

func TestPubLines(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	msg := open(t, filepath.Join(dir, "msg"), unix.O_RDONLY)
	pl := open(t, filepath.Join(dir, "publines"), unix.O_WRONLY)
	mustWrite(t, pl, "x\ny")
	mustWrite(t, pl, "z\npartial")
	for _, want := range []string{"x", "yz"} {
		if got := mustRead(t, msg, 100); got != want {
			t.Errorf("line %q, want %q", got, want)
		}
	}
	unix.Close(pl) // close publishes the trailing partial line
	if got := mustRead(t, msg, 100); got != "partial" {
		t.Errorf("trailing line %q", got)
	}
}

func TestPubErrors(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	configure(t, dir, "capacity 4096\nmax_message 512\n")
	cfg := readKV(t, filepath.Join(dir, "config"))
	if cfg["capacity"] != "4096" || cfg["max_message"] != "512" {
		t.Fatalf("config after ctl: %v", cfg)
	}
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY|unix.O_NONBLOCK)
	if _, err := write(pub, make([]byte, 513)); err != unix.EMSGSIZE {
		t.Errorf("oversized write: %v, want EMSGSIZE", err)
	}
	// A slow subscriber holds a block ring; the non-blocking writer sees EAGAIN.
	sub := open(t, filepath.Join(dir, "msg"), unix.O_RDONLY)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = write(pub, make([]byte, 500))
	}
	if err != unix.EAGAIN {
		t.Fatalf("full block ring: %v, want EAGAIN", err)
	}
	if got := mustRead(t, sub, 1000); len(got) != 500 {
		t.Errorf("read %d bytes", len(got))
	}
	if _, err := write(pub, make([]byte, 500)); err != nil {
		t.Errorf("write after the subscriber made room: %v", err)
	}
}

func TestCtl(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	ctlPath := filepath.Join(dir, "ctl")
	before := readKV(t, filepath.Join(dir, "config"))
	for _, bad := range []string{"capacity 3000\n", "nonsense 1\n", "type queue\n", "policy overwrite\ntype stream\n", "lease 1\n", "capacity\n"} {
		if werr, cerr := writeCtl(ctlPath, bad); werr != unix.EINVAL || cerr != unix.EINVAL {
			t.Errorf("ctl %q: write %v, close %v; want EINVAL", bad, werr, cerr)
		}
		if after := readKV(t, filepath.Join(dir, "config")); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("ctl %q changed config: %v -> %v", bad, before, after)
		}
		if e, _ := os.ReadFile(filepath.Join(dir, "error")); len(e) == 0 {
			t.Errorf("ctl %q: error file empty", bad)
		}
	}
	configure(t, dir, "type stream\ncapacity 64K\nlease 500ms\nmember_slots 8\n")
	cfg := readKV(t, filepath.Join(dir, "config"))
	for k, v := range map[string]string{"type": "stream", "policy": "block", "capacity": "65536", "lease": "500ms", "member_slots": "8"} {
		if cfg[k] != v {
			t.Errorf("config %s = %q, want %q", k, cfg[k], v)
		}
	}
	if cfg["epoch"] == before["epoch"] {
		t.Errorf("epoch unchanged after reformat: %s", cfg["epoch"])
	}
	if e, _ := os.ReadFile(filepath.Join(dir, "error")); len(e) != 0 {
		t.Errorf("error file after success: %q", e)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(slices.Sorted(slices.Values(names)), " "); !strings.Contains(got, "up.pub") || strings.Contains(got, " sub ") {
		t.Errorf("stream files: %s", got)
	}
	// In use: EBUSY; after a message: EBUSY even when idle.
	pub := open(t, filepath.Join(dir, "up.pub"), unix.O_WRONLY)
	if werr, cerr := writeCtl(ctlPath, "capacity 8K\n"); werr != unix.EBUSY || cerr != unix.EBUSY {
		t.Errorf("ctl on busy channel: write %v, close %v; want EBUSY", werr, cerr)
	}
	mustWrite(t, pub, "m")
	unix.Close(pub)
	eventually(t, 5*time.Second, func() error {
		if werr, _ := writeCtl(ctlPath, "capacity 8K\n"); werr != unix.EBUSY {
			return fmt.Errorf("ctl after a message: %v, want EBUSY", werr)
		}
		return nil
	})
}

// writeCtl writes text to ctl in one write(2) and closes it: the write's
// error and close's (where the configuration is applied).
func writeCtl(path, text string) (werr, cerr error) {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return err, nil
	}
	_, werr = write(fd, []byte(text))
	return werr, unix.Close(fd)
}

// configure applies text through the ctl file of the channel at dir.
func configure(t *testing.T, dir, text string) {
	t.Helper()
	if werr, cerr := writeCtl(filepath.Join(dir, "ctl"), text); werr != nil || cerr != nil {
		t.Fatalf("ctl %q: write %v, close %v", text, werr, cerr)
	}
}

func TestStream(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "st")
	configure(t, dir, "type stream\n")
	r1 := open(t, filepath.Join(dir, "up.msg"), unix.O_RDONLY)
	r2 := open(t, filepath.Join(dir, "up.sub"), unix.O_RDONLY)
	w := open(t, filepath.Join(dir, "up.pub"), unix.O_WRONLY)
	down := open(t, filepath.Join(dir, "down.pub"), unix.O_WRONLY)
	mustWrite(t, down, "reply")
	for i := 0; i < 10; i++ {
		mustWrite(t, w, fmt.Sprint(i))
	}
	// Each message goes to exactly one reader of the direction.
	seen := map[string]int{}
	nb1 := open(t, filepath.Join(dir, "up.msg"), unix.O_RDONLY|unix.O_NONBLOCK)
	for total := 0; total < 10; {
		for _, fd := range []int{r1, nb1} {
			buf := make([]byte, 100)
			n, err := read(fd, buf)
			if err == unix.EAGAIN {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			seen[string(buf[:n])]++
			total++
		}
		if total < 10 && len(seen) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for i := 0; i < 10; i++ {
		if seen[fmt.Sprint(i)] != 1 {
			t.Errorf("message %d delivered %d times", i, seen[fmt.Sprint(i)])
		}
	}
	_ = r2
	rd := open(t, filepath.Join(dir, "down.sub"), unix.O_RDONLY)
	if got := mustRead(t, rd, 100); got != "reply\n" {
		t.Errorf("down.sub %q", got)
	}
}

func TestReadInterrupt(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	// A blocked reader: the Go runtime interrupts it with signals now and
	// then; every interrupted read returns EINTR, and read still gets the
	// message in the end.
	sub := open(t, filepath.Join(dir, "sub"), unix.O_RDONLY)
	done := make(chan string)
	go func() {
		b := make([]byte, 100)
		n, _ := read(sub, b)
		done <- string(b[:n])
	}()
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	eventually(t, 5*time.Second, func() error {
		if s := readKV(t, filepath.Join(dir, "stats"))["subscribers"]; s != "1" {
			return fmt.Errorf("subscribers %s", s)
		}
		return nil
	})
	mustWrite(t, pub, "hi")
	if got := <-done; got != "hi\n" {
		t.Errorf("got %q", got)
	}
}

func TestPermissions(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o750 || sys.Uid != 1234 || sys.Gid != 5678 {
		t.Errorf("dir after chmod/chown: %v %d:%d", st.Mode(), sys.Uid, sys.Gid)
	}
	for name, want := range map[string]os.FileMode{"ring": 0o640, "pub": 0o200, "sub": 0o440, "config": 0o444, "ctl": 0o200} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want || st.Sys().(*syscall.Stat_t).Uid != 1234 {
			t.Errorf("%s: mode %v uid %d, want %v uid 1234", name, st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Uid, want)
		}
	}
	// Persisted: a registry over the same state directory has them.
	reg, err := registry.New(registry.Options{StateDir: f.state, Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Recover(); err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ch, err := reg.Channel("ns", "ch")
	if err != nil || ch.Attr() != (registry.Attr{UID: 1234, GID: 5678, Mode: 0o750}) {
		t.Errorf("persisted attributes: %+v, %v", ch, err)
	}
}

func TestRecovery(t *testing.T) {
	state := newStateDir(t)
	f := mountAt(t, state, channel.Config{})
	dir := f.mkchan(t, "ns", "ch")
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	mustWrite(t, pub, "kept")
	unix.Close(pub)
	epoch := readKV(t, filepath.Join(dir, "config"))["epoch"]

	g := mountAt(t, state, channel.Config{})
	dir2 := g.path("ns", "ch")
	if e := readKV(t, filepath.Join(dir2, "config"))["epoch"]; e != epoch {
		t.Errorf("epoch after recovery %s, want %s", e, epoch)
	}
	if st, err := os.Stat(dir2); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("recovered mode: %v %v", st, err)
	}
	sub := open(t, filepath.Join(dir2, "sub.oldest"), unix.O_RDONLY)
	if got := mustRead(t, sub, 100); got != "kept\n" {
		t.Errorf("recovered message %q", got)
	}
}

func TestBrokenChannel(t *testing.T) {
	state := newStateDir(t)
	f := mountAt(t, state, channel.Config{})
	f.mkchan(t, "ns", "bad")
	f.mkchan(t, "ns", "good")
	// Damage one ring header on disk; a new tree must keep the other working.
	ring := filepath.Join(state, "ns", "bad", "ring")
	fd, err := os.OpenFile(ring, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fd.WriteAt(bytes.Repeat([]byte{0xff}, 64), 0); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	g := mountAt(t, state, channel.Config{})
	if _, err := unix.Open(g.path("ns", "bad", "sub"), unix.O_RDONLY, 0); err != unix.EIO {
		t.Errorf("open on broken channel: %v, want EIO", err)
	}
	if s := readKV(t, g.path("ns", "bad", "stats"))["broken"]; s != "1" {
		t.Errorf("stats broken = %q", s)
	}
	pub := open(t, g.path("ns", "good", "pub"), unix.O_WRONLY)
	mustWrite(t, pub, "fine")
}

func TestPassthroughMmap(t *testing.T) {
	f := mountFS(t)
	if !f.reg.Passthrough() {
		t.Skip("kernel or privileges lack FUSE passthrough")
	}
	dir := f.mkchan(t, "ns", "ch")
	fd := open(t, filepath.Join(dir, "ring"), unix.O_RDWR)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap ring: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	ring, err := channel.Open(mem)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ring.Close() })

	// mmap publisher -> file subscriber.
	sub := open(t, filepath.Join(dir, "msg"), unix.O_RDONLY)
	p, err := ring.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Publish(ctx, []byte("from mmap")); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, sub, 100); got != "from mmap" {
		t.Errorf("file read %q", got)
	}
	// file publisher -> mmap subscriber.
	s, err := ring.NewSubscriber(channel.SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	mustWrite(t, pub, "from file")
	got, err := s.Next(ctx, nil)
	if err != nil || string(got) != "from file" {
		t.Errorf("mmap read %q, %v", got, err)
	}
	stats := readKV(t, filepath.Join(dir, "stats"))
	if stats["publishers"] != "2" || stats["subscribers"] != "2" {
		t.Errorf("stats with two of each: %v", stats)
	}
}

// TestSysVChannel: a channel made SysV-backed through ctl serves its data
// files as any other, has no ring file (a SysV segment has no file to pass
// through), shows its key and id in config, exchanges messages with a
// client that attached the segment by id, and is recovered by a new tree.
func TestSysVChannel(t *testing.T) {
	state := newStateDir(t)
	f := mountAt(t, state, channel.Config{})
	dir := f.mkchan(t, "ns", "sv")
	if werr, cerr := writeCtl(filepath.Join(dir, "ctl"), "backing tape\n"); werr != unix.EINVAL || cerr != unix.EINVAL {
		t.Errorf("backing tape: write %v, close %v; want EINVAL", werr, cerr)
	}
	configure(t, dir, "backing sysv\ncapacity 64K\n")
	cfg := readKV(t, filepath.Join(dir, "config"))
	id, err := strconv.Atoi(cfg["sysv_id"])
	if err != nil || cfg["backing"] != "sysv" || !strings.HasPrefix(cfg["sysv_key"], "0x") || cfg["capacity"] != "65536" {
		t.Fatalf("config of a SysV channel: %v", cfg)
	}
	t.Cleanup(func() { unix.SysvShmCtl(id, unix.IPC_RMID, nil) })
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := "config ctl error lost msg msg.oldest pub publines stats sub sub.oldest"; strings.Join(slices.Sorted(slices.Values(names)), " ") != want {
		t.Errorf("files: %v, want %s", names, want)
	}
	if _, err := unix.Open(filepath.Join(dir, "ring"), unix.O_RDWR, 0); err != unix.ENOENT {
		t.Errorf("open ring of a SysV channel: %v, want ENOENT", err)
	}

	// A client attached by id publishes; a file subscriber reads, and back.
	seg, err := shm.AttachSysV(id, channel.HeaderLen)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	ring, err := channel.Open(seg.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := open(t, filepath.Join(dir, "msg"), unix.O_RDONLY)
	p, err := ring.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, []byte("from shmat")); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if got := mustRead(t, msg, 100); got != "from shmat" {
		t.Errorf("file read %q", got)
	}
	s, err := ring.NewSubscriber(channel.SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub := open(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	mustWrite(t, pub, "from file")
	if got, err := s.Next(ctx, nil); err != nil || string(got) != "from file" {
		t.Errorf("shmat client read %q, %v", got, err)
	}
	s.Close()

	// A new tree over the same state directory reattaches the segment.
	g := mountAt(t, state, channel.Config{})
	if cfg2 := readKV(t, g.path("ns", "sv", "config")); cfg2["sysv_id"] != cfg["sysv_id"] || cfg2["epoch"] != cfg["epoch"] {
		t.Errorf("config after recovery: %v, want id %s epoch %s", cfg2, cfg["sysv_id"], cfg["epoch"])
	}
	sub := open(t, g.path("ns", "sv", "sub.oldest"), unix.O_RDONLY)
	var got string
	for len(got) < len("from shmat\nfrom file\n") {
		got += mustRead(t, sub, 4096)
	}
	if got != "from shmat\nfrom file\n" {
		t.Errorf("after recovery: %q", got)
	}
}

// TestFullStateDir: a channel the state directory's tmpfs cannot hold is
// refused with ENOSPC, and no half-made channel is left behind.
func TestFullStateDir(t *testing.T) {
	f := mountAt(t, testenv.Tmpfs(t, 1<<20), channel.Config{Capacity: 1 << 20})
	if err := os.Mkdir(f.path("ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(f.path("ns", "big"), 0o755); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("mkdir of a channel larger than the tmpfs: %v, want ENOSPC", err)
	}
	if _, err := os.Stat(f.path("ns", "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused channel: %v, want ENOENT", err)
	}
}

// TestQuotaFile: root sets a namespace's quota through its .quota file; a
// channel over it is refused with EDQUOT and the reason is readable there.
func TestQuotaFile(t *testing.T) {
	f := mountFS(t)
	if err := os.Mkdir(f.path("ns"), 0o777); err != nil {
		t.Fatal(err)
	}
	q := f.path("ns", chanfile.Quota)
	if err := os.WriteFile(q, []byte("max_channels 1\nmax_bytes 4M\n"), 0); err != nil {
		t.Fatal(err)
	}
	f.mkchan(t, "ns", "a")
	if err := os.Mkdir(f.path("ns", "b"), 0o755); !errors.Is(err, unix.EDQUOT) {
		t.Fatalf("mkdir over the quota: %v, want EDQUOT", err)
	}
	kv := readKV(t, q)
	if kv["max_channels"] != "1" || kv["max_bytes"] != "4194304" || kv["channels"] != "1" || !strings.Contains(kv["error"], "channels") {
		t.Errorf(".quota after a refusal: %v", kv)
	}
	if err := os.WriteFile(q, []byte("max_channels x\n"), 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("bad quota line: %v, want EINVAL", err)
	}
	if fi, err := os.Stat(q); err != nil || fi.Mode().Perm() != 0o644 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf(".quota: %v %v, want root's 0644", fi.Mode(), err)
	}
}

// TestRingWriteBounded: a write(2) to the ring file past its end (dd
// seek=2 bs=1M count=16 on a 1 MiB channel) fails with EFBIG and the shm
// file behind it keeps its size; a write inside it lands in the ring.
func TestRingWriteBounded(t *testing.T) {
	f := mountFS(t)
	if !f.reg.Passthrough() {
		t.Skip("kernel or privileges lack FUSE passthrough")
	}
	dir := f.mkchan(t, "ns", "ch")
	ch, _ := f.reg.Channel("ns", "ch")
	size := ch.Config().Size()
	fd := open(t, filepath.Join(dir, "ring"), unix.O_RDWR)
	block := make([]byte, 1<<20)
	for i := int64(2); i < 18; i++ {
		if _, err := unix.Pwrite(fd, block, i<<20); err != unix.EFBIG {
			t.Fatalf("write at %d MiB of a %d-byte ring: %v, want EFBIG", i, size, err)
		}
	}
	if fi, err := os.Stat(ch.Backing().Path); err != nil || fi.Size() != size {
		t.Fatalf("backing file after writes past the end: %v bytes, %v; want %d", fi.Size(), err, size)
	}
	head := make([]byte, 64)
	if n, err := unix.Pread(fd, head, 0); n != len(head) || err != nil {
		t.Fatalf("read the header: %d, %v", n, err)
	}
	if n, err := unix.Pwrite(fd, head, 0); n != len(head) || err != nil {
		t.Errorf("write inside the ring: %d, %v", n, err)
	}
	if st := readKV(t, filepath.Join(dir, "stats")); st["broken"] != "0" {
		t.Errorf("stats after rewriting the header as it was: %v", st)
	}
}
