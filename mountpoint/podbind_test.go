package mountpoint

import (
	"context"
	"errors"
	"fmt"
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

// TestPodBinds: "pod" volumes (slave binds of the pod directory's
// namespace, as HostToContainer makes them), started under each of
// several agents in turn, keep seeing the live agent's namespace after
// the agents that served them died and new ones bound their mounts; after
// every restart the pod directory holds exactly one layer, and neither it
// nor a volume ever shows an empty directory; binding twice stacks
// nothing; Remove takes every layer and the directory away.
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

// newPodDir makes, in a temporary directory base, an agent mount point
// "mnt" and a prepared pod directory "pods", whose namespace "ns" and
// itself are unmounted at cleanup.
func newPodDir(t *testing.T) (base string, p PodBinds) {
	t.Helper()
	base = t.TempDir()
	p = PodBinds{Dir: filepath.Join(base, "pods"), Source: filepath.Join(base, "mnt")}
	if err := os.Mkdir(p.Source, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountAll(t, p.Dir)
	unmountAll(t, filepath.Join(p.Dir, "ns"))
	if err := p.Prepare(); err != nil {
		t.Fatal(err)
	}
	return base, p
}

// restarts is how many agents follow the first in testPodBinds.
const restarts = 4

func testPodBinds(t *testing.T, sharedSource bool) {
	base, p := newPodDir(t)
	src, nsDir := p.Source, filepath.Join(p.Dir, "ns")
	if sharedSource {
		unmountAll(t, src)
		if err := MakeShared(src); err != nil {
			t.Fatal(err)
		}
	}
	if m, ok, err := Find(p.Dir); err != nil || !ok || !m.Shared() {
		t.Fatalf("pod directory after Prepare: %+v %v %v, want a shared mount", m, ok, err)
	}

	var volumes []string // one pod started under each agent
	for i := 0; i <= restarts; i++ {
		gen := string(rune('a' + i))
		var watch *gapWatch
		if i > 0 {
			// The agent before dies (its connection aborted, as a crash or a
			// clean stop leaves it) and its mount is cleared.
			if err := AbortFUSE(p.Dev); err != nil {
				t.Fatal(err)
			}
			for _, v := range append(volumes, nsDir) {
				if _, err := readGen(v); !errors.Is(err, unix.ENOTCONN) {
					t.Fatalf("%s after agent %s died: %v, want ENOTCONN", v, string(rune(gen[0]-1)), err)
				}
			}
			if err := CleanStale(src); err != nil {
				t.Fatal(err)
			}
			watch = watchGaps(append(volumes, nsDir), gen)
		}
		p.Dev = mountGen(t, src, gen)
		for j := 0; j < 2; j++ {
			if n, err := p.Bind("ns"); err != nil || n != 1 {
				t.Fatalf("agent %s: Bind #%d = %d layers, %v; want 1", gen, j+1, n, err)
			}
		}
		if watch != nil {
			if err := watch.stop(); err != nil {
				t.Errorf("agent %s: %v", gen, err)
			}
		}
		volumes = append(volumes, startVolume(t, nsDir, base, gen))
		for _, v := range append(volumes, nsDir) {
			if g, err := readGen(v); err != nil || g != gen {
				t.Errorf("%s reads gen %q, %v; want %s (the live agent's)", v, g, err, gen)
			}
		}
		if ls, _ := p.layers(nsDir); len(ls) != 1 || ls[0].Dev != p.Dev {
			t.Errorf("agent %s: %d layers at %s, want 1, the live agent's", gen, len(ls), nsDir)
		}
	}
	// A volume keeps its root, a copy of the layer it started under, and
	// one copy per agent since, on top: no unmount made outside the pod
	// reaches the copies on a root whose host layer is gone.
	ms, err := Mounts()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range volumes {
		if n, want := len(layersAt(ms, v)), restarts-i+1; n != want {
			t.Errorf("volume started under agent %c: %d mounts, want %d", 'a'+i, n, want)
		}
	}
	bind, _, _ := Find(nsDir)
	agentMount, _, _ := Find(src)
	if !bind.Shared() || sharedSource != agentMount.Shared() || peerGroup(bind) == peerGroup(agentMount) {
		t.Errorf("bind %v and agent mount %v: want the bind shared in a peer group of its own", bind.Optional, agentMount.Optional)
	}
	if got, err := p.Namespaces(); err != nil || len(got) != 1 || got[0] != "ns" {
		t.Errorf("Namespaces = %v, %v", got, err)
	}

	if err := p.Remove("ns"); err != nil {
		t.Fatal(err)
	}
	if ls, _ := p.layers(nsDir); len(ls) != 0 {
		t.Errorf("%d layers left after Remove", len(ls))
	}
	if _, err := os.Lstat(nsDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace directory after Remove: %v", err)
	}
	if err := p.Remove("ns"); err != nil {
		t.Errorf("Remove again: %v", err)
	}
}

// startVolume makes a pod's volume of nsDir: a bind made slave, as
// HostToContainer makes it, in a new directory of base.
func startVolume(t *testing.T, nsDir, base, gen string) string {
	t.Helper()
	v := filepath.Join(base, "pod-"+gen)
	if err := os.Mkdir(v, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountAll(t, v)
	if err := unix.Mount(nsDir, v, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", v, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	return v
}

// gapWatch reads the generation file of some directories in a loop until
// stopped, and remembers the first read that was neither a dead mount's
// ENOTCONN nor the new generation: an empty directory where channels were
// (ENOENT), or an older agent's layer.
type gapWatch struct {
	done chan struct{}
	res  chan error
}

func watchGaps(dirs []string, gen string) *gapWatch {
	w := &gapWatch{done: make(chan struct{}), res: make(chan error, 1)}
	go func() {
		for reads := 0; ; reads++ {
			select {
			case <-w.done:
				if reads == 0 {
					w.res <- errors.New("gap watch: no read")
				}
				close(w.res)
				return
			default:
			}
			d := dirs[reads%len(dirs)]
			if g, err := readGen(d); err != nil && !errors.Is(err, unix.ENOTCONN) || err == nil && g != gen {
				w.res <- fmt.Errorf("%s during the restart: gen %q, %w", d, g, err)
				close(w.res)
				return
			}
		}
	}()
	return w
}

func (w *gapWatch) stop() error {
	close(w.done)
	return <-w.res
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

// TestPodBindsKeptLayers: a dead layer that something is mounted in (here
// a file of it bound over) cannot be taken down by propagation: Bind
// reports ErrLayersKept, and its bind serves on top all the same.
func TestPodBindsKeptLayers(t *testing.T) {
	needRoot(t)
	_, p := newPodDir(t)
	src, nsDir := p.Source, filepath.Join(p.Dir, "ns")
	unmountAll(t, filepath.Join(nsDir, "gen"))
	p.Dev = mountGen(t, src, "a")
	if _, err := p.Bind("ns"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/dev/null", filepath.Join(nsDir, "gen"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := AbortFUSE(p.Dev); err != nil {
		t.Fatal(err)
	}
	if err := CleanStale(src); err != nil {
		t.Fatal(err)
	}
	p.Dev = mountGen(t, src, "b")
	if n, err := p.Bind("ns"); !errors.Is(err, ErrLayersKept) || n != 2 {
		t.Errorf("Bind over a busy dead layer = %d layers, %v; want 2, ErrLayersKept", n, err)
	}
	if g, err := readGen(nsDir); err != nil || g != "b" {
		t.Errorf("%s reads gen %q, %v; want b", nsDir, g, err)
	}
	if err := p.Remove("ns"); err != nil {
		t.Fatal(err)
	}
}
