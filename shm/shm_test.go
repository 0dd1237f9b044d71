package shm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// shmDir makes a per-test directory on /dev/shm (t.TempDir is not tmpfs).
func shmDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(DefaultDir, "shmtest")
	if err != nil {
		t.Fatalf("MkdirTemp: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// closeSeg closes s at test end, reporting errors.
func closeSeg(t *testing.T, s *Segment) {
	t.Helper()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// newSysV creates a private SysV segment and removes it at test end.
func newSysV(t *testing.T, size int64, opts Options) *Segment {
	t.Helper()
	s, err := CreateSysV(unix.IPC_PRIVATE, size, opts)
	if err != nil {
		t.Fatalf("CreateSysV: %v", err)
	}
	t.Cleanup(func() {
		s.Remove()
		s.Close()
	})
	return s
}

// randomKey returns a SysV key unlikely to collide with anything else.
func randomKey() int { return int(rand.Int32N(1<<30)) + 1<<30 }

// rmKey removes whatever segment has key at test end.
func rmKey(t *testing.T, key int) {
	t.Cleanup(func() {
		if id, err := unix.SysvShmGet(key, 0, 0); err == nil {
			unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		}
	})
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func meminfo(t *testing.T, key string) int64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Skipf("no /proc/meminfo: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{POSIX: "posix", SysV: "sysv", 0: "Kind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestRoundUp(t *testing.T) {
	ps := PageSize()
	tests := []struct{ in, want int64 }{
		{-5, 0}, {0, 0}, {1, ps}, {ps - 1, ps}, {ps, ps}, {ps + 1, 2 * ps}, {10 * ps, 10 * ps},
	}
	for _, tc := range tests {
		if got := RoundUp(tc.in); got != tc.want {
			t.Errorf("RoundUp(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
	if got := RoundUpTo(1<<63-1, 4096); got != -1 {
		t.Errorf("RoundUpTo overflow = %d, want -1", got)
	}
}

func TestCreateOpenPOSIX(t *testing.T) {
	dir := shmDir(t)
	size := 4 * PageSize()
	s, err := CreatePOSIX("chan", size, Options{Dir: dir, Mode: 0o640})
	if err != nil {
		t.Fatalf("CreatePOSIX: %v", err)
	}
	closeSeg(t, s)
	path := filepath.Join(dir, "chan")
	if s.Kind() != POSIX || s.Path() != path || s.ID() != -1 || s.Size() != size || len(s.Bytes()) != int(size) || s.File() == nil {
		t.Fatalf("bad segment: kind %v path %q id %d size %d len %d file %v", s.Kind(), s.Path(), s.ID(), s.Size(), len(s.Bytes()), s.File())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size || fi.Mode().Perm() != 0o640 {
		t.Errorf("file size %d mode %v, want %d -rw-r-----", fi.Size(), fi.Mode().Perm(), size)
	}
	// Memory is reserved up front (fallocate), not lazily.
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < size {
		t.Errorf("allocated %d bytes, want >= %d", st.Blocks*512, size)
	}

	copy(s.Bytes()[size-5:], "hello")
	o, err := OpenPOSIX(path, size)
	if err != nil {
		t.Fatalf("OpenPOSIX: %v", err)
	}
	closeSeg(t, o)
	if got := string(o.Bytes()[size-5:]); got != "hello" {
		t.Errorf("OpenPOSIX sees %q, want hello", got)
	}
	// Default dir and mode.
	name := fmt.Sprintf("shmtest-default-%d", os.Getpid())
	d, err := CreatePOSIX(name, PageSize(), Options{Exclusive: true})
	if err != nil {
		t.Fatalf("CreatePOSIX default dir: %v", err)
	}
	t.Cleanup(func() { d.Remove() })
	closeSeg(t, d)
	if fi, err := os.Stat(filepath.Join(DefaultDir, name)); err != nil || fi.Mode().Perm() != DefaultMode {
		t.Errorf("default object: %v, %v", fi, err)
	}
}

func TestTwoMappingsShareMemory(t *testing.T) {
	size := 2 * PageSize()
	dir := shmDir(t)
	tests := []struct {
		name string
		open func(t *testing.T) (*Segment, *Segment)
	}{
		{"posix create+open", func(t *testing.T) (*Segment, *Segment) {
			a, err := CreatePOSIX("a", size, Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			b, err := OpenPOSIX(a.Path(), 0)
			if err != nil {
				t.Fatal(err)
			}
			return a, b
		}},
		{"posix create twice", func(t *testing.T) (*Segment, *Segment) {
			a, err := CreatePOSIX("b", size, Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			b, err := CreatePOSIX("b", size, Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			return a, b
		}},
		{"sysv create+attach", func(t *testing.T) (*Segment, *Segment) {
			a := newSysV(t, size, Options{})
			b, err := AttachSysV(a.ID(), size)
			if err != nil {
				t.Fatal(err)
			}
			return a, b
		}},
		{"sysv by key twice", func(t *testing.T) (*Segment, *Segment) {
			key := randomKey()
			rmKey(t, key)
			a, err := CreateSysV(key, size, Options{})
			if err != nil {
				t.Fatal(err)
			}
			b, err := CreateSysV(key, size, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if a.ID() != b.ID() {
				t.Errorf("ids differ: %d vs %d", a.ID(), b.ID())
			}
			return a, b
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.open(t)
			closeSeg(t, a)
			closeSeg(t, b)
			if &a.Bytes()[0] == &b.Bytes()[0] {
				t.Fatal("both segments share one mapping; want two")
			}
			a.Bytes()[0] = 0xAB
			b.Bytes()[size-1] = 0xCD
			if b.Bytes()[0] != 0xAB || a.Bytes()[size-1] != 0xCD {
				t.Errorf("writes not shared: b[0]=%#x a[last]=%#x", b.Bytes()[0], a.Bytes()[size-1])
			}
		})
	}
}

const helperEnv = "SHM_TEST_HELPER"

// TestHelperProcess is the child side of TestCrossProcess: it attaches to the
// segment named in $SHM_TEST_HELPER, checks the parent's greeting and writes
// a byte pattern after it.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	kind, target, _ := strings.Cut(spec, ":")
	var s *Segment
	var err error
	switch kind {
	case "posix":
		s, err = OpenPOSIX(target, 0)
	case "sysv":
		var id int
		if id, err = strconv.Atoi(target); err == nil {
			s, err = AttachSysV(id, 0)
		}
	default:
		err = fmt.Errorf("bad spec %q", spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	b := s.Bytes()
	if !bytes.HasPrefix(b, []byte("parent!!")) {
		fmt.Fprintf(os.Stderr, "helper: missing greeting, got %q\n", b[:8])
		os.Exit(3)
	}
	for i := 8; i < len(b); i++ {
		b[i] = pattern(i)
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(4)
	}
	os.Exit(0)
}

func pattern(i int) byte { return byte(i*7 + 1) }

func TestCrossProcess(t *testing.T) {
	size := 3 * PageSize()
	dir := shmDir(t)
	tests := []struct {
		name   string
		create func(t *testing.T) (seg *Segment, spec string)
	}{
		{"posix", func(t *testing.T) (*Segment, string) {
			s, err := CreatePOSIX("xproc", size, Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			closeSeg(t, s)
			return s, "posix:" + s.Path()
		}},
		{"sysv", func(t *testing.T) (*Segment, string) {
			s := newSysV(t, size, Options{})
			return s, "sysv:" + strconv.Itoa(s.ID())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, spec := tc.create(t)
			copy(s.Bytes(), "parent!!")
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+spec)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("helper failed: %v\n%s", err, out)
			}
			b := s.Bytes()
			for i := 8; i < len(b); i++ {
				if b[i] != pattern(i) {
					t.Fatalf("byte %d = %#x, want %#x from child", i, b[i], pattern(i))
				}
			}
		})
	}
}

func TestNameValidation(t *testing.T) {
	dir := shmDir(t)
	tests := []struct {
		name string
		ok   bool
	}{
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/abs", false},
		{"../escape", false},
		{"nul\x00byte", false},
		{strings.Repeat("x", 256), false},
		{strings.Repeat("x", 255), true},
		{"ring-0.buf", true},
		{"...", true},
		{".hidden", true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%.20q", tc.name), func(t *testing.T) {
			s, err := CreatePOSIX(tc.name, PageSize(), Options{Dir: dir, Exclusive: true})
			if !tc.ok {
				wantErr(t, err, ErrInvalidName)
				return
			}
			if err != nil {
				t.Fatalf("CreatePOSIX(%q): %v", tc.name, err)
			}
			closeSeg(t, s)
			if filepath.Dir(s.Path()) != dir {
				t.Errorf("created %s outside %s", s.Path(), dir)
			}
		})
	}
}

func TestSizeValidation(t *testing.T) {
	dir := shmDir(t)
	ps := PageSize()
	tests := []struct {
		size int64
		ok   bool
	}{
		{-ps, false},
		{-1, false},
		{0, false},
		{1, false},
		{ps - 1, false},
		{ps + 1, false},
		{ps + ps/2, false},
		{ps, true},
		{16 * ps, true},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprintf("posix/%d", tc.size), func(t *testing.T) {
			s, err := CreatePOSIX(fmt.Sprintf("size%d", i), tc.size, Options{Dir: dir})
			if !tc.ok {
				wantErr(t, err, ErrInvalidSize)
				if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("size%d", i))); err == nil {
					t.Error("invalid size left a file behind")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			closeSeg(t, s)
			if s.Size() != tc.size {
				t.Errorf("Size() = %d, want %d", s.Size(), tc.size)
			}
		})
		t.Run(fmt.Sprintf("sysv/%d", tc.size), func(t *testing.T) {
			if !tc.ok {
				_, err := CreateSysV(unix.IPC_PRIVATE, tc.size, Options{})
				wantErr(t, err, ErrInvalidSize)
				return
			}
			if s := newSysV(t, tc.size, Options{}); s.Size() != tc.size {
				t.Errorf("Size() = %d, want %d", s.Size(), tc.size)
			}
		})
	}
}

func TestExclusive(t *testing.T) {
	dir := shmDir(t)
	ps := PageSize()
	s, err := CreatePOSIX("excl", ps, Options{Dir: dir, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	closeSeg(t, s)
	_, err = CreatePOSIX("excl", ps, Options{Dir: dir, Exclusive: true})
	wantErr(t, err, ErrExists)

	key := randomKey()
	rmKey(t, key)
	v, err := CreateSysV(key, ps, Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	closeSeg(t, v)
	_, err = CreateSysV(key, ps, Options{Exclusive: true})
	wantErr(t, err, ErrExists)
}

func TestTooSmall(t *testing.T) {
	dir := shmDir(t)
	ps := PageSize()
	small, err := CreatePOSIX("small", ps, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	closeSeg(t, small)
	key := randomKey()
	rmKey(t, key)
	smallV, err := CreateSysV(key, ps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	closeSeg(t, smallV)
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		fn   func() (*Segment, error)
	}{
		{"CreatePOSIX existing", func() (*Segment, error) { return CreatePOSIX("small", 2*ps, Options{Dir: dir}) }},
		{"OpenPOSIX minSize", func() (*Segment, error) { return OpenPOSIX(small.Path(), ps+1) }},
		{"OpenPOSIX empty", func() (*Segment, error) { return OpenPOSIX(empty, 0) }},
		{"CreateSysV existing key", func() (*Segment, error) { return CreateSysV(key, 2*ps, Options{}) }},
		{"AttachSysV minSize", func() (*Segment, error) { return AttachSysV(smallV.ID(), ps+1) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.fn()
			wantErr(t, err, ErrTooSmall)
			t.Log(err)
		})
	}
	// The existing object was not resized by the failed create.
	if fi, err := os.Stat(small.Path()); err != nil || fi.Size() != ps {
		t.Errorf("existing object changed: %v %v", fi, err)
	}
	// A bigger existing object is reused and mapped whole.
	big, err := CreatePOSIX("big", 3*ps, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	closeSeg(t, big)
	again, err := CreatePOSIX("big", ps, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	closeSeg(t, again)
	if again.Size() != 3*ps {
		t.Errorf("reused object Size() = %d, want %d", again.Size(), 3*ps)
	}
}

func TestNotFound(t *testing.T) {
	dir := shmDir(t)
	tests := []struct {
		name string
		fn   func() (*Segment, error)
	}{
		{"OpenPOSIX missing", func() (*Segment, error) { return OpenPOSIX(filepath.Join(dir, "nope"), 0) }},
		{"CreatePOSIX missing dir", func() (*Segment, error) {
			return CreatePOSIX("x", PageSize(), Options{Dir: filepath.Join(dir, "nodir")})
		}},
		{"AttachSysV bogus id", func() (*Segment, error) { return AttachSysV(0x7ffffff0, 0) }},
		{"AttachSysV negative id", func() (*Segment, error) { return AttachSysV(-1, 0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.fn()
			wantErr(t, err, ErrNotFound)
		})
	}
}

func TestNotShared(t *testing.T) {
	tmp := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(tmp, &sfs); err != nil {
		t.Fatal(err)
	}
	if shared, _ := fsKind(&sfs); shared {
		t.Skipf("t.TempDir() %s is itself tmpfs; cannot test a non-shared file", tmp)
	}
	regular := filepath.Join(tmp, "regular")
	if err := os.WriteFile(regular, make([]byte, PageSize()), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := shmDir(t)
	if err := os.Symlink(regular, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fn   func() (*Segment, error)
	}{
		{"OpenPOSIX regular file on disk", func() (*Segment, error) { return OpenPOSIX(regular, 0) }},
		{"OpenPOSIX symlink to disk", func() (*Segment, error) { return OpenPOSIX(filepath.Join(dir, "link"), 0) }},
		{"OpenPOSIX directory", func() (*Segment, error) { return OpenPOSIX(dir, 0) }},
		{"OpenPOSIX /dev/null", func() (*Segment, error) { return OpenPOSIX("/dev/null", 0) }},
		{"CreatePOSIX in disk dir", func() (*Segment, error) { return CreatePOSIX("x", PageSize(), Options{Dir: tmp}) }},
		{"CreatePOSIX over symlink", func() (*Segment, error) { return CreatePOSIX("link", PageSize(), Options{Dir: dir}) }},
		{"CreatePOSIX over directory", func() (*Segment, error) {
			return CreatePOSIX("subdir", PageSize(), Options{Dir: dir})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.fn()
			wantErr(t, err, ErrNotShared)
			t.Log(err)
		})
	}
}

func TestRemove(t *testing.T) {
	dir := shmDir(t)
	ps := PageSize()
	t.Run("posix", func(t *testing.T) {
		s, err := CreatePOSIX("rm", ps, Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		closeSeg(t, s)
		s.Bytes()[0] = 42
		if err := s.Remove(); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		_, err = OpenPOSIX(s.Path(), 0)
		wantErr(t, err, ErrNotFound)
		if s.Bytes()[0] != 42 {
			t.Error("mapping lost after Remove")
		}
		wantErr(t, s.Remove(), ErrNotFound)
	})
	t.Run("posix replaced", func(t *testing.T) {
		s, err := CreatePOSIX("rep", ps, Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		closeSeg(t, s)
		if err := os.Remove(s.Path()); err != nil {
			t.Fatal(err)
		}
		n, err := CreatePOSIX("rep", ps, Options{Dir: dir, Exclusive: true})
		if err != nil {
			t.Fatal(err)
		}
		closeSeg(t, n)
		wantErr(t, s.Remove(), ErrNotFound)
		if _, err := os.Stat(n.Path()); err != nil {
			t.Errorf("Remove of stale segment deleted the new object: %v", err)
		}
	})
	t.Run("sysv", func(t *testing.T) {
		s, err := CreateSysV(unix.IPC_PRIVATE, ps, Options{})
		if err != nil {
			t.Fatal(err)
		}
		closeSeg(t, s)
		s.Bytes()[0] = 42
		if err := s.Remove(); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		// Still attached here, but marked for removal: no new attaches.
		_, err = AttachSysV(s.ID(), 0)
		wantErr(t, err, ErrNotFound)
		if s.Bytes()[0] != 42 {
			t.Error("mapping lost after Remove")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Last detach freed it.
		_, err = AttachSysV(s.ID(), 0)
		wantErr(t, err, ErrNotFound)
		wantErr(t, s.Remove(), ErrNotFound)
	})
}

func TestCloseIdempotent(t *testing.T) {
	dir := shmDir(t)
	p, err := CreatePOSIX("close", PageSize(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v, err := CreateSysV(unix.IPC_PRIVATE, PageSize(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Segment{p, v} {
		t.Run(s.Kind().String(), func(t *testing.T) {
			for i := range 3 {
				if err := s.Close(); err != nil {
					t.Fatalf("Close #%d: %v", i+1, err)
				}
			}
			if s.Bytes() != nil {
				t.Error("Bytes() not nil after Close")
			}
			if err := s.Remove(); err != nil {
				t.Fatalf("Remove after Close: %v", err)
			}
		})
	}
}

func TestHugePagesWrongDir(t *testing.T) {
	_, err := CreatePOSIX("huge", 2<<20, Options{Dir: shmDir(t), HugePages: true})
	wantErr(t, err, ErrHugePages)
	t.Log(err)
}

func TestSysVHugePagesUnavailable(t *testing.T) {
	over, _ := os.ReadFile("/proc/sys/vm/nr_overcommit_hugepages")
	if n := meminfo(t, "HugePages_Free"); n > 0 || strings.TrimSpace(string(over)) != "0" {
		t.Skipf("huge pages are available (free %d, overcommit %q)", n, over)
	}
	hp, err := HugePageSize()
	if err != nil {
		t.Skipf("no huge page size: %v", err)
	}
	_, err = CreateSysV(unix.IPC_PRIVATE, hp, Options{HugePages: true})
	wantErr(t, err, ErrHugePages)
	t.Log(err)
}

// hugetlbfsMount returns a mounted hugetlbfs directory, or "".
func hugetlbfsMount() string {
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "hugetlbfs" {
			return f[1]
		}
	}
	return ""
}

func TestHugePages(t *testing.T) {
	total := meminfo(t, "HugePages_Total")
	if total <= 0 {
		t.Skipf("no huge pages configured (HugePages_Total=%d in /proc/meminfo)", total)
	}
	hp, err := HugePageSize()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("sysv", func(t *testing.T) {
		s := newSysV(t, hp, Options{HugePages: true})
		s.Bytes()[hp-1] = 1
		_, err := CreateSysV(unix.IPC_PRIVATE, hp+PageSize(), Options{HugePages: true})
		wantErr(t, err, ErrInvalidSize)
	})
	t.Run("posix", func(t *testing.T) {
		mnt := hugetlbfsMount()
		if mnt == "" {
			t.Skip("no hugetlbfs mounted (see /proc/mounts)")
		}
		dir, err := os.MkdirTemp(mnt, "shmtest")
		if err != nil {
			t.Skipf("cannot use hugetlbfs at %s: %v", mnt, err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		var sfs unix.Statfs_t
		if err := unix.Statfs(dir, &sfs); err != nil {
			t.Fatal(err)
		}
		size := sfs.Bsize
		s, err := CreatePOSIX("huge", size, Options{Dir: dir, HugePages: true})
		if err != nil {
			t.Fatalf("CreatePOSIX on %s: %v", dir, err)
		}
		closeSeg(t, s)
		s.Bytes()[size-1] = 7
		o, err := OpenPOSIX(s.Path(), size)
		if err != nil {
			t.Fatal(err)
		}
		closeSeg(t, o)
		if o.Bytes()[size-1] != 7 {
			t.Error("hugetlbfs mappings not shared")
		}
		_, err = CreatePOSIX("bad", size+PageSize(), Options{Dir: dir, HugePages: true})
		wantErr(t, err, ErrInvalidSize)
	})
}
