package mirror

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/syncbuf"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
	"github.com/shimmy-dev/shimmy/rdma/tcp"
	"github.com/shimmy-dev/shimmy/registry"
)

// TestMain runs the receiving agent of TestReceiverKilledMidBatch when
// the test binary is re-executed as one; otherwise the tests.
func TestMain(m *testing.M) {
	for env, run := range map[string]func() error{envReceiverDir: runReceiver, envExporterDir: runExporter} {
		if os.Getenv(env) == "" {
			continue
		}
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Environment of a receiving agent re-executed from the test binary.
const (
	envReceiverDir  = "SHIMMY_MIRROR_RECEIVER_DIR"  // its state directory
	envReceiverTLS  = "SHIMMY_MIRROR_RECEIVER_TLS"  // its node TLS directory
	envReceiverType = "SHIMMY_MIRROR_RECEIVER_TYPE" // the channel's type: pubsub, stream
)

// receiverConfig is b's channel: a ring so small that a batch from a
// fills it and the importer waits for room in the middle of the batch.
func receiverConfig(typ channel.Type) channel.Config {
	return channel.Config{Type: typ, Capacity: channel.MinCapacity, MaxMessage: 256}
}

// runReceiver is host b as an agent process: a registry on its state
// directory (the channel created on the first run, recovered after), a
// mirror that accepts host a's link, its address printed on stdout. It
// runs until it is killed.
func runReceiver() error {
	var typ channel.Type
	if err := typ.UnmarshalText([]byte(os.Getenv(envReceiverType))); err != nil {
		return err
	}
	return runChild("b", os.Getenv(envReceiverDir), os.Getenv(envReceiverTLS), receiverConfig(typ), Peer{Name: "a"})
}

// runChild runs the agent self of a test in this process: a registry on
// dir (the shared channel, of cfg, created on the first run and recovered
// after), a mirror with its node TLS directory that shares the channel
// with peer, its address printed on stdout. It runs until it is killed.
func runChild(self, dir, tlsDir string, cfg channel.Config, peer Peer) error {
	reg, err := registry.New(registry.Options{StateDir: dir, Log: testenv.QuietLog()})
	if err != nil {
		return err
	}
	if err := reg.Recover(); err != nil {
		return err
	}
	if _, err := reg.Channel(testNS, testCh); err != nil {
		ns, err := reg.CreateNamespace(testNS, registry.Attr{Mode: 0o755})
		if err != nil {
			return err
		}
		if _, err := ns.CreateChannel(testCh, registry.CreateOptions{Config: &cfg}); err != nil {
			return err
		}
	}
	node, err := certs.LoadNode(tlsDir)
	if err != nil {
		return err
	}
	tr, err := tcp.New(rdma.Options{Certificate: node.Pair.TLS(), CA: node.CA, Timeout: 3 * time.Second, Log: testenv.QuietLog()})
	if err != nil {
		return err
	}
	m, err := New(Options{Registry: reg, Transport: tr, Self: self, Listen: "127.0.0.1:0", Log: testenv.QuietLog(),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, StatusEvery: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	if err := m.Apply(Plan{Peers: []Peer{peer}, Shares: []Share{{Namespace: testNS, Channel: testCh, Peers: []string{peer.Name}}}}); err != nil {
		return err
	}
	fmt.Println("ADDR", m.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return m.Run(ctx)
}

// receiver is host b's agent process.
type receiver struct {
	cmd    *exec.Cmd
	addr   chan string
	done   chan struct{}
	stderr syncbuf.Buffer
}

func startReceiver(t *testing.T, dir, tlsDir string, typ channel.Type) *receiver {
	t.Helper()
	return startChild(t, envReceiverDir+"="+dir, envReceiverTLS+"="+tlsDir, envReceiverType+"="+typ.String())
}

// startChild re-executes the test binary as an agent process with env.
func startChild(t *testing.T, env ...string) *receiver {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), env...), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	r := &receiver{cmd: cmd, addr: make(chan string, 1), done: make(chan struct{})}
	cmd.Stderr = &r.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				r.addr <- a
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("receiver (pid %d) stderr:\n%s", cmd.Process.Pid, r.stderr.String())
		}
	})
	return r
}

// address waits for the receiver's mirror address.
func (r *receiver) address(t *testing.T) string {
	t.Helper()
	select {
	case a := <-r.addr:
		return a
	case <-r.done:
		t.Fatalf("receiver exited without an address: %s", r.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("receiver gave no address in 30s")
	}
	return ""
}

// kill ends the receiver as SIGKILL does: nothing of it runs after.
func (r *receiver) kill() {
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// TestReceiverKilledMidBatch: the receiving agent is killed with SIGKILL
// while a batch is half in its ring (a full block or stream ring makes the
// importer wait for room in the middle of it) and started again: its
// subscriber or reader gets every message once, in order.
func TestReceiverKilledMidBatch(t *testing.T) {
	for _, typ := range []channel.Type{channel.TypePubSub, channel.TypeStream} {
		t.Run(typ.String(), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a := &host{name: "a", dir: testenv.ShmDir(t, "mirror-a-")}
			b := &host{name: "b", dir: testenv.ShmDir(t, "mirror-b-")}
			cfg := receiverConfig(typ)
			cfg.Capacity = 64 << 10
			c, tlsDir := childCluster(t, "b", a, cfg)
			t.Cleanup(func() { c.stopHost(a) })
			// All of them in a's ring before the link: the first batch
			// carries them all, many times what b's ring holds.
			const n = 200
			ra := mapRing(t, a)
			if err := publish(ctx, ra, 1, n, 0); err != nil {
				t.Fatal(err)
			}

			rcv := startReceiver(t, b.dir, tlsDir, typ)
			addr := rcv.address(t)
			rb := mapRing(t, b)
			// b's only member, joined before anything flows and reading
			// nothing until b was killed: the ring fills.
			next, closeMember := member(t, rb, typ)
			t.Cleanup(closeMember)
			c.startMirror(a)
			plan := func(addr string) {
				if err := a.m.Apply(Plan{Peers: []Peer{{Name: "b", Addr: addr}},
					Shares: []Share{{Namespace: testNS, Channel: testCh, Peers: []string{"b"}}}}); err != nil {
					t.Fatal(err)
				}
			}
			plan(addr)
			waitFor(t, 30*time.Second, func() error {
				if qs := rb.QueueStats(0); qs.SpaceWaiters == 0 || qs.Messages == 0 || qs.Messages >= n {
					return fmt.Errorf("b's importer is not waiting for room mid-batch: %+v", qs)
				}
				return nil
			})
			rcv.kill()
			rcv = startReceiver(t, b.dir, tlsDir, typ)
			plan(rcv.address(t))

			tl := &tally{}
			read := func(want int) {
				t.Helper()
				waitFor(t, 30*time.Second, func() error {
					for {
						got, err := tl.count()
						if err != nil {
							t.Fatal(err)
						}
						if got >= want {
							return nil
						}
						m, err := next(10 * time.Millisecond)
						if err != nil {
							return fmt.Errorf("b's member has %d of %d messages: %w", got, want, err)
						}
						tl.add(m, false)
					}
				})
			}
			read(n)
			// A fence: a message published after the run arrives after
			// any duplicate of it would.
			if err := publish(ctx, ra, 2, 1, 0); err != nil {
				t.Fatal(err)
			}
			read(n + 1)
		})
	}
}

// childCluster makes a cluster CA, the node TLS directory of the agent
// named child (a process of its own, started later with startChild), and
// host h in this process with the shared channel of cfg: a cluster of h.
func childCluster(t *testing.T, child string, h *host, cfg channel.Config) (*cluster, string) {
	t.Helper()
	ca, err := certs.NewCA(certs.Options{Name: "test-ca"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.Issue(certs.Options{Name: child})
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := t.TempDir()
	if err := certs.WriteNode(tlsDir, node, ca); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ca: ca, hosts: []*host{h}}
	c.startRegistry(h)
	c.createShared(h, cfg)
	return c, tlsDir
}

// member joins r as its only consumer: a subscriber from the oldest
// message (pubsub) or a reader (stream). next returns the next message,
// or an error if none comes within d.
func member(t *testing.T, r *channel.Ring, typ channel.Type) (next func(d time.Duration) ([]byte, error), close func()) {
	t.Helper()
	var mu sync.Mutex
	var buf []byte
	wrap := func(f func(ctx context.Context, buf []byte) ([]byte, error)) func(time.Duration) ([]byte, error) {
		return func(d time.Duration) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			m, err := f(ctx, buf)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					err = errors.New("no message")
				}
				return nil, err
			}
			buf = m
			return append([]byte(nil), m...), nil
		}
	}
	if typ == channel.TypeStream {
		rd, err := r.NewReader(channel.ReaderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return wrap(rd.Next), func() { rd.Close() }
	}
	s, err := r.NewSubscriber(channel.SubscriberOptions{From: channel.StartOldest})
	if err != nil {
		t.Fatal(err)
	}
	return wrap(s.Next), func() { s.Close() }
}
