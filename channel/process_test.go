package channel

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
)

// Multi-process correctness: publishers and subscribers (or stream readers)
// in separate processes share one ring in a /dev/shm file. Every message is
// a pure function of (publisher, seq) with sizes from 0 to MaxMessage (see
// encodeMsg), and the 16 KiB capacity makes the ring wrap hundreds of
// times. Children check each message as it arrives (bytes, order per
// publisher, counts) and the parent checks the totals.

const procCapacity = 16 << 10

func TestProcessPubSub(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		pubs   int
		count  int      // messages per publisher
		idle   []string // one subscriber per entry
		pause  []int    // per subscriber: stop after this many messages until every publisher is done (0: never)
		excl   bool     // the one publisher joins as exclusive
		batch  []bool   // per publisher: publishes in batches
	}{
		{name: "block/batches/exclusive-1pub-2sub", policy: PolicyBlock, pubs: 1, count: 5000, idle: []string{"default", "sleep"}, excl: true, batch: []bool{true}},
		{name: "block/batches/3pub-2sub", policy: PolicyBlock, pubs: 3, count: 2000, idle: []string{"sleep", "default"}, batch: []bool{true, false, true}},
		{name: "overwrite/batches/2pub-2sub", policy: PolicyOverwrite, pubs: 2, count: 3000, idle: []string{"default", "sleep"}, pause: []int{0, 10}, batch: []bool{true, true}},
		{name: "block/exclusive-1pub-2sub", policy: PolicyBlock, pubs: 1, count: 5000, idle: []string{"default", "sleep"}, excl: true},
		{name: "overwrite/exclusive-1pub-2sub", policy: PolicyOverwrite, pubs: 1, count: 5000, idle: []string{"default", "sleep"}, pause: []int{0, 10}, excl: true},
		{name: "block/3pub-2sub", policy: PolicyBlock, pubs: 3, count: 2000, idle: []string{"sleep", "default"}},
		{name: "block/1pub-1sub", policy: PolicyBlock, pubs: 1, count: 3000, idle: []string{"default"}},
		{name: "overwrite/3pub-2sub", policy: PolicyOverwrite, pubs: 3, count: 2000, idle: []string{"default", "sleep"}, pause: []int{0, 10}},
		{name: "overwrite/2pub-3sub", policy: PolicyOverwrite, pubs: 2, count: 2000, idle: []string{"sleep", "default", "sleep"}, pause: []int{0, 0, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, path := newShmRing(t, Config{Policy: tc.policy, Capacity: procCapacity})
			counts := make([]int, tc.pubs)
			total := 0
			for i := range counts {
				counts[i] = tc.count
				total += tc.count
			}
			var subs []*child
			for i, idle := range tc.idle {
				env := []string{envRing + "=" + path, countsEnv(counts), envIdle + "=" + idle}
				if tc.pause != nil && tc.pause[i] > 0 {
					env = append(env, envPause+"="+strconv.Itoa(tc.pause[i]))
				}
				c := startChild(t, fmt.Sprintf("subscriber %d", i), "sub", env...)
				c.waitLine("READY") // joined before the first message
				subs = append(subs, c)
			}
			var pubs []*child
			for i := 0; i < tc.pubs; i++ {
				excl := "0"
				if tc.excl {
					excl = "1"
				}
				batch := "0"
				if tc.batch != nil && tc.batch[i] {
					batch = "1"
				}
				pubs = append(pubs, startChild(t, fmt.Sprintf("publisher %d", i), "pub", envRing+"="+path,
					envPub+"="+strconv.Itoa(i), envCount+"="+strconv.Itoa(tc.count), envIdle+"="+tc.idle[i%len(tc.idle)], envExcl+"="+excl, envBatch+"="+batch))
			}
			for _, c := range pubs {
				c.waitOK()
			}
			for _, c := range subs {
				c.release()
			}
			for i, c := range subs {
				c.waitOK()
				res := resultLine(t, c)
				got, lost := res[0], res[1]
				if got+lost != total {
					t.Errorf("%s: received %d + lost %d, want %d", c.name, got, lost, total)
				}
				if tc.policy == PolicyBlock && lost != 0 {
					t.Errorf("%s: lost %d messages with the block policy", c.name, lost)
				}
				// A subscriber parked while the others published
				// thousands of messages through a 16 KiB ring must
				// have been lapped.
				if tc.pause != nil && tc.pause[i] > 0 && lost == 0 {
					t.Errorf("%s: paused through %d messages and lost none", c.name, total-tc.pause[i])
				}
				t.Logf("%s: received %d, lost %d", c.name, got, lost)
			}
			if seq := pos(atomic.LoadUint64(&r.queues[0].Tail)).seq(); seq != uint32(total) {
				t.Errorf("tail sequence %d, want %d", seq, total)
			}
			if m := r.Members(); len(m) != 0 {
				t.Errorf("members left after every child closed: %+v", m)
			}
		})
	}
}

func TestProcessStream(t *testing.T) {
	tests := []struct {
		name    string
		writers int
		readers int
		count   int // messages per writer
		queue   int
		batch   bool // writers publish in batches
	}{
		{name: "batches/2writers-2readers", writers: 2, readers: 2, count: 2000, batch: true},
		{name: "2writers-3readers", writers: 2, readers: 3, count: 2000},
		{name: "1writer-2readers/queue1", writers: 1, readers: 2, count: 3000, queue: 1},
		{name: "3writers-1reader", writers: 3, readers: 1, count: 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, path := newShmRing(t, Config{Type: TypeStream, Capacity: procCapacity})
			max := int(r.Config().MaxMessage)
			counts := make([]int, tc.writers)
			for i := range counts {
				counts[i] = tc.count
			}
			q := envQueue + "=" + strconv.Itoa(tc.queue)
			idles := []string{"sleep", "default"}
			var readers []*child
			for i := 0; i < tc.readers; i++ {
				c := startChild(t, fmt.Sprintf("reader %d", i), "reader", envRing+"="+path, countsEnv(counts), q, envIdle+"="+idles[i%2])
				c.waitLine("READY")
				readers = append(readers, c)
			}
			var writers []*child
			for i := 0; i < tc.writers; i++ {
				batch := "0"
				if tc.batch {
					batch = "1"
				}
				writers = append(writers, startChild(t, fmt.Sprintf("writer %d", i), "pub", envRing+"="+path, q,
					envPub+"="+strconv.Itoa(i), envCount+"="+strconv.Itoa(tc.count), envIdle+"="+idles[(i+1)%2], envBatch+"="+batch))
			}
			for _, c := range writers {
				c.waitOK()
			}
			// Every message is committed: a reader that finds the queue
			// empty after the release has nothing left to compete for.
			for _, c := range readers {
				c.release()
			}
			for _, c := range readers {
				c.waitOK()
			}
			checkStreamDelivery(t, readers, counts, max, nil)
			qh := r.queues[tc.queue]
			head, tail, rel := atomic.LoadUint64(&qh.Head), atomic.LoadUint64(&qh.Tail), atomic.LoadUint64(&qh.Release)
			if head != tail || rel != tail {
				t.Errorf("queue %d: head %#x release %#x, want both at tail %#x", tc.queue, head, rel, tail)
			}
			if other := r.queues[1-tc.queue]; atomic.LoadUint64(&other.Tail) != atomic.LoadUint64(&other.Head) {
				t.Errorf("queue %d was written", 1-tc.queue)
			}
		})
	}
}

// checkStreamDelivery checks that the readers together received every
// message of counts exactly once, except those in skip.
func checkStreamDelivery(t *testing.T, readers []*child, counts []int, max int, skip map[[2]int]bool) {
	t.Helper()
	seen := map[[2]int]int{}
	unplaced := map[[2]int]int{}
	got := 0
	for _, c := range readers {
		placed, u, n := readerReport(t, c)
		if len(placed)+sum(u) != n {
			t.Errorf("%s: reported %d placed and %d unplaced messages of %d", c.name, len(placed), sum(u), n)
		}
		for _, m := range placed {
			seen[m]++
		}
		for k, v := range u {
			unplaced[k] += v
		}
		got += n
		t.Logf("%s: %d messages", c.name, n)
	}
	want := 0
	wantUnplaced := map[[2]int]int{}
	for pub, n := range counts {
		for seq := 0; seq < n; seq++ {
			if skip[[2]int{pub, seq}] {
				continue
			}
			want++
			size := msgSize(pub, seq, max)
			if size < seqMin {
				wantUnplaced[[2]int{pub, size}]++
				continue
			}
			if k := seen[[2]int{pub, seq}]; k != 1 {
				t.Errorf("publisher %d seq %d received %d times", pub, seq, k)
			}
			delete(seen, [2]int{pub, seq})
		}
	}
	for m, k := range seen {
		t.Errorf("publisher %d seq %d received %d times, but it was never published (or skipped)", m[0], m[1], k)
	}
	for k, n := range wantUnplaced {
		if unplaced[k] != n {
			t.Errorf("publisher %d: %d messages of %d bytes received, want %d", k[0], unplaced[k], k[1], n)
		}
		delete(unplaced, k)
	}
	for k, n := range unplaced {
		t.Errorf("publisher %d: %d unexpected messages of %d bytes", k[0], n, k[1])
	}
	if got != want {
		t.Errorf("readers received %d messages, want %d", got, want)
	}
}

func sum(m map[[2]int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestConfigDefaultsValid: the defaults of a small ring must pass Validate
// (MaxMessage defaulted to Capacity/4, which exceeds the largest payload
// the capacity allows by a frame header).
func TestConfigDefaultsValid(t *testing.T) {
	for _, c := range []uint64{MinCapacity, procCapacity, 256 << 10, 512 << 10, DefaultCapacity, MaxCapacity} {
		for _, typ := range []Type{TypePubSub, TypeStream} {
			cfg := Config{Type: typ, Capacity: c}.WithDefaults()
			if err := cfg.Validate(); err != nil {
				t.Errorf("capacity %d type %d: defaults %+v: %v", c, typ, cfg, err)
			}
		}
	}
}
