package mirror

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// Environment of an exporting agent re-executed from the test binary.
const (
	envExporterDir  = "SHIMMY_MIRROR_EXPORTER_DIR"  // its state directory
	envExporterTLS  = "SHIMMY_MIRROR_EXPORTER_TLS"  // its node TLS directory
	envExporterPeer = "SHIMMY_MIRROR_EXPORTER_PEER" // host b's mirror address
	envExporterDie  = "SHIMMY_MIRROR_EXPORTER_DIE"  // SIGKILL itself at this take from the ring (0: never)
)

// exporterConfig is a's stream channel: small, so that records wait in
// the ring for a's readers and the mirror's credit.
func exporterConfig() channel.Config {
	return channel.Config{Type: channel.TypeStream, Capacity: 64 << 10, MaxMessage: 256, MemberSlots: 1024}
}

// runExporter is host a as an agent process: a registry on its state
// directory (the stream channel created on the first run, recovered
// after), a mirror that dials host b and exports a's records to it. With
// envExporterDie it kills itself with SIGKILL just after its n-th take,
// before the record is anywhere but in its own memory.
func runExporter() error {
	if die, _ := strconv.Atoi(os.Getenv(envExporterDie)); die > 0 {
		var mu sync.Mutex
		takes := 0
		testHookTook = func() {
			mu.Lock()
			defer mu.Unlock()
			if takes++; takes == die {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal ends the process before anything else runs here
			}
		}
	}
	return runChild("a", os.Getenv(envExporterDir), os.Getenv(envExporterTLS), exporterConfig(), Peer{Name: "b", Addr: os.Getenv(envExporterPeer)})
}

// ledger counts every record any reader took, cluster-wide.
type ledger struct {
	mu   sync.Mutex
	seen map[[2]uint32]int
	dups int
	err  error
}

func (l *ledger) add(pub, seq uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[[2]uint32]int{}
	}
	l.seen[[2]uint32{pub, seq}]++
	if l.seen[[2]uint32{pub, seq}] > 1 {
		l.dups++
		if l.err == nil {
			l.err = fmt.Errorf("publisher %d: record %d taken %d times", pub, seq, l.seen[[2]uint32{pub, seq}])
		}
	}
}

// missing returns how many of the records 0..n[i]-1 of each publisher
// pubs[i] no reader took, and the first error.
func (l *ledger) missing(pubs []uint32, n []int) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for i, p := range pubs {
		for s := range n[i] {
			if l.seen[[2]uint32{p, uint32(s)}] == 0 {
				k++
			}
		}
	}
	return k, l.err
}

// takeAll runs a stream reader on r until ctx ends: every record it takes
// goes into the ledger, and within the reader each publisher's records
// must come in their order (competing readers each see a subsequence).
// A reader with slow set rests a millisecond after every 8 records.
func takeAll(ctx context.Context, t *testing.T, r *channel.Ring, l *ledger, wg *sync.WaitGroup, slow bool) {
	t.Helper()
	rd, err := r.NewReader(channel.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tl := &tally{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer rd.Close()
		var buf []byte
		for {
			b, err := rd.Next(ctx, buf)
			if err != nil {
				if ctx.Err() == nil {
					l.mu.Lock()
					l.err = fmt.Errorf("reader: %w", err)
					l.mu.Unlock()
				}
				return
			}
			buf = b
			tl.add(b, true)
			if _, err := tl.count(); err != nil {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
				return
			}
			pub, seq, _ := parse(b)
			l.add(pub, seq)
			if got, _ := tl.count(); slow && got%8 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
}

// TestExporterKilled: the exporting agent (a process of its own) is
// killed with SIGKILL again and again while two publishers write a stream
// that two readers on its own host and one on host b take, and started
// again each time: every record is taken exactly once cluster-wide, each
// publisher's records in order within each reader. The agent dies either
// at a chosen take (just after it took a record from the ring, before the
// record is anywhere else) or at a random instant.
func TestExporterKilled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &host{name: "a", dir: testenv.ShmDir(t, "mirror-a-")}
	b := &host{name: "b", dir: testenv.ShmDir(t, "mirror-b-")}
	c, tlsDir := childCluster(t, "a", b, exporterConfig())
	c.startMirror(b)
	t.Cleanup(func() { c.stopHost(b) })
	if err := b.m.Apply(Plan{Peers: []Peer{{Name: "a"}}, Shares: []Share{{Namespace: testNS, Channel: testCh, Peers: []string{"a"}}}}); err != nil {
		t.Fatal(err)
	}
	start := func(die int) *receiver {
		x := startChild(t, envExporterDir+"="+a.dir, envExporterTLS+"="+tlsDir, envExporterPeer+"="+b.addr,
			envExporterDie+"="+strconv.Itoa(die))
		x.address(t)
		return x
	}
	x := start(0)

	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, stopReaders := context.WithCancel(ctx)
	defer stopReaders()
	l := &ledger{}
	ra, rb := mapRing(t, a), mapRing(t, b)
	// a's readers fall behind the publishers: records wait in a's ring,
	// and the exporter takes its share of them.
	takeAll(rctx, t, ra, l, &wg, true)
	takeAll(rctx, t, ra, l, &wg, true)
	takeAll(rctx, t, rb, l, &wg, false)

	// The publishers write until the kills are over, paced so that the
	// run spans them.
	pubs := []uint32{1, 2}
	pctx, stopPublishers := context.WithCancel(ctx)
	defer stopPublishers()
	wrote := make([]int, len(pubs))
	perr := make(chan error, len(pubs))
	for i, p := range pubs {
		go func() {
			pb, err := ra.NewPublisher(channel.PublisherOptions{})
			if err != nil {
				perr <- err
				return
			}
			defer pb.Close()
			for pctx.Err() == nil {
				if err := pb.Publish(pctx, message(p, uint32(wrote[i]))); err != nil {
					if pctx.Err() != nil {
						break
					}
					perr <- fmt.Errorf("publish %d/%d: %w", p, wrote[i], err)
					return
				}
				if wrote[i]++; wrote[i]%32 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			perr <- nil
		}()
	}

	// b's reader must be getting records through the mirror before each
	// kill: the exporter has takes in flight.
	bTook := func() uint64 { return rb.QueueStats(0).Messages }
	diag := func() string {
		_, lerr := l.missing(nil, nil)
		return fmt.Sprintf("readers: %v; b's link %+v; a's queue %+v; b's %+v; a's members %d", lerr, b.stat("a"), ra.QueueStats(0), rb.QueueStats(0), len(ra.Members()))
	}
	for i := 0; i < 16; i++ {
		before := bTook()
		waitFor(t, 30*time.Second, func() error {
			if bTook() <= before {
				return fmt.Errorf("no record reached b since restart %d: %s", i, diag())
			}
			return nil
		})
		if i%2 == 0 {
			x.kill()
			x = start(1 + rand.IntN(20))
			select {
			case <-x.done:
			case <-time.After(30 * time.Second):
				t.Fatalf("the exporter never reached its dying take: %s", diag())
			}
		} else {
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			x.kill()
		}
		x = start(0)
	}
	stopPublishers()
	for range pubs {
		if err := <-perr; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("publishers wrote %v records", wrote)
	waitFor(t, 60*time.Second, func() error {
		k, err := l.missing(pubs, wrote)
		if err != nil {
			t.Fatal(err)
		}
		if k != 0 {
			return fmt.Errorf("%d of %d records never taken by any reader", k, wrote[0]+wrote[1])
		}
		return nil
	})
	// A fence: a record published after the run reaches a reader after
	// any duplicate of the run would have.
	if err := publish(ctx, ra, 3, 1, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() error {
		if k, _ := l.missing([]uint32{3}, []int{1}); k != 0 {
			return errors.New("the fence record was not taken")
		}
		return nil
	})
	stopReaders()
	wg.Wait()
	if _, err := l.missing(pubs, wrote); err != nil {
		t.Fatal(err)
	}
	x.kill()
}
