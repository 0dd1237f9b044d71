package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// podAttr runs a helper in new IPC, mount and PID namespaces: a pod.
func podAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
}

// TestPodIsolation: a publisher and a subscriber, each in its own IPC,
// mount and PID namespaces with only its channel directory bind-mounted
// (the rest of the shimmy mount and /dev/shm hidden), exchange messages
// through the mapped ring and through the data files.
func TestPodIsolation(t *testing.T) {
	a := startAgent(t)
	dir := a.mkChan(t, "iso/a", "capacity 64K")
	other := a.mkChan(t, "iso/b", "")
	hostIPC, err := os.Readlink("/proc/self/ns/ipc")
	if err != nil {
		t.Fatal(err)
	}
	base := newBase(t)
	pod := func(name string, args ...string) *proc {
		root := filepath.Join(base, name)
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"-pod-root", root, "-dir", dir, "-hide", a.mount, "-hidden", other}, args...)
		return helper(t, podAttr(), args...)
	}
	check := func(who string, r Result) {
		t.Helper()
		if r.IPC == "" || r.IPC == hostIPC {
			t.Errorf("%s: IPC namespace %q, host's %q", who, r.IPC, hostIPC)
		}
		if r.Hidden == "" {
			t.Errorf("%s: the other channel %s was not checked hidden", who, other)
		}
		if filepath.Base(r.Chan) != "chan" || r.Chan == dir {
			t.Errorf("%s: used %q, not its bind-mounted chan", who, r.Chan)
		}
	}
	const n, size = 20000, 16
	for _, tc := range []struct {
		name     string
		sub, pub []string
	}{
		{"mmap subscriber, file publisher", []string{"-mode", "mmap-sub"}, []string{"-mode", "file-pub", "-file", "pub"}},
		{"file subscriber, mmap publisher", []string{"-mode", "file-sub", "-file", "msg"}, []string{"-mode", "mmap-pub"}},
		{"mmap both", []string{"-mode", "mmap-sub"}, []string{"-mode", "mmap-pub"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			count := []string{"-count", strconv.Itoa(n), "-size", strconv.Itoa(size)}
			if tc.sub[1] == "file-sub" || tc.pub[1] == "file-pub" {
				count[1] = "3000" // a FUSE round trip per message
			}
			sub := pod("sub-"+tc.sub[1], append(tc.sub, count...)...)
			sub.waitLine(t, "ready")
			pub := pod("pub-"+tc.pub[1], append(tc.pub, count...)...)
			want, _ := strconv.Atoi(count[1])
			pr, sr := pub.result(t), sub.result(t)
			checkRun(t, "publisher pod", pr, 0, want, size)
			checkRun(t, "subscriber pod", sr, 0, want, size)
			check("publisher pod", pr)
			check("subscriber pod", sr)
			if sr.IPC != "" && sr.IPC == pr.IPC {
				t.Errorf("the two pods share IPC namespace %s", sr.IPC)
			}
		})
	}
	// The host still sees both channels: the pods' unmounts stayed in
	// their own mount namespaces.
	for _, d := range []string{dir, other} {
		if _, err := os.Stat(filepath.Join(d, "ring")); err != nil {
			t.Errorf("host lost %s: %v", d, err)
		}
	}
}
