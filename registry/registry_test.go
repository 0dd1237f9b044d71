package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/shm"
)

func newRegistry(t *testing.T, dir string) *Registry {
	t.Helper()
	r, err := New(Options{StateDir: dir, Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Recover(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// recorder collects events in delivery order.
type recorder struct {
	mu sync.Mutex
	ev []Event
}

func (rc *recorder) add(e Event) {
	rc.mu.Lock()
	rc.ev = append(rc.ev, e)
	rc.mu.Unlock()
}

// wait returns the events once there are n of them.
func (rc *recorder) wait(t *testing.T, n int) []Event {
	t.Helper()
	var out []Event
	wait.Eventually(t, 5*time.Second, func() error {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if len(rc.ev) < n {
			return fmt.Errorf("%d events, want %d", len(rc.ev), n)
		}
		out = append([]Event(nil), rc.ev...)
		return nil
	})
	return out
}

func ptr[T any](v T) *T { return &v }

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"orders-v2.eu_1", true}, {strings.Repeat("x", 63), true},
		{"", false}, {".hidden", false}, {strings.Repeat("x", 64), false},
		{"sp ace", false}, {"é", false}, {"a:b", false}, {"a/b", false},
	} {
		if got := ValidName(tc.name); got != tc.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
		if err := CheckName(tc.name); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidName)) {
			t.Errorf("CheckName(%q) = %v", tc.name, err)
		}
	}
}

// TestLifecycle drives the registry API alone: create, list, reconfigure,
// stats, remove, every refusal matched with errors.Is, and the events in
// order.
func TestLifecycle(t *testing.T) {
	dir := testenv.ShmDir(t, "shimmy-registry-test-")
	r := newRegistry(t, dir)
	var rec recorder
	cancel := r.Subscribe(0, rec.add)
	defer cancel()

	owner := Attr{UID: 1234, GID: 5678, Mode: 0o750}
	ns, err := r.CreateNamespace("ns", owner)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := ns.CreateChannel("ch", CreateOptions{Attr: owner})
	if err != nil {
		t.Fatal(err)
	}
	stream := channel.Config{Type: channel.TypeStream, Capacity: 64 << 10}
	if _, err := ns.CreateChannel("st", CreateOptions{Attr: owner, Config: &stream}); err != nil {
		t.Fatal(err)
	}
	if a := ch.Attr(); a != owner {
		t.Errorf("attr %+v, want %+v", a, owner)
	}
	if c := ch.Config(); c.Type != channel.TypePubSub || c.Capacity != channel.DefaultCapacity {
		t.Errorf("default config %+v", c)
	}
	if st, err := os.Stat(ch.Backing().Path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("backing file %v, %v: want mode 0640", st, err)
	}
	var names []string
	for _, c := range r.Channels() {
		names = append(names, c.NS+"/"+c.Name)
	}
	if got := strings.Join(names, " "); got != "ns/ch ns/st" {
		t.Errorf("Channels: %s", got)
	}
	if got, err := r.Channel("ns", "st"); err != nil || got.Config().Type != channel.TypeStream {
		t.Errorf("Channel(ns, st) = %v, %v", got, err)
	}

	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"namespace again", second(r.CreateNamespace("ns", owner)), ErrExists},
		{"bad namespace name", second(r.CreateNamespace(".x", owner)), ErrInvalidName},
		{"channel again", second(ns.CreateChannel("ch", CreateOptions{})), ErrExists},
		{"bad channel name", second(ns.CreateChannel("a:b", CreateOptions{})), ErrInvalidName},
		{"bad config", second(ns.CreateChannel("x", CreateOptions{Config: &channel.Config{Capacity: 3000}})), channel.ErrConfig},
		{"bad config is ErrInvalidConfig", second(ns.CreateChannel("x", CreateOptions{Config: &channel.Config{Capacity: 3000}})), ErrInvalidConfig},
		{"no such namespace", second(r.Namespace("nope")), ErrNotFound},
		{"no such channel", second(r.Channel("ns", "nope")), ErrNotFound},
		{"remove missing channel", ns.RemoveChannel("nope"), ErrNotFound},
		{"remove missing namespace", r.RemoveNamespace("nope"), ErrNotFound},
		{"remove non-empty namespace", r.RemoveNamespace("ns"), ErrNotEmpty},
		{"stream overwrite", second(ch.Reconfigure(Change{Type: ptr(channel.TypeStream), Policy: ptr(channel.PolicyOverwrite)})), ErrInvalidConfig},
		{"capacity not a power of two", second(ch.Reconfigure(Change{Capacity: ptr(uint64(3000))})), channel.ErrConfig},
		{"max message 0", second(ch.Reconfigure(Change{MaxMessage: ptr(uint32(0))})), ErrInvalidConfig},
		{"lease over an hour", second(ch.Reconfigure(Change{Lease: ptr(2 * time.Hour)})), ErrInvalidConfig},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if _, err := ns.Channel("x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused channel exists: %v", err)
	}
	if ch.LastError() == "" {
		t.Error("LastError empty after refused changes")
	}

	// Reconfigure: the values, the new epoch, and the Reconfigured event.
	before := ch.Config()
	cfg, err := ch.Reconfigure(Change{Type: ptr(channel.TypeStream), Capacity: ptr(uint64(64 << 10)), Lease: ptr(500 * time.Millisecond), MemberSlots: ptr(uint32(8))})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Type != channel.TypeStream || cfg.Policy != channel.PolicyBlock || cfg.Capacity != 64<<10 ||
		cfg.MaxMessage != 16<<10-channel.FrameHeaderLen || cfg.Lease != 500*time.Millisecond || cfg.MemberSlots != 8 {
		t.Errorf("reconfigured %+v", cfg)
	}
	if cfg.Epoch == before.Epoch || ch.Config() != cfg {
		t.Errorf("epoch %d -> %d; Config %+v", before.Epoch, cfg.Epoch, ch.Config())
	}
	if ch.LastError() != "" {
		t.Errorf("LastError after success: %q", ch.LastError())
	}

	// In use: ErrBusy for reconfigure and remove; stats count the members.
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Reconfigure(Change{Capacity: ptr(uint64(8 << 10))}); !errors.Is(err, ErrBusy) {
		t.Errorf("reconfigure of a busy channel: %v, want ErrBusy", err)
	}
	if err := ns.RemoveChannel("ch"); !errors.Is(err, ErrBusy) {
		t.Errorf("remove of a busy channel: %v, want ErrBusy", err)
	}
	pub, err := h.NewPublisher(channel.PublisherOptions{Queue: 0})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := h.NewReader(channel.ReaderOptions{Queue: 0})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelCtx := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelCtx()
	for i := 0; i < 3; i++ {
		if err := pub.Publish(ctx, []byte(fmt.Sprint("m", i))); err != nil {
			t.Fatal(err)
		}
	}
	st := ch.Stats()
	if st.Messages != 3 || st.Publishers != 1 || st.Subscribers != 1 || st.LagMax != 3 || st.Epoch != cfg.Epoch || st.Broken {
		t.Errorf("stats %+v", st)
	}
	if m, err := rd.Next(ctx, nil); err != nil || string(m) != "m0" {
		t.Errorf("read %q, %v", m, err)
	}
	pub.Close()
	rd.Close()
	h.Close()
	h.Close() // a second Close is harmless
	// Idle now, but it carried messages: still busy for reconfigure.
	if _, err := ch.Reconfigure(Change{Capacity: ptr(uint64(8 << 10))}); !errors.Is(err, ErrBusy) {
		t.Errorf("reconfigure after messages: %v, want ErrBusy", err)
	}
	if err := ns.RemoveChannel("ch"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ns", "ch")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed channel left %v", err)
	}
	if _, err := ch.Open(); !errors.Is(err, ErrNotFound) {
		t.Errorf("open of a removed channel: %v, want ErrNotFound", err)
	}
	if err := ch.SetAttr(func(a *Attr) { a.Mode = 0o700 }); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetAttr of a removed channel: %v, want ErrNotFound", err)
	}
	if err := ns.RemoveChannel("st"); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveNamespace("ns"); err != nil {
		t.Fatal(err)
	}

	evs := rec.wait(t, 7)
	var got []string
	var last uint64
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%s %s/%s", e.Kind, e.Namespace, e.Channel))
		if e.Seq <= last {
			t.Errorf("event %+v after seq %d", e, last)
		}
		last = e.Seq
	}
	want := "namespace created ns/, created ns/ch, created ns/st, reconfigured ns/ch, removed ns/ch, removed ns/st, namespace removed ns/"
	if s := strings.Join(got, ", "); s != want {
		t.Errorf("events: %s\nwant:   %s", s, want)
	}
	if evs[3].Epoch != cfg.Epoch || evs[3].Config != cfg {
		t.Errorf("reconfigured event %+v, want epoch %d", evs[3], cfg.Epoch)
	}
}

func second[T any](_ T, err error) error { return err }

// TestSubscriberLoss: a registry Subscriber's overwrite losses stay in the
// channel's stats after it closes.
func TestSubscriberLoss(t *testing.T) {
	r := newRegistry(t, testenv.ShmDir(t, "shimmy-registry-test-"))
	ns, err := r.CreateNamespace("ns", Attr{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	cfg := channel.Config{Policy: channel.PolicyOverwrite, Capacity: 4096, MaxMessage: 512}
	ch, err := ns.CreateChannel("ch", CreateOptions{Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	sub, err := h.NewSubscriber(channel.SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := h.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx := context.Background()
	const n = 100
	for i := 0; i < n; i++ {
		if err := pub.Publish(ctx, bytes.Repeat([]byte{byte(i)}, 200)); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for {
		if _, err := sub.TryNext(nil); err != nil {
			break
		}
		got++
	}
	lost := sub.Lost()
	if lost == 0 || uint64(got)+lost != n {
		t.Fatalf("read %d, lost %d: want %d in all with some lost", got, lost, n)
	}
	sub.Close()
	sub.Close()
	if st := ch.Stats(); st.Lost != lost || st.Subscribers != 0 {
		t.Errorf("stats after close: lost %d subscribers %d, want lost %d", st.Lost, st.Subscribers, lost)
	}
}

// TestRecover: a new registry over the same state directory recovers the
// channels, their owner, configuration and messages; a damaged ring is
// kept as a broken channel and the others work.
func TestRecover(t *testing.T) {
	dir := testenv.ShmDir(t, "shimmy-registry-test-")
	r1, err := New(Options{StateDir: dir, Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := r1.CreateNamespace("ns", Attr{UID: 7, GID: 8, Mode: 0o700})
	cfg := channel.Config{Type: channel.TypeStream, Capacity: 8 << 10, Lease: 3 * time.Second}
	ch, err := ns.CreateChannel("ch", CreateOptions{Attr: Attr{UID: 7, GID: 8, Mode: 0o700}, Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.CreateChannel("bad", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := ch.Config()
	h, _ := ch.Open()
	pub, _ := h.NewPublisher(channel.PublisherOptions{Queue: 1})
	for _, m := range []string{"a", "b"} {
		if err := pub.Publish(context.Background(), []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	pub.Close()
	h.Close()
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.CreateChannel("late", CreateOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("create after Close: %v, want ErrClosed", err)
	}
	if _, err := ch.Open(); !errors.Is(err, ErrNotFound) {
		t.Errorf("open after Close: %v, want ErrNotFound", err)
	}
	// Damage one ring's header on disk.
	f, err := os.OpenFile(filepath.Join(dir, "ns", "bad", "ring"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 64), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	r2, err := New(Options{StateDir: dir, Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	var rec recorder
	defer r2.Subscribe(0, rec.add)()
	if err := r2.Recover(); err != nil {
		t.Fatal(err)
	}
	ch2, err := r2.Channel("ns", "ch")
	if err != nil {
		t.Fatal(err)
	}
	if got := ch2.Config(); got != want {
		t.Errorf("recovered config %+v, want %+v", got, want)
	}
	if a := ch2.Attr(); a != (Attr{UID: 7, GID: 8, Mode: 0o700}) {
		t.Errorf("recovered attr %+v", a)
	}
	h2, err := ch2.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	rd, _ := h2.NewReader(channel.ReaderOptions{Queue: 1})
	defer rd.Close()
	for _, w := range []string{"a", "b"} {
		if m, err := rd.TryNext(nil); err != nil || string(m) != w {
			t.Errorf("recovered message %q, %v; want %q", m, err, w)
		}
	}
	bad, err := r2.Channel("ns", "bad")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Open(); !errors.Is(err, ErrBroken) || !bad.Stats().Broken || bad.BrokenReason() == "" {
		t.Errorf("damaged ring: open %v, stats %+v", err, bad.Stats())
	}
	if _, err := bad.Reconfigure(Change{}); !errors.Is(err, ErrBroken) {
		t.Errorf("reconfigure of a broken channel: %v, want ErrBroken", err)
	}
	var got []string
	for _, e := range rec.wait(t, 4) {
		got = append(got, fmt.Sprintf("%s %s/%s", e.Kind, e.Namespace, e.Channel))
	}
	if s := strings.Join(got, ", "); s != "namespace created ns/, created ns/bad, broken ns/bad, created ns/ch" {
		t.Errorf("recovery events: %s", s)
	}
}

// TestReap: the reaper evicts a member whose lease ran out, beats the
// agent heartbeat, and marks a ring a client scribbled on broken.
func TestReap(t *testing.T) {
	dir := testenv.ShmDir(t, "shimmy-registry-test-")
	r := newRegistry(t, dir)
	ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
	var rec recorder
	defer r.Subscribe(0, rec.add)() // channel events only
	ch, _ := ns.CreateChannel("ch", CreateOptions{})
	mem := mapBacking(t, ch.Backing().Path)
	// A publisher slot whose owner "died" long ago, as a SIGKILLed mmap
	// client leaves it.
	slot := mem[channel.HeaderLen:]
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&slot[channel.MOffRole])), channel.RolePublisher)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&slot[channel.MOffLease])), 1)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&slot[channel.MOffState])), channel.MemberActive)
	if ch.Busy() {
		t.Error("a member whose lease ran out counts as live")
	}
	r.Reap()
	if st := ch.Stats(); st.Reaped != 1 || st.Publishers != 0 {
		t.Errorf("after Reap: %+v", st)
	}
	if pid := atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[channel.OffAgentPid]))); pid != uint32(os.Getpid()) {
		t.Errorf("agent pid in header %d", pid)
	}
	if err := ns.RemoveChannel("ch"); err != nil {
		t.Errorf("remove after the dead member was reaped: %v", err)
	}

	// Broken: a client overwrites the header's magic.
	bad, _ := ns.CreateChannel("bad", CreateOptions{})
	mem = mapBacking(t, bad.Backing().Path)
	copy(mem[:8], bytes.Repeat([]byte{0xff}, 8))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.RunReaper(ctx, 5*time.Millisecond) }()
	wait.Eventually(t, 5*time.Second, func() error {
		if !bad.Broken() {
			return errors.New("not broken yet")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunReaper: %v", err)
	}
	if _, err := bad.Open(); !errors.Is(err, ErrBroken) {
		t.Errorf("open of a broken channel: %v, want ErrBroken", err)
	}
	var got []string
	for _, e := range rec.wait(t, 4) {
		got = append(got, fmt.Sprintf("%s %s", e.Kind, e.Channel))
		if e.Kind == Broken && e.Reason == "" {
			t.Error("broken event without a reason")
		}
	}
	if s := strings.Join(got, ", "); s != "created ch, removed ch, created bad, broken bad" {
		t.Errorf("events: %s", s)
	}
}

func mapBacking(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, channel.HeaderLen+channel.MemberSlotLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// TestSlowSubscriber: a subscriber that does not return does not hold up
// the registry; its queue overflows into one Overflow event, and another
// subscriber still sees everything.
func TestSlowSubscriber(t *testing.T) {
	r := newRegistry(t, testenv.ShmDir(t, "shimmy-registry-test-"))
	release := make(chan struct{})
	var slow recorder
	cancelSlow := r.Subscribe(2, func(e Event) { // channel events only, as ns exists
		if e.Kind == NamespaceCreated {
			return
		}
		slow.add(e)
		<-release
	})
	ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
	var fast recorder
	defer r.Subscribe(0, fast.add)()
	small := channel.Config{Capacity: 4096}
	const n = 6
	for i := 0; i < n; i++ {
		if _, err := ns.CreateChannel(fmt.Sprint("c", i), CreateOptions{Config: &small}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			slow.wait(t, 1) // now stuck in its function with c0
		}
	}
	if evs := fast.wait(t, n); len(evs) != n || evs[n-1].Channel != fmt.Sprint("c", n-1) {
		t.Errorf("fast subscriber: %+v", evs)
	}
	close(release)
	evs := slow.wait(t, 3)
	// c0 was being delivered; c1..c4 went through the queue of 2 (whose
	// first entry became the Overflow marker) and were discarded; c5 is
	// the newest and follows the marker.
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%s %s %d", e.Kind, e.Channel, e.Dropped))
	}
	if s := strings.Join(got, ", "); s != "created c0 0, overflow  4, created c5 0" {
		t.Errorf("slow subscriber saw: %s", s)
	}
	cancelSlow()
}

// TestPassthroughKnownBeforeSet: the kernel serves requests as soon as the
// mount exists, before the mounter has recorded whether passthrough was
// negotiated; a config read in that window must wait for the answer, not
// report passthrough 0 (the e2e tests saw it flip to 1 between reads).
func TestPassthroughKnownBeforeSet(t *testing.T) {
	r := newRegistry(t, testenv.ShmDir(t, "shimmy-registry-test-"))
	got := make(chan bool)
	go func() { got <- r.Passthrough() }()
	select {
	case v := <-got:
		t.Fatalf("Passthrough answered %v before it was known", v)
	case <-time.After(50 * time.Millisecond):
	}
	r.SetPassthrough(true)
	if v := <-got; !v {
		t.Error("Passthrough = false after SetPassthrough(true)")
	}
	r.SetPassthrough(false) // later calls still record
	if r.Passthrough() {
		t.Error("Passthrough = true after SetPassthrough(false)")
	}
}

// TestSysVBacking: a SysV-backed channel carries messages between a client
// that attached its segment by id and the registry's own members, shows
// its key and id, survives a new registry over the same state directory,
// and frees its segment when removed.
func TestSysVBacking(t *testing.T) {
	dir := testenv.ShmDir(t, "shimmy-registry-test-")
	r1, err := New(Options{StateDir: dir, Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := r1.CreateNamespace("ns", Attr{Mode: 0o755})
	small := channel.Config{Capacity: 64 << 10}
	ch, err := ns.CreateChannel("sv", CreateOptions{Config: &small, Backing: BackingSysV})
	if err != nil {
		t.Fatal(err)
	}
	b := ch.Backing()
	if b.Kind != BackingSysV || b.Path != "" || b.SysVID <= 0 && b.SysVKey == 0 {
		t.Fatalf("backing %+v", b)
	}
	t.Cleanup(func() { unix.SysvShmCtl(b.SysVID, unix.IPC_RMID, nil) })
	if _, err := os.Stat(filepath.Join(dir, "ns", "sv", "ring")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a SysV channel has a ring file: %v", err)
	}
	if _, err := ns.CreateChannel("x", CreateOptions{Backing: "tape"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("backing tape: %v, want ErrInvalidConfig", err)
	}

	// A client attaches by id and publishes; the registry's subscriber reads.
	client := attachSysV(t, b.SysVID)
	pub, err := client.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := ch.Open()
	sub, err := h.NewSubscriber(channel.SubscriberOptions{From: channel.StartOldest})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []string{"one", "two"} {
		if err := pub.Publish(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"one", "two"} {
		if m, err := sub.Next(ctx, nil); err != nil || string(m) != want {
			t.Errorf("read %q, %v; want %q", m, err, want)
		}
	}
	pub.Close()
	sub.Close()
	h.Close()
	if st := ch.Stats(); st.Messages != 2 {
		t.Errorf("stats %+v", st)
	}
	cfg := ch.Config()
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}

	// A new registry reattaches the same segment, messages and all.
	r2 := newRegistry(t, dir)
	ch2, err := r2.Channel("ns", "sv")
	if err != nil {
		t.Fatal(err)
	}
	if ch2.Broken() || ch2.Backing() != b || ch2.Config() != cfg {
		t.Fatalf("recovered: broken %v backing %+v config %+v; want %+v %+v", ch2.Broken(), ch2.Backing(), ch2.Config(), b, cfg)
	}
	h2, _ := ch2.Open()
	sub2, _ := h2.NewSubscriber(channel.SubscriberOptions{From: channel.StartOldest})
	if m, err := sub2.Next(ctx, nil); err != nil || string(m) != "one" {
		t.Errorf("after recovery: %q, %v", m, err)
	}
	sub2.Close()
	h2.Close()

	// Reconfigure to POSIX and back: each ring is new, the old one freed.
	ns2, _ := r2.Namespace("ns")
	fresh, _ := ns2.CreateChannel("fresh", CreateOptions{Config: &small})
	sysv := BackingSysV
	if _, err := fresh.Reconfigure(Change{Backing: &sysv}); err != nil || fresh.Backing().Kind != BackingSysV {
		t.Fatalf("reconfigure to sysv: %v, %+v", err, fresh.Backing())
	}
	id := fresh.Backing().SysVID
	posix := BackingPOSIX
	if _, err := fresh.Reconfigure(Change{Backing: &posix}); err != nil || fresh.Backing().Kind != BackingPOSIX {
		t.Fatalf("reconfigure to posix: %v, %+v", err, fresh.Backing())
	}
	if _, err := shm.AttachSysV(id, 0); !errors.Is(err, shm.ErrNotFound) {
		t.Errorf("old segment after reconfigure: %v, want ErrNotFound", err)
	}

	client.Close() // the client's members are gone; the channel is idle
	if err := ns2.RemoveChannel("sv"); err != nil {
		t.Fatal(err)
	}
	if _, err := shm.AttachSysV(b.SysVID, 0); !errors.Is(err, shm.ErrNotFound) {
		t.Errorf("segment after remove: %v, want ErrNotFound", err)
	}
}

// attachSysV maps a SysV segment by id as a client in the host's IPC
// namespace would.
func attachSysV(t *testing.T, id int) *channel.Ring {
	t.Helper()
	seg, err := shm.AttachSysV(id, channel.HeaderLen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	r, err := channel.Open(seg.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// A capacity change that does not fit in the tmpfs is refused with
// ErrNoSpace and leaves the channel as it was: not broken, same ring,
// messages still flowing. So is a new channel that does not fit.
func TestFullTmpfs(t *testing.T) {
	r := newRegistry(t, testenv.Tmpfs(t, 2<<20))
	ns, err := r.CreateNamespace("ns", Attr{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := ns.CreateChannel("a", CreateOptions{Config: &channel.Config{Capacity: 512 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	before := ch.Config()
	if _, err := ch.Reconfigure(Change{Capacity: ptr(uint64(2 << 20))}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("reconfigure beyond the tmpfs: %v, want ErrNoSpace", err)
	}
	if ch.Broken() || ch.Config() != before || !strings.Contains(ch.LastError(), "space") {
		t.Fatalf("after a refused change: broken %v, config %+v (was %+v), error %q", ch.Broken(), ch.Config(), before, ch.LastError())
	}
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	sub, _ := h.NewSubscriber(channel.SubscriberOptions{})
	defer sub.Close()
	pub, _ := h.NewPublisher(channel.PublisherOptions{})
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.Next(ctx, nil); err != nil || string(m) != "still here" {
		t.Fatalf("read %q, %v", m, err)
	}
	if _, err := ns.CreateChannel("b", CreateOptions{Config: &channel.Config{Capacity: 2 << 20}}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("a channel larger than the tmpfs: %v, want ErrNoSpace", err)
	}
	if _, err := ns.Channel("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused channel exists: %v", err)
	}
}

// TestQuota: each limit of a namespace's quota refuses what would exceed
// it with ErrQuota and a reason, keeps what exists, is given back by a
// removal, and survives a restart.
func TestQuota(t *testing.T) {
	small := channel.Config{Capacity: 4096, MemberSlots: 8}
	size := small.WithDefaults().Size()
	for _, tc := range []struct {
		name  string
		quota Quota
		grow  Change // refused on the second channel
		want  string
	}{
		{"channels", Quota{Channels: 2}, Change{}, "channels"},
		{"bytes", Quota{Bytes: 2 * size}, Change{Capacity: ptr(uint64(8192))}, "ring bytes"},
		{"member slots", Quota{MemberSlots: 16}, Change{MemberSlots: ptr(uint32(9))}, "member slots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testenv.ShmDir(t, "shimmy-registry-test-")
			r := newRegistry(t, dir)
			ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
			if got := ns.Quota(); got != DefaultQuota {
				t.Fatalf("new namespace quota %+v, want the default %+v", got, DefaultQuota)
			}
			if err := ns.SetQuota(tc.quota); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"a", "b"} {
				if _, err := ns.CreateChannel(name, CreateOptions{Config: &small}); err != nil {
					t.Fatalf("create %s within the quota: %v", name, err)
				}
			}
			b, _ := ns.Channel("b")
			if tc.grow != (Change{}) {
				before := b.Config()
				if _, err := b.Reconfigure(tc.grow); !errors.Is(err, ErrQuota) || !strings.Contains(b.LastError(), tc.want) {
					t.Errorf("growing over the quota: %v (error %q), want ErrQuota naming %s", err, b.LastError(), tc.want)
				}
				if b.Config() != before || b.Broken() {
					t.Errorf("refused change altered the channel: %+v", b.Config())
				}
			}
			if _, err := ns.CreateChannel("c", CreateOptions{Config: &small}); !errors.Is(err, ErrQuota) || !strings.Contains(ns.QuotaError(), tc.want) {
				t.Errorf("third channel: %v (namespace error %q), want ErrQuota naming %s", err, ns.QuotaError(), tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "ns", "c")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("refused channel left state: %v", err)
			}
			want := Usage{Channels: 2, Bytes: 2 * size, MemberSlots: 16}
			if u := ns.Usage(); u != want {
				t.Errorf("usage %+v, want %+v", u, want)
			}
			if err := ns.RemoveChannel("a"); err != nil {
				t.Fatal(err)
			}
			if _, err := ns.CreateChannel("c", CreateOptions{Config: &small}); err != nil {
				t.Errorf("after a removal: %v", err)
			}
			r.Close()
			r2 := newRegistry(t, dir)
			ns2, _ := r2.Namespace("ns")
			if ns2.Quota() != tc.quota || ns2.Usage() != want {
				t.Errorf("recovered quota %+v usage %+v, want %+v %+v", ns2.Quota(), ns2.Usage(), tc.quota, want)
			}
		})
	}
}

// TestTruncatedBacking: with passthrough the state directory and backing
// files are root's alone; if root (or anyone) still shrinks a ring file
// under the agent, the fault marks that channel broken instead of killing
// the agent, and the other channels go on.
func TestTruncatedBacking(t *testing.T) {
	dir := testenv.ShmDir(t, "shimmy-registry-test-")
	r := newRegistry(t, dir)
	ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o777})
	evil, _ := ns.CreateChannel("evil", CreateOptions{Attr: Attr{UID: 65534, GID: 65534, Mode: 0o700}})
	victim, _ := ns.CreateChannel("victim", CreateOptions{})
	r.SetPassthrough(true)
	for path, want := range map[string]os.FileMode{dir: 0o700, evil.Backing().Path: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != want || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: %v uid %d gid %d, want root's %v", path, fi.Mode(), st.Uid, st.Gid, want)
		}
	}
	if err := os.Truncate(evil.Backing().Path, 0); err != nil {
		t.Fatal(err)
	}
	r.Reap()
	if !evil.Broken() || !strings.Contains(evil.BrokenReason(), "fault") {
		t.Fatalf("truncated ring: broken %v (%q), want broken by a fault", evil.Broken(), evil.BrokenReason())
	}
	if st := evil.Stats(); !st.Broken {
		t.Errorf("stats of the truncated channel: %+v", st)
	}
	h, err := victim.Open()
	if err != nil || victim.Broken() {
		t.Fatalf("other channel: %v, broken %v", err, victim.Broken())
	}
	defer h.Close()
	if beat := atomic.LoadUint64((*uint64)(unsafe.Pointer(&h.Memory()[channel.OffAgentBeat]))); beat == 0 {
		t.Error("other channel got no heartbeat")
	}
	if err := ns.RemoveChannel("evil"); err != nil {
		t.Errorf("remove the broken channel: %v", err)
	}
}

// TestSlowReap: a channel whose reap does not return (a crafted ring
// would take seconds) holds up neither the reaping pass, nor another
// channel's heartbeat, nor anyone's stats, nor its own removal.
func TestSlowReap(t *testing.T) {
	r := newRegistry(t, testenv.ShmDir(t, "shimmy-registry-test-"))
	ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
	evil, _ := ns.CreateChannel("evil", CreateOptions{})
	victim, _ := ns.CreateChannel("victim", CreateOptions{})
	stuck, release := make(chan struct{}), make(chan struct{})
	reapHook = func(ch *Channel) {
		if ch == evil {
			close(stuck)
			<-release
		}
	}
	t.Cleanup(func() { reapHook = nil })
	passed := make(chan struct{})
	go func() {
		r.Reap()
		close(passed)
	}()
	<-stuck
	returned := make(chan Stats, 2)
	go func() {
		returned <- evil.Stats()
		returned <- victim.Stats()
		<-passed
		close(returned)
	}()
	wait.Eventually(t, 10*time.Second, func() error {
		if len(returned) < 2 {
			return errors.New("stats or the reaping pass wait for the stuck reap")
		}
		return nil
	})
	<-passed
	h, _ := victim.Open()
	if beat := atomic.LoadUint64((*uint64)(unsafe.Pointer(&h.Memory()[channel.OffAgentBeat]))); beat == 0 {
		t.Error("the other channel got no heartbeat while one reap was stuck")
	}
	h.Close()
	r.Reap() // skips the channel whose reap still runs
	if err := ns.RemoveChannel("evil"); err != nil {
		t.Errorf("remove while its reap is stuck: %v", err)
	}
	close(release)
}

// TestNoDescriptorPerChannel: idle channels hold their mapping only, not
// a file descriptor each (the process limit would cap the channels of a
// node); a Handle still opens the backing file on demand.
func TestNoDescriptorPerChannel(t *testing.T) {
	const n = 200
	dir := testenv.ShmDir(t, "shimmy-registry-test-")
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("no /proc/self/fd: %v", err)
		}
		return len(ents)
	}
	before := fds()
	r := newRegistry(t, dir)
	ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
	small := channel.Config{Capacity: 4096}
	for i := range n {
		if _, err := ns.CreateChannel(fmt.Sprint("c", i), CreateOptions{Config: &small}); err != nil {
			t.Fatal(err)
		}
	}
	r.Reap()
	if grew := fds() - before; grew >= n/2 {
		t.Errorf("%d channels hold %d more descriptors", n, grew)
	}
	r.Close()
	r2 := newRegistry(t, dir)
	if grew := fds() - before; grew >= n/2 {
		t.Errorf("%d recovered channels hold %d more descriptors", n, grew)
	}
	ch, _ := r2.Channel("ns", "c7")
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f, err := h.Backing()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != small.WithDefaults().Size() {
		t.Errorf("backing file opened on demand: %v, %v", fi, err)
	}
}

// TestIdleChannelsNotVisited: the reaper visits a ring with members every
// pass interval but leaves a ring without members alone between its rare
// visits, so idle channels cost no CPU (its heartbeat shows each visit).
func TestIdleChannelsNotVisited(t *testing.T) {
	r := newRegistry(t, testenv.ShmDir(t, "shimmy-registry-test-"))
	ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
	idle, _ := ns.CreateChannel("idle", CreateOptions{})
	busy, _ := ns.CreateChannel("busy", CreateOptions{})
	hi, _ := idle.Open()
	defer hi.Close()
	hb, _ := busy.Open()
	defer hb.Close()
	sub, _ := hb.NewSubscriber(channel.SubscriberOptions{})
	defer sub.Close()
	beat := func(h *Handle) uint64 {
		return atomic.LoadUint64((*uint64)(unsafe.Pointer(&h.Memory()[channel.OffAgentBeat])))
	}
	r.Reap()
	idle0, busy0 := beat(hi), beat(hb)
	if idle0 == 0 || busy0 == 0 {
		t.Fatalf("first pass: heartbeats %d %d", idle0, busy0)
	}
	wait.Eventually(t, 10*time.Second, func() error {
		r.Reap()
		if beat(hb) == busy0 {
			return errors.New("the ring with a member is not visited again")
		}
		return nil
	})
	if b := beat(hi); b != idle0 {
		t.Errorf("the ring without members was visited again within its idle period (heartbeat %d -> %d)", idle0, b)
	}
}

// TestStatsNoWait: while a channel's lock is held (a new ring being made
// for a change), the metrics collector's read returns the last snapshot
// at once instead of waiting.
func TestStatsNoWait(t *testing.T) {
	r := newRegistry(t, testenv.ShmDir(t, "shimmy-registry-test-"))
	ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
	ch, _ := ns.CreateChannel("ch", CreateOptions{})
	want := ch.StatsNoWait()
	ch.mu.Lock()
	got := make(chan Stats, 1)
	go func() { got <- ch.StatsNoWait() }()
	var st Stats
	wait.Eventually(t, 10*time.Second, func() error {
		select {
		case st = <-got:
			return nil
		default:
			return errors.New("StatsNoWait waits for the channel's lock")
		}
	})
	ch.mu.Unlock()
	if st != want || st.Epoch == 0 {
		t.Errorf("snapshot while locked %+v, want the last one %+v", st, want)
	}
}

// TestReconfigureNoop: a change that leaves every value as it is keeps the
// ring (same epoch, no event), on an idle channel and on one in use and
// carrying messages, which a real change could not touch.
func TestReconfigureNoop(t *testing.T) {
	r := newRegistry(t, testenv.ShmDir(t, "shimmy-registry-test-"))
	ns, err := r.CreateNamespace("ns", Attr{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	defer r.Subscribe(0, rec.add)() // channel events only
	cfg := channel.Config{Type: channel.TypeStream, Capacity: 16 << 10, MemberSlots: 8}
	ch, err := ns.CreateChannel("ch", CreateOptions{Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 1) // Created
	cur := ch.Config()
	posix := BackingPOSIX
	noops := []struct {
		name string
		c    Change
	}{
		{"empty", Change{}},
		{"same values", Change{Type: ptr(channel.TypeStream), Policy: ptr(channel.PolicyBlock), Capacity: ptr(uint64(16 << 10)),
			MaxMessage: ptr(cur.MaxMessage), MemberSlots: ptr(uint32(8)), Lease: ptr(cur.Lease)}},
		{"same capacity", Change{Capacity: ptr(uint64(16 << 10))}},
		{"same backing", Change{Backing: &posix}},
	}
	check := func(when string) {
		t.Helper()
		for _, tc := range noops {
			if err := ch.CheckChange(tc.c); err != nil {
				t.Errorf("%s: CheckChange(%s): %v", when, tc.name, err)
			}
			got, err := ch.Reconfigure(tc.c)
			if err != nil || got != cur || ch.Config() != cur {
				t.Errorf("%s: Reconfigure(%s) = %+v, %v; want %+v unchanged", when, tc.name, got, err, cur)
			}
		}
	}
	check("idle")

	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	pub, err := h.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(context.Background(), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	check("in use")
	if _, err := ch.Reconfigure(Change{MemberSlots: ptr(uint32(9))}); !errors.Is(err, ErrBusy) {
		t.Errorf("a real change of a channel in use: %v, want ErrBusy", err)
	}
	if st := ch.Stats(); st.Messages != 1 || st.Epoch != cur.Epoch {
		t.Errorf("stats after no-op changes %+v: want the same ring with its 1 message", st)
	}
	// Only the Created event: no Reconfigured.
	rec.mu.Lock()
	n := len(rec.ev)
	rec.mu.Unlock()
	if n != 1 {
		t.Errorf("%d events, want only Created", n)
	}
}

// TestOwnerSurvivesRecover: the owner a front end records at creation is
// read back after a restart, and reconfiguring keeps it.
func TestOwnerSurvivesRecover(t *testing.T) {
	dir := testenv.ShmDir(t, "shimmy-registry-test-")
	r1, err := New(Options{StateDir: dir, Log: testenv.QuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := r1.CreateNamespace("ns", Attr{Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	owned, err := ns.CreateChannel("owned", CreateOptions{Owner: "test-owner"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owned.Reconfigure(Change{MemberSlots: ptr(uint32(4))}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.CreateChannel("mkdir", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r1.Close()
	r2 := newRegistry(t, dir)
	for _, tc := range []struct{ name, owner string }{{"owned", "test-owner"}, {"mkdir", ""}} {
		ch, err := r2.Channel("ns", tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := ch.Owner(); got != tc.owner {
			t.Errorf("%s: owner %q after recover, want %q", tc.name, got, tc.owner)
		}
	}
}
