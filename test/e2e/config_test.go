package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOversizeWrite: a write larger than max_message gives EMSGSIZE and
// publishes nothing; one at the limit goes through.
func TestOversizeWrite(t *testing.T) {
	a := startAgent(t)
	dir := a.mkChan(t, "err/size", "max_message 1K")
	f, err := os.OpenFile(filepath.Join(dir, "pub"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte("x"), 1025)); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("1025-byte write: %v, want EMSGSIZE", err)
	}
	if n, err := stat(dir, "messages"); err != nil || n != 0 {
		t.Errorf("after the refused write: %d messages, %v", n, err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), 1024)); err != nil {
		t.Errorf("1024-byte write: %v", err)
	}
	if n, err := stat(dir, "messages"); err != nil || n != 1 {
		t.Errorf("after the accepted write: %d messages, %v", n, err)
	}
	// The CLI reports it and exits 1.
	cmd := exec.Command(shimmyBin, "pub", "--mount", a.mount, "err/size", strings.Repeat("y", 2000))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "message too long") {
		t.Errorf("shimmy pub of 2000 bytes: %v, %s", err, out)
	}
}

// TestCtlInvalid: a bad configuration gives EINVAL, says why in error,
// and leaves the channel as it was.
func TestCtlInvalid(t *testing.T) {
	a := startAgent(t)
	dir := a.mkChan(t, "err/ctl", "capacity 64K\npolicy overwrite")
	before, err := os.ReadFile(filepath.Join(dir, "config"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(before), "65536") || !strings.Contains(string(before), "overwrite") {
		t.Fatalf("config after ctl: %s", before)
	}
	for _, ctl := range []string{
		"capacity 3000",
		"capacity 2G",
		"policy sometimes",
		"type queue",
		"max_message 0",
		"max_message 1M",
		"member_slots 5000",
		"lease 1ns",
		"lease soon",
		"nosuchkey 1",
		"capacity",
		"type stream\npolicy overwrite",
		"capacity 1M\nmax_message 1G",
		"policy block\ncapacity 5000", // a good line does not apply when another is bad
	} {
		err := writeOnce(filepath.Join(dir, "ctl"), []byte(ctl))
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("ctl %q: %v, want EINVAL", ctl, err)
		}
		reason, _ := os.ReadFile(filepath.Join(dir, "error"))
		if len(bytes.TrimSpace(reason)) == 0 {
			t.Errorf("ctl %q: error file is empty", ctl)
		}
		if after, _ := os.ReadFile(filepath.Join(dir, "config")); !bytes.Equal(after, before) {
			t.Errorf("ctl %q changed the config:\n%s\nwas:\n%s", ctl, after, before)
		}
	}
	// The channel still works as configured.
	head := sh(t, fmt.Sprintf("timeout 30 head -n 1 %s/sub", dir))
	waitStat(t, dir, "subscribers", 1)
	shRun(t, fmt.Sprintf("echo still-works > %s/pub", dir))
	if err := head.wait(t); err != nil || head.out.String() != "still-works\n" {
		t.Errorf("after refused ctl: %v %q", err, head.out.String())
	}
	// A channel that has carried messages cannot change: EBUSY.
	if err := writeOnce(filepath.Join(dir, "ctl"), []byte("capacity 128K")); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("ctl on a used channel: %v, want EBUSY", err)
	}
}

// TestCLI: shimmy create, pub, sub, ls, stat, rm on a real mount, by
// ns/ch and by absolute path (as in a pod, from $SHIMMY_CHANNEL).
func TestCLI(t *testing.T) {
	a := startAgent(t)
	shimmy := func(stdin string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, shimmyBin, args...)
		cmd.Env = append(os.Environ(), "SHIMMY_MOUNT="+a.mount)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := shimmy("", "create", "cli/chat", "--capacity", "64K", "--max-message", "1K", "--policy", "overwrite", "--mode", "0660"); err != nil {
		t.Fatalf("create: %v %s", err, out)
	}
	if out, err := shimmy("", "create", "cli/jobs", "--type", "stream"); err != nil {
		t.Fatalf("create stream: %v %s", err, out)
	}
	if out, err := shimmy("", "create", "cli/chat"); err == nil {
		t.Errorf("create of an existing channel succeeded: %s", out)
	}
	out, err := shimmy("", "create", "cli/bad", "--capacity", "3000")
	if err == nil || !strings.Contains(out, "capacity") {
		t.Errorf("create with a bad capacity: %v %s", err, out)
	}
	out, err = shimmy("", "stat", "cli/chat")
	for _, want := range []string{"65536", "1024", "overwrite", "subscribers"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("stat: %v, no %q in\n%s", err, want, out)
		}
	}
	if st, err := os.Stat(filepath.Join(a.mount, "cli/chat")); err != nil || st.Mode().Perm() != 0o770 {
		t.Errorf("--mode 0660: %v %v, want drwxrwx---", st.Mode(), err)
	}

	dir := filepath.Join(a.mount, "cli/chat")
	sub := startProc(t, nil, shimmyBin, "sub", "--mount", a.mount, "cli/chat", "-n", "103")
	waitStat(t, dir, "subscribers", 1)
	if out, err := shimmy("", "pub", "cli/chat", "a", "b c", "d"); err != nil {
		t.Fatalf("pub args: %v %s", err, out)
	}
	var seqIn strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&seqIn, "%d\n", i)
	}
	if out, err := shimmy(seqIn.String(), "pub", dir); err != nil {
		t.Fatalf("pub stdin by path: %v %s", err, out)
	}
	if err := sub.wait(t); err != nil || sub.out.String() != "a\nb c\nd\n"+seqIn.String() {
		t.Errorf("sub -n 103: %v, got %q, stderr %q", err, tail(sub.out.String(), 4), sub.errOut.String())
	}
	// --raw: stdin as one message, read back raw from the oldest.
	if out, err := shimmy("two\nlines", "pub", "--raw", "cli/chat"); err != nil {
		t.Fatalf("pub --raw: %v %s", err, out)
	}
	// Streams need a direction.
	if out, err := shimmy("", "pub", "cli/jobs", "x"); err == nil {
		t.Errorf("pub to a stream without --stream-dir: %s", out)
	}
	if out, err := shimmy("", "pub", "cli/jobs", "--stream-dir", "down", "job1", "job2"); err != nil {
		t.Fatalf("pub --stream-dir down: %v %s", err, out)
	}
	if out, err := shimmy("", "sub", "cli/jobs", "--stream-dir", "down", "-n", "2"); err != nil || out != "job1\njob2\n" {
		t.Errorf("sub --stream-dir down: %v %q", err, out)
	}
	out, err = shimmy("", "ls")
	if err != nil || !strings.Contains(out, "cli/chat") || !strings.Contains(out, "cli/jobs") || !strings.Contains(out, "stream") {
		t.Errorf("ls: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[0] == "cli/chat" && (f[1] != "pubsub" || f[2] != "overwrite" || f[3] != "104") {
			t.Errorf("ls line %q: want pubsub overwrite 104 messages", l)
		}
	}
	// rm: busy while a subscriber is open, then gone.
	busy := startProc(t, nil, "cat", filepath.Join(dir, "sub"))
	waitStat(t, dir, "subscribers", 1)
	if out, err := shimmy("", "rm", "cli/chat"); err == nil || !strings.Contains(out, "busy") {
		t.Errorf("rm of a busy channel: %v %s", err, out)
	}
	busy.cmd.Process.Kill()
	<-busy.done
	eventually(t, 10*time.Second, func() error {
		if out, err := shimmy("", "rm", "cli/chat"); err != nil {
			return fmt.Errorf("rm: %v %s", err, out)
		}
		return nil
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after rm: %v", err)
	}
}
