package mountpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/internal/testenv"
)

func TestParseMountInfo(t *testing.T) {
	in := `22 1 0:21 / /proc rw,nosuid shared:13 - proc proc rw
85 29 0:45 / /run/shimmy rw,nosuid,nodev,relatime shared:40 master:2 - fuse.shimmy shimmy rw,user_id=0,group_id=0
86 29 0:46 /a\040b /mnt/with\040space rw - tmpfs tmp\011fs rw
`
	ms, err := ParseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d mounts", len(ms))
	}
	for i, tc := range []struct {
		point, fstype, source, root string
		shared                      bool
	}{
		{"/proc", "proc", "proc", "/", true},
		{"/run/shimmy", FSType, "shimmy", "/", true},
		{"/mnt/with space", "tmpfs", "tmp\tfs", "/a b", false},
	} {
		m := ms[i]
		if m.Point != tc.point || m.FSType != tc.fstype || m.Source != tc.source || m.Root != tc.root || m.Shared() != tc.shared {
			t.Errorf("line %d: %+v, want %+v", i, m, tc)
		}
	}
	if _, err := ParseMountInfo(strings.NewReader("1 2 3 4 5 6 7 8 9 10 11\n")); err == nil {
		t.Error("line without separator accepted")
	}
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
}

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// deadFUSE leaves at dir what a crashed agent leaves behind.
func deadFUSE(t *testing.T, dir string) { testenv.DeadFUSE(t, dir, FSType) }

func TestIsMountedAndUnmount(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if ok, err := IsMounted(dir); err != nil || ok {
		t.Fatalf("fresh dir mounted=%v err=%v", ok, err)
	}
	mountTmpfs(t, dir)
	if ok, err := IsMounted(dir); err != nil || !ok {
		t.Fatalf("after mount: mounted=%v err=%v", ok, err)
	}
	if err := Unmount(dir); err != nil {
		t.Fatal(err)
	}
	if ok, _ := IsMounted(dir); ok {
		t.Error("still mounted after Unmount")
	}
}

func TestCleanStale(t *testing.T) {
	needRoot(t)
	t.Run("dead fuse", func(t *testing.T) {
		dir := t.TempDir()
		deadFUSE(t, dir)
		if err := CleanStale(dir); err != nil {
			t.Fatal(err)
		}
		if ok, _ := IsMounted(dir); ok {
			t.Error("dead mount still there")
		}
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("stat after clean: %v", err)
		}
	})
	t.Run("foreign mount kept", func(t *testing.T) {
		dir := t.TempDir()
		mountTmpfs(t, dir)
		if err := CleanStale(dir); err != nil {
			t.Fatal(err)
		}
		if ok, _ := IsMounted(dir); !ok {
			t.Error("tmpfs at the mount point was removed")
		}
	})
	t.Run("missing dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		if err := CleanStale(dir); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Errorf("dir not created: %v", err)
		}
	})
}

func TestMakeShared(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := MakeShared(dir); err != nil {
		t.Skipf("bind mounts unavailable here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	m, ok, err := Find(dir)
	if err != nil || !ok {
		t.Fatalf("not a mount point after MakeShared: %v", err)
	}
	if !m.Shared() {
		t.Errorf("mount not shared: %+v", m)
	}
	// Idempotent: a second call stacks nothing.
	before, _ := Mounts()
	if err := MakeShared(dir); err != nil {
		t.Fatal(err)
	}
	after, _ := Mounts()
	if len(after) != len(before) {
		t.Errorf("second MakeShared changed the mount count %d -> %d", len(before), len(after))
	}
}
