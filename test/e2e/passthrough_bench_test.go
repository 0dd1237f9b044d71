package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
)

// ringFiles are a channel's ring opened through the mount and its backing
// shm file opened directly, with an offset in the data region.
type ringFiles struct {
	passthrough bool
	mount       *os.File // <dir>/ring
	backing     *os.File // the "backing" file of config
	off         int64    // a page in queue 0's data region
}

// openRingFiles opens both views of an idle channel's ring.
func openRingFiles(t testing.TB, dir string) ringFiles {
	t.Helper()
	cfg, err := kv(filepath.Join(dir, "config"))
	if err != nil {
		t.Fatal(err)
	}
	rf := ringFiles{passthrough: cfg["passthrough"] == "1"}
	if cfg["passthrough"] != "0" && cfg["passthrough"] != "1" {
		t.Fatalf("config has passthrough %q, want 0 or 1", cfg["passthrough"])
	}
	if cfg["backing"] == "" {
		t.Fatalf("config names no backing file: %v", cfg)
	}
	for _, p := range []struct {
		f    **os.File
		path string
	}{{&rf.mount, filepath.Join(dir, "ring")}, {&rf.backing, cfg["backing"]}} {
		f, err := os.OpenFile(p.path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		*p.f = f
	}
	var w [8]byte
	if _, err := rf.backing.ReadAt(w[:], channel.OffDataOffset); err != nil {
		t.Fatal(err)
	}
	data := int64(binary.LittleEndian.Uint64(w[:]))
	page := int64(os.Getpagesize())
	// One page into the data region, page-aligned for the mmap case; the
	// default 1 MiB capacity leaves room for it.
	rf.off = (data+page-1)/page*page + page
	return rf
}

// BenchmarkRingPassthrough compares the ring file served through the
// mount with FUSE passthrough against its backing tmpfs file: pread and
// pwrite of 4 KiB and 16 B, and a page mapped, touched (read and written
// back) and unmapped. With passthrough the kernel maps the backing file
// directly, so a mapping costs about the same through either; pread and
// pwrite of the ring file reach the agent, which bounds them by the
// ring's size (docs/limits.md), so they cost a FUSE round trip. The
// summary line gives mount/tmpfs for each. pwrite writes back the bytes just read from
// the same place, so the idle ring is unchanged (checked at the end).
//
//	go test ./test/e2e -run '^$' -bench RingPassthrough -benchtime 1s
func BenchmarkRingPassthrough(b *testing.B) {
	a := startAgent(b)
	dir := a.mkChan(b, "bench/passthrough", "")
	rf := openRingFiles(b, dir)
	if !rf.passthrough {
		b.Log("config says passthrough 0: the mount's figures are the agent serving reads and writes, and mmap through the mount is skipped (not shared memory)")
	}
	before := make([]byte, 64<<10)
	if _, err := rf.backing.ReadAt(before, rf.off); err != nil {
		b.Fatal(err)
	}

	nsop := map[string]float64{} // last run of each sub-benchmark
	// record keeps a run's ns/op; on a tmpfs run it also reports the
	// ratio to the mount's run of the same op, which ran just before.
	record := func(b *testing.B, name string) {
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		nsop[name] = ns
		if op, ok := strings.CutSuffix(name, "/tmpfs"); ok && nsop[op+"/mount"] > 0 {
			b.ReportMetric(nsop[op+"/mount"]/ns, "mount/tmpfs")
		}
	}
	targets := []struct {
		name string
		f    *os.File
	}{{"mount", rf.mount}, {"tmpfs", rf.backing}}
	for _, size := range []int{4096, 16} {
		for _, op := range []string{"pread", "pwrite"} {
			for _, tg := range targets {
				name := fmt.Sprintf("%s-%dB/%s", op, size, tg.name)
				b.Run(name, func(b *testing.B) {
					buf := make([]byte, size)
					if _, err := tg.f.ReadAt(buf, rf.off); err != nil {
						b.Fatal(err)
					}
					fd := int(tg.f.Fd())
					io := unix.Pread
					if op == "pwrite" {
						io = unix.Pwrite
					}
					b.SetBytes(int64(size))
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if n, err := io(fd, buf, rf.off); n != size || err != nil {
							b.Fatalf("%s: %d bytes, %v", op, n, err)
						}
					}
					b.StopTimer()
					record(b, name)
				})
			}
		}
	}
	for _, tg := range targets {
		name := "mmap-touch/" + tg.name
		if tg.name == "mount" && !rf.passthrough {
			continue
		}
		b.Run(name, func(b *testing.B) {
			fd := int(tg.f.Fd())
			page := os.Getpagesize()
			for i := 0; i < b.N; i++ {
				mem, err := unix.Mmap(fd, rf.off, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
				if err != nil {
					b.Fatal(err)
				}
				// A write fault that leaves the word as it was (a plain
				// x = x store would be compiled away).
				atomic.AddUint32((*uint32)(unsafe.Pointer(&mem[page/2])), 0)
				if err := unix.Munmap(mem); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			record(b, name)
		})
	}

	after := make([]byte, len(before))
	if _, err := rf.backing.ReadAt(after, rf.off); err != nil {
		b.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		b.Fatal("the benchmark changed the ring's data region")
	}
	var ops []string
	for name := range nsop {
		if op, ok := strings.CutSuffix(name, "/mount"); ok {
			ops = append(ops, op)
		}
	}
	sort.Strings(ops)
	var sum strings.Builder
	for _, op := range ops {
		m, f := nsop[op+"/mount"], nsop[op+"/tmpfs"]
		if f > 0 {
			fmt.Fprintf(&sum, "\n  %-14s mount %8.0f ns/op  tmpfs %8.0f ns/op  mount/tmpfs %.2f", op, m, f, m/f)
		}
	}
	if sum.Len() > 0 {
		// Printed, not logged: a parent benchmark's log is not shown.
		fmt.Printf("ring file through the mount vs its backing tmpfs file (passthrough %v):%s\n", rf.passthrough, sum.String())
	}
}

var (
	rxWrite    = regexp.MustCompile(`rx \d+: WRITE `)
	rxRead     = regexp.MustCompile(`rx \d+: READ `)
	rxGetxattr = regexp.MustCompile(`rx \d+: GETXATTR `)
	// A one-byte WRITE: how the test's writes to pub show in the log.
	rxWrite1 = regexp.MustCompile(`rx \d+: WRITE n\d+ \{Fh \d+ \[\d+ \+1\)`)
)

// TestRingPassthrough checks that the ring file is served by FUSE
// passthrough: it is the backing shm file (writes through either are seen
// through the other, mappings too); its reads and writes reach the agent,
// which keeps them within the ring (a write past the end fails with EFBIG
// and the backing file keeps its size); and extended attributes are
// refused at once, so that the kernel stops asking the agent about
// security.capability on every write. The agent's FUSE debug log shows
// which requests reached it.
func TestRingPassthrough(t *testing.T) {
	a := startAgent(t, "--debug", "--log-level", "debug")
	dir := a.mkChan(t, "pt/ch", "")
	rf := openRingFiles(t, dir)
	if !rf.passthrough {
		t.Skip("config says passthrough 0: this kernel (or an agent without CAP_SYS_ADMIN) lacks FUSE passthrough (Linux 6.9+)")
	}
	page := os.Getpagesize()

	t.Run("same-file", func(t *testing.T) {
		orig := make([]byte, 64)
		if _, err := rf.backing.ReadAt(orig, rf.off); err != nil {
			t.Fatal(err)
		}
		defer rf.backing.WriteAt(orig, rf.off) // the ring is idle: put its bytes back
		for _, c := range []struct {
			name     string
			from, to *os.File
		}{{"mount-to-tmpfs", rf.mount, rf.backing}, {"tmpfs-to-mount", rf.backing, rf.mount}} {
			want := []byte(fmt.Sprintf("%-64s", "written through "+c.name))
			if _, err := c.from.WriteAt(want, rf.off); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if _, err := c.to.ReadAt(got, rf.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: pwrite of %q, pread gives %q", c.name, want, got)
			}
		}
		// A mapping through the mount is the shm file's memory.
		viaMount := mapAt(t, rf.mount, rf.off, page)
		direct := mapAt(t, rf.backing, rf.off, page)
		copy(viaMount[:16], "mapped via mount")
		if got := string(direct[:16]); got != "mapped via mount" {
			t.Errorf("direct mapping sees %q after a store through the mount's mapping", got)
		}
		copy(direct[16:32], "mapped directly!")
		if got := string(viaMount[16:32]); got != "mapped directly!" {
			t.Errorf("mount's mapping sees %q after a store through the direct one", got)
		}
	})

	t.Run("ring-io-bounded", func(t *testing.T) {
		// The FUSE log reaches a.log through a pipe, late: lines of earlier
		// requests (reading config, say) can arrive after a mark taken now.
		// So first write once to pub and wait for that WRITE: everything
		// logged before it has arrived, and the mark is taken after it.
		pub := filepath.Join(dir, "pub")
		before := len(rxWrite.FindAllString(a.log.String(), -1))
		if err := writeOnce(pub, []byte("x")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() error {
			if n := len(rxWrite.FindAllString(a.log.String(), -1)); n <= before {
				return fmt.Errorf("sentinel WRITE not logged yet (%d WRITEs)", n)
			}
			return nil
		})
		mark := len(a.log.String())
		const ops, pubs = 200, 20
		buf := make([]byte, 4096)
		for i := 0; i < ops; i++ {
			if _, err := rf.mount.ReadAt(buf, rf.off); err != nil {
				t.Fatal(err)
			}
			if _, err := rf.mount.WriteAt(buf, rf.off); err != nil {
				t.Fatal(err)
			}
		}
		// Extended attributes: an error, never data. ENOSYS from the
		// agent reaches the caller as EOPNOTSUPP (== ENOTSUP on Linux).
		ring := filepath.Join(dir, "ring")
		for _, attr := range []string{"security.capability", "user.shimmy", "trusted.x"} {
			for range 3 {
				n, err := unix.Getxattr(ring, attr, make([]byte, 256))
				if !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.ENODATA) {
					t.Errorf("getxattr %s %s: %d bytes, %v; want ENOTSUP or ENODATA", ring, attr, n, err)
				}
			}
		}
		// Writes the agent does serve, so the log is known to show them.
		for i := 0; i < pubs; i++ {
			if err := writeOnce(pub, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		// The FUSE log reaches a.log through a pipe, in order: once the
		// last write to pub is there, so is every request before it.
		var log string
		eventually(t, 10*time.Second, func() error {
			log = a.log.String()[mark:]
			if n := len(rxWrite1.FindAllString(log, -1)); n < pubs {
				return fmt.Errorf("%d writes to pub logged, want %d", n, pubs)
			}
			return nil
		})
		if n := len(rxWrite.FindAllString(log, -1)); n != pubs+ops {
			t.Errorf("%d WRITE requests reached the agent; want the %d writes of pub and the %d of ring", n, pubs, ops)
		}
		if n := len(rxRead.FindAllString(log, -1)); n != ops {
			t.Errorf("%d READ requests reached the agent for %d preads of ring; want each", n, ops)
		}
		// dd seek=2 bs=1M count=16 on a 1 MiB channel: refused, no growth.
		fi, err := rf.backing.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rf.mount.WriteAt(make([]byte, 1<<20), 2<<20); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("write past the ring's end: %v, want EFBIG", err)
		}
		if after, err := rf.backing.Stat(); err != nil || after.Size() != fi.Size() {
			t.Errorf("backing file after a write past the end: %v, %v; was %d bytes", after.Size(), err, fi.Size())
		}
		// Over the agent's whole life: at most one question about
		// extended attributes, after which the kernel knows the answer.
		n := len(rxGetxattr.FindAllString(a.log.String(), -1))
		if n > 1 {
			t.Errorf("%d GETXATTR requests reached the agent; want at most 1 for the mount's life", n)
		}
		t.Logf("agent saw %d GETXATTR requests in all", n)
	})
}

// mapAt maps size bytes of f at off, shared.
func mapAt(t testing.TB, f *os.File, off int64, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(int(f.Fd()), off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", f.Name(), err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}
