package e2e

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// TestCorruptRing: garbage written over one channel's ring (through its
// mapping) breaks that channel only: the agent stays up and healthy, the
// other channel works, and the corrupt one says broken or gives EIO.
func TestCorruptRing(t *testing.T) {
	metrics := freePort(t)
	a := startAgent(t, "--metrics", metrics, "--reap-interval", "50ms")
	bad := a.mkChan(t, "bad/x", "capacity 64K")
	good := a.mkChan(t, "bad/y", "capacity 64K")
	mem := testenv.MapFile(t, filepath.Join(bad, "ring"))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range mem {
		mem[i] = byte(rng.Uint32())
	}
	eventually(t, 20*time.Second, func() error {
		a.alive(t)
		broken, err := stat(bad, "broken")
		if err == nil && broken == 1 {
			return nil
		}
		werr := writeOnce(filepath.Join(bad, "pub"), []byte("x"))
		if errors.Is(werr, syscall.EIO) {
			return nil
		}
		return fmt.Errorf("corrupt channel: stats broken %d (%v), write %v", broken, err, werr)
	})
	// Reads of the corrupt channel fail with EIO rather than hand out garbage.
	if f, err := os.Open(filepath.Join(bad, "msg.oldest")); err == nil {
		_, rerr := f.Read(make([]byte, 1<<16))
		f.Close()
		if !errors.Is(rerr, syscall.EIO) {
			t.Errorf("read of the corrupt channel: %v, want EIO", rerr)
		}
	} else if !errors.Is(err, syscall.EIO) {
		t.Errorf("open of the corrupt channel: %v, want EIO", err)
	}
	a.alive(t)
	resp, err := http.Get("http://" + metrics + "/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d %s", resp.StatusCode, body)
	}
	head := sh(t, fmt.Sprintf("timeout 30 head -n 2 %s/sub", good))
	waitStat(t, good, "subscribers", 1)
	shRun(t, fmt.Sprintf("printf 'fine\\nstill\\n' > %s/publines", good))
	if err := head.wait(t); err != nil || head.out.String() != "fine\nstill\n" {
		t.Errorf("the other channel: %v %q", err, head.out.String())
	}
	out, err := exec.Command(shimmyBin, "ls", "--mount", a.mount, "bad").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "broken") {
		t.Errorf("shimmy ls does not show the broken channel: %v\n%s", err, out)
	}
	a.alive(t)
}

// testUser returns a non-root user, creating shimmytest if needed.
func testUser(t *testing.T) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup("shimmytest")
	if err != nil {
		path, lerr := exec.LookPath("useradd")
		if lerr != nil {
			t.Skipf("no user shimmytest and no useradd to make one: %v", lerr)
		}
		if out, err := exec.Command(path, "-M", "-s", "/usr/sbin/nologin", "shimmytest").CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v %s", err, out)
		}
		if u, err = user.Lookup("shimmytest"); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := strconv.Atoi(u.Uid)
	g, _ := strconv.Atoi(u.Gid)
	return uint32(id), uint32(g)
}

// TestPermissions: the channel directory's mode decides who may publish
// and subscribe through the data files: 0700 refuses another user
// (EACCES), 0666 (0777 on the directory) lets it in.
func TestPermissions(t *testing.T) {
	uid, gid := testUser(t)
	a := startAgent(t, "--allow-other")
	closed := a.mkChan(t, "perm/closed", "")
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(shimmyBin, "create", "--mount", a.mount, "perm/open", "--mode", "0666").CombinedOutput(); err != nil {
		t.Fatalf("create --mode 0666: %v %s", err, out)
	}
	open := filepath.Join(a.mount, "perm/open")
	for _, d := range []string{closed, open} {
		shRun(t, fmt.Sprintf("echo from-root > %s/pub", d))
	}
	asUser := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	try := func(mode, dir, file string) Result {
		t.Helper()
		attr := *asUser
		return helper(t, &attr, "-mode", mode, "-dir", dir, "-file", file, "-data", "from-user\n").result(t)
	}
	for _, file := range []string{"pub", "publines"} {
		if r := try("try-write", closed, file); r.Errno != "EACCES" {
			t.Errorf("user writes %s of a 0700 channel: errno %q, want EACCES", file, r.Errno)
		}
	}
	for _, file := range []string{"sub", "msg.oldest", "stats"} {
		if r := try("try-read", closed, file); r.Errno != "EACCES" {
			t.Errorf("user reads %s of a 0700 channel: errno %q, want EACCES", file, r.Errno)
		}
	}
	if r := try("try-write", open, "pub"); r.Errno != "" {
		t.Errorf("user writes pub of a 0666 channel: %s", r.Errno)
	}
	if r := try("try-read", open, "msg.oldest"); r.Errno != "" || r.Data != "from-root\n" {
		t.Errorf("user reads msg.oldest of a 0666 channel: errno %q, data %q", r.Errno, r.Data)
	}
	if n, err := stat(closed, "messages"); err != nil || n != 1 {
		t.Errorf("the 0700 channel has %d messages (%v), want root's 1", n, err)
	}
	if n, err := stat(open, "messages"); err != nil || n != 2 {
		t.Errorf("the 0666 channel has %d messages (%v), want 2", n, err)
	}
}
