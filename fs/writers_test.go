package fs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWriterWaitingForRoom: while one process's write to pub waits for
// room in a full block channel, other writers of the same file are not
// stuck behind it in the kernel: one killed with SIGKILL exits, one with
// O_NONBLOCK gets EAGAIN. On main the second writer slept uninterruptibly
// in the kernel until the first write completed.
func TestWriterWaitingForRoom(t *testing.T) {
	f := mountFS(t)
	dir := f.mkchan(t, "ns", "ch")
	configure(t, dir, "capacity 4096\nmax_message 512\n")
	pubPath := filepath.Join(dir, "pub")
	sub := openOwned(t, filepath.Join(dir, "msg"), unix.O_RDONLY)
	fill := openOwned(t, pubPath, unix.O_WRONLY|unix.O_NONBLOCK)
	sent := 0
	for ; ; sent++ {
		if _, err := write(fill, []byte("f")); err != nil { // any message takes a 32-byte frame or more
			if err != unix.EAGAIN {
				t.Fatal(err)
			}
			break
		}
	}
	unix.Close(fill)

	first := startWriter(t, pubPath, "first")
	waitBlocked(t, first)
	second := startWriter(t, pubPath, "second")
	waitBlocked(t, second)
	if err := second.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.done:
	case <-time.After(10 * time.Second):
		t.Errorf("a writer killed with SIGKILL while another waits for room is still there after 10 s (state %s)", procState(second.cmd.Process.Pid))
	}
	nb := startWriter(t, pubPath, "nonblocking", "oflag=nonblock")
	select {
	case <-nb.done:
		if nb.err == nil || !strings.Contains(nb.out.String(), "Resource temporarily unavailable") {
			t.Errorf("O_NONBLOCK writer while another waits for room: %v %s, want EAGAIN", nb.err, nb.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("an O_NONBLOCK writer while another waits for room is still there after 10 s (state %s)", procState(nb.cmd.Process.Pid))
	}

	// The first writer is still waiting, and its message arrives once
	// the subscriber makes room, after the ones before it.
	for i := 0; i < sent; i++ {
		if got := mustRead(t, sub, 1000); got != "f" {
			t.Fatalf("message %d: %q", i, got)
		}
	}
	if got := mustRead(t, sub, 1000); got != "first" {
		t.Errorf("after the fill: %q, want the first writer's message", got)
	}
	<-first.done
	unix.Close(sub) // on main, the others get in only now
	if first.err != nil {
		t.Errorf("first writer: %v %s", first.err, first.out.String())
	}
}

type writerProc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	err  error
	done chan struct{}
}

// startWriter runs a process that opens path without O_TRUNC and writes
// msg once.
func startWriter(t *testing.T, path, msg string, flags ...string) *writerProc {
	t.Helper()
	w := &writerProc{done: make(chan struct{})}
	w.cmd = exec.Command("dd", append([]string{"of=" + path, "conv=notrunc", "status=none"}, flags...)...)
	w.cmd.Stdin = strings.NewReader(msg)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		w.cmd.Process.Kill()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Errorf("writer %d did not exit", w.cmd.Process.Pid)
		}
	})
	return w
}

// waitBlocked waits until w sleeps in its write: it has opened the file
// (a descriptor into the mount) and is not running.
func waitBlocked(t *testing.T, w *writerProc) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		pid := w.cmd.Process.Pid
		if st := procState(pid); st != "S" && st != "D" {
			return fmt.Errorf("state %q", st)
		}
		if sys := procSyscall(pid); !strings.HasPrefix(sys, fmt.Sprint(syscall.SYS_WRITE)+" ") {
			return fmt.Errorf("not in write(2): %q", sys)
		}
		return nil
	})
}

func procState(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 {
		return string(b[i+2 : i+3])
	}
	return ""
}

func procSyscall(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	return string(b)
}
