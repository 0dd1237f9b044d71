package channel

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T, cfg Config) *Ring {
	t.Helper()
	cfg = cfg.WithDefaults()
	mem, err := unix.Mmap(-1, 0, int(cfg.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	r, err := Format(mem, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestQuickPubSub(t *testing.T) {
	for _, pol := range []uint32{PolicyBlock, PolicyOverwrite} {
		r := newRing(t, Config{Capacity: 8192, MaxMessage: 1000, Policy: pol})
		s, err := r.NewSubscriber(SubscriberOptions{Idle: IdleDefault})
		if err != nil {
			t.Fatal(err)
		}
		p, err := r.NewPublisher(PublisherOptions{Idle: IdleDefault})
		if err != nil {
			t.Fatal(err)
		}
		const N = 20000
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1000)
			for i := 0; i < N; i++ {
				n := i % 1000
				if n < 8 {
					n = 8
				}
				binary.LittleEndian.PutUint64(buf, uint64(i))
				if err := p.Publish(context.Background(), buf[:n]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		var got []byte
		next := uint64(0)
		for next < N {
			got, err = s.Next(context.Background(), got)
			if err != nil {
				t.Fatal(err)
			}
			v := binary.LittleEndian.Uint64(got)
			if pol == PolicyBlock && v != next {
				t.Fatalf("got %d want %d", v, next)
			}
			if v < next {
				t.Fatalf("went back: %d < %d", v, next)
			}
			if pol == PolicyOverwrite && v-next != 0 {
				// lost count must explain the gap
			}
			next = v + 1
			if pol == PolicyOverwrite && s.Lost()+uint64(s.m.s.Count) != next {
				t.Fatalf("lost %d count %d next %d", s.Lost(), s.m.s.Count, next)
			}
		}
		wg.Wait()
		t.Logf("policy %d lost %d", pol, s.Lost())
	}
}

func TestQuickStream(t *testing.T) {
	r := newRing(t, Config{Type: TypeStream, Capacity: 8192, MaxMessage: 500})
	const N, R = 30000, 3
	var wg sync.WaitGroup
	seen := make([]int, N)
	var mu sync.Mutex
	total := 0
	for i := 0; i < R; i++ {
		rd, err := r.NewReader(ReaderOptions{Idle: IdleDefault})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b []byte
			for {
				mu.Lock()
				if total == N {
					mu.Unlock()
					return
				}
				mu.Unlock()
				var err error
				b, err = rd.TryNext(b)
				if err == ErrWouldBlock {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				v := binary.LittleEndian.Uint64(b)
				mu.Lock()
				seen[v]++
				total++
				mu.Unlock()
			}
		}()
	}
	p, _ := r.NewPublisher(PublisherOptions{Idle: IdleDefault})
	buf := make([]byte, 500)
	for i := 0; i < N; i++ {
		binary.LittleEndian.PutUint64(buf, uint64(i))
		if err := p.Publish(context.Background(), buf[:8+i%400]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("msg %d seen %d times", i, c)
		}
	}
}
