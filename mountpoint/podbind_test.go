package mountpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// genRoot is a tiny FUSE tree standing for one agent's mount: ns/gen
// holds the agent's generation.
type genRoot struct {
	fs.Inode
	gen string
}

var _ fs.NodeOnAdder = (*genRoot)(nil)

func (r *genRoot) OnAdd(ctx context.Context) {
	ns := r.NewPersistentInode(ctx, &fs.Inode{}, fs.StableAttr{Mode: syscall.S_IFDIR})
	r.AddChild("ns", ns, false)
	ns.AddChild("gen", r.NewPersistentInode(ctx, &fs.MemRegularFile{Data: []byte(r.gen), Attr: fuse.Attr{Mode: 0o444}}, fs.StableAttr{}), false)
}

// mountGen mounts a genRoot of generation gen at dir as the agent's
// filesystem type and returns its device; the test ends it with
// AbortFUSE (a dead agent) or at cleanup.
func mountGen(t *testing.T, dir, gen string) uint64 {
	t.Helper()
	testenv.NeedFUSE(t)
	srv, err := fs.Mount(dir, &genRoot{gen: gen}, &fs.Options{MountOptions: fuse.MountOptions{Name: "shimmy", DirectMount: true}})
	if err != nil {
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	dev, err := Device(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		AbortFUSE(dev)
		unix.Unmount(dir, unix.MNT_DETACH)
		srv.Wait()
	})
	return dev
}

// unmountAll detaches every mount at path at cleanup.
func unmountAll(t *testing.T, path string) {
	t.Cleanup(func() {
		for unix.Unmount(path, unix.MNT_DETACH) == nil {
		}
	})
}

func readGen(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(path, "gen"))
	return string(b), err
}

// TestPodBinds: a "pod" volume (a slave bind of the pod directory's
// namespace, as HostToContainer makes it) keeps seeing the live agent's
// namespace after the agent that served it died and a new one bound its
// mount on top; binding twice stacks nothing; Remove takes every layer
// and the directory away.
func TestPodBinds(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name         string
		sharedSource bool
	}{
		{"private agent mount", false},
		{"shared agent mount (a DaemonSet's Bidirectional volume)", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testPodBinds(t, tc.sharedSource) })
	}
}

func testPodBinds(t *testing.T, sharedSource bool) {
	base := t.TempDir()
	src, pods, pod := filepath.Join(base, "mnt"), filepath.Join(base, "pods"), filepath.Join(base, "pod")
	for _, d := range []string{src, pod} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	unmountAll(t, pods)
	unmountAll(t, filepath.Join(pods, "ns"))
	unmountAll(t, pod)
	if sharedSource {
		unmountAll(t, src)
		if err := MakeShared(src); err != nil {
			t.Fatal(err)
		}
	}
	p := PodBinds{Dir: pods, Source: src}
	if err := p.Prepare(); err != nil {
		t.Fatal(err)
	}
	if m, ok, err := Find(pods); err != nil || !ok || !m.Shared() {
		t.Fatalf("pod directory after Prepare: %+v %v %v, want a shared mount", m, ok, err)
	}

	devA := mountGen(t, src, "a")
	p.Dev = devA
	for i := 0; i < 2; i++ {
		if n, err := p.Bind("ns"); err != nil || n != 1 {
			t.Fatalf("Bind #%d = %d layers, %v; want 1", i+1, n, err)
		}
	}
	// The pod's volume: a bind of the pod directory's namespace, slave.
	if err := unix.Mount(filepath.Join(pods, "ns"), pod, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", pod, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	if g, err := readGen(pod); err != nil || g != "a" {
		t.Fatalf("pod reads gen %q, %v; want a", g, err)
	}
	agentMount, _, _ := Find(src)
	bind, _, _ := Find(filepath.Join(pods, "ns"))
	if !bind.Shared() || sharedSource != agentMount.Shared() || peerGroup(bind) == peerGroup(agentMount) {
		t.Errorf("bind %v and agent mount %v: want the bind shared in a peer group of its own", bind.Optional, agentMount.Optional)
	}

	// Agent a dies (its connection aborted, as a crash or a clean stop
	// leaves it) and its mount is cleared; agent b mounts and binds.
	if err := AbortFUSE(devA); err != nil {
		t.Fatal(err)
	}
	if _, err := readGen(pod); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("pod after agent a died: %v, want ENOTCONN", err)
	}
	if err := CleanStale(src); err != nil {
		t.Fatal(err)
	}
	p.Dev = mountGen(t, src, "b")
	if n, err := p.Bind("ns"); err != nil || n != 2 {
		t.Fatalf("Bind over a dead layer = %d layers, %v; want 2", n, err)
	}
	for _, path := range []string{pod, filepath.Join(pods, "ns")} {
		if g, err := readGen(path); err != nil || g != "b" {
			t.Errorf("%s reads gen %q, %v; want b (the new agent's)", path, g, err)
		}
	}
	if got, err := p.Namespaces(); err != nil || len(got) != 1 || got[0] != "ns" {
		t.Errorf("Namespaces = %v, %v", got, err)
	}

	if err := p.Remove("ns"); err != nil {
		t.Fatal(err)
	}
	if ls, _ := p.layers(filepath.Join(pods, "ns")); len(ls) != 0 {
		t.Errorf("%d layers left after Remove", len(ls))
	}
	if _, err := os.Lstat(filepath.Join(pods, "ns")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace directory after Remove: %v", err)
	}
	if err := p.Remove("ns"); err != nil {
		t.Errorf("Remove again: %v", err)
	}
}

// peerGroup is a mount's "shared:N" field, "" if it is not shared.
func peerGroup(m Mount) string {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, "shared:") {
			return o
		}
	}
	return ""
}
