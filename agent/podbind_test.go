package agent_test

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/agenttest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/mountpoint"
)

// podMessages is how many messages the pod publishes under each agent.
const podMessages = 200

// podScript runs in a mount namespace of its own, as a container does:
// its root made rslave, its volume an rbind of the pod directory's
// namespace made rslave (HostToContainer). "go G" opens the channel's sub
// file, publishes N messages "G i" with echo and prints the md5sum of the
// N lines read back; "restarted" tells whether the sub descriptor opened
// before an agent restart still reads; "mounts" counts the agents' mounts
// at its volume in its own mount namespace.
const podScript = `set -e
mount --make-rslave /
mount --rbind "$VOLUME_SRC" "$VOLUME"
mount --make-rslave "$VOLUME"
ch=$VOLUME/ch
publish() { i=1; while [ $i -le $N ]; do echo "$1 $i" > $ch/pub; i=$((i+1)); done; }
while read cmd gen; do
	case $cmd in
	go)
		exec 3< $ch/sub
		publish $gen
		echo "$gen $(head -n $N <&3 | md5sum)" ;;
	restarted)
		if head -n 1 <&3 2>/dev/null; then echo "old descriptor works"; else echo "old descriptor dead"; fi ;;
	mounts)
		echo "$(grep -c " $VOLUME .* - fuse.shimmy " /proc/self/mountinfo) mounts" ;;
	esac
done
`

// pod is podScript running; step sends it a line and returns the line it
// prints back.
type pod struct {
	in  io.Writer
	out *bufio.Scanner
}

func startPod(t *testing.T, volumeSrc string) *pod {
	t.Helper()
	cmd := exec.Command("sh", "-c", podScript)
	cmd.Env = append(os.Environ(), "VOLUME_SRC="+volumeSrc, "VOLUME="+t.TempDir(), fmt.Sprint("N=", podMessages))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS} // mounts stay shared, as in runc before its rslave
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &pod{in: in, out: bufio.NewScanner(out)}
}

func (p *pod) step(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		if p.out.Scan() {
			got <- p.out.Text()
		}
		close(got)
	}()
	select {
	case s, ok := <-got:
		if !ok {
			t.Fatalf("pod ended at step %q", cmd)
		}
		return s
	case <-time.After(time.Minute):
		t.Fatalf("pod silent at step %q", cmd)
		return ""
	}
}

// md5Lines is md5sum's line for the messages "<prefix> 1".."<prefix> n".
func md5Lines(prefix string, n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%s %d\n", prefix, i)
	}
	sum := md5.Sum([]byte(b.String()))
	return prefix + " " + hex.EncodeToString(sum[:]) + "  -"
}

// podRestarts is how many agents follow the first in
// TestPodDirAcrossRestarts.
const podRestarts = 3

// TestPodDirAcrossRestarts: a pod whose volume is the pod directory's
// namespace keeps using the channel's files across agent restarts on the
// same state directory: the file it held open fails (ENOTCONN), a file it
// opens afterwards reaches the new agent, and every message published
// under each agent arrives, in order, bytes intact. After each restart the
// pod directory holds one mount for the namespace, the live agent's, and
// the pod one more than before.
func TestPodDirAcrossRestarts(t *testing.T) {
	cfg := agenttest.Config(t, frontEnd)
	cfg.PodDir = filepath.Join(t.TempDir(), "pods")
	volume := filepath.Join(cfg.PodDir, "ns")
	testenv.UnmountBelowAtCleanup(t, cfg.PodDir) // after the agents: every layer, then the pod directory's own bind
	_, stop := agenttest.Start(t, cfg)
	if err := os.MkdirAll(filepath.Join(cfg.MountPoint, "ns", "ch"), 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error { // bound on the namespace's event
		_, err := os.Stat(filepath.Join(volume, "ch", "pub"))
		return err
	})

	p := startPod(t, volume)
	if got, want := p.step(t, "go a"), md5Lines("a", podMessages); got != want {
		t.Fatalf("pod under the first agent read %q, want %q", got, want)
	}
	for i := 1; i <= podRestarts; i++ {
		gen := string(rune('a' + i))
		if err := stop(); err != nil {
			t.Fatalf("agent before %s: %v", gen, err)
		}
		_, stop = agenttest.Start(t, cfg)
		if ls, err := mountpoint.Layers(volume); err != nil || len(ls) != 1 {
			t.Errorf("agent %s: %d mounts at %s, %v; want 1", gen, len(ls), volume, err)
		}
		if got := p.step(t, "restarted"); got != "old descriptor dead" {
			t.Errorf("agent %s: the pod's descriptor opened before the restart: %q", gen, got)
		}
		if got, want := p.step(t, "go "+gen), md5Lines(gen, podMessages); got != want {
			t.Errorf("pod under agent %s read %q, want %q", gen, got, want)
		}
		// The pod keeps its volume's root (a copy of the first agent's
		// bind, which no unmount on the host reaches) and a copy of each
		// agent's since (docs/kubernetes.md, the pod directory).
		if got, want := p.step(t, "mounts"), fmt.Sprintf("%d mounts", i+1); got != want {
			t.Errorf("pod under agent %s: %s at its volume, want %s", gen, got, want)
		}
	}
	stats, err := os.ReadFile(filepath.Join(cfg.MountPoint, "ns", "ch", "stats"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("messages %d\n", (podRestarts+1)*podMessages); !strings.Contains(string(stats), want) {
		t.Errorf("stats after every agent:\n%s\nwant %q", stats, want)
	}
}

// TestPodDirFollowsNamespaces: every namespace, made or recovered, has its
// directory in the pod directory, bound to the agent's mount; a removed
// namespace's directory goes, and so does one whose namespace is gone from
// the state directory when an agent starts.
func TestPodDirFollowsNamespaces(t *testing.T) {
	cfg := agenttest.Config(t, frontEnd)
	cfg.PodDir = filepath.Join(t.TempDir(), "pods")
	testenv.UnmountBelowAtCleanup(t, cfg.PodDir)
	bound := func(want ...string) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			ents, err := os.ReadDir(cfg.PodDir)
			if err != nil {
				return err
			}
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				return fmt.Errorf("pod directory holds %q, want %q", got, want)
			}
			for _, ns := range want { // each one the live mount's namespace
				if _, err := os.Stat(filepath.Join(cfg.PodDir, ns, ns+"-ch", "stats")); err != nil {
					return err
				}
			}
			return nil
		})
	}
	_, stop := agenttest.Start(t, cfg)
	for _, ns := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(cfg.MountPoint, ns, ns+"-ch"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bound("a", "b")
	for _, d := range []string{"b/b-ch", "b"} {
		if err := os.Remove(filepath.Join(cfg.MountPoint, d)); err != nil {
			t.Fatal(err)
		}
	}
	bound("a")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(cfg.PodDir, "gone"), 0o755); err != nil {
		t.Fatal(err)
	}
	agenttest.Start(t, cfg) // recovers a and stacks on its dead bind
	bound("a")
}
