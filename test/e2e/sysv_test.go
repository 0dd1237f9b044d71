package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSysVChannel: a SysV-backed channel (ctl "backing sysv") carries
// messages between processes that attach its segment by id and file
// clients, pubsub and stream alike, offers no ring file, and keeps its
// segment and messages across an agent restart.
func TestSysVChannel(t *testing.T) {
	a := startAgent(t)
	const n, size = 3000, 16
	for _, tc := range []struct {
		name, ctl, subFile, pubFile, mmapSub string
	}{
		{"pubsub", "backing sysv\ncapacity 64K\n", "msg", "pub", "mmap-sub"},
		{"stream", "backing sysv\ntype stream\ncapacity 64K\n", "down.msg", "up.pub", "mmap-read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := a.mkChan(t, "sysv/"+tc.name, tc.ctl)
			id := sysvID(t, dir)
			if _, err := os.Stat(filepath.Join(dir, "ring")); !os.IsNotExist(err) {
				t.Errorf("ring file of a SysV channel: %v, want ENOENT", err)
			}
			count := []string{"-count", strconv.Itoa(n), "-size", strconv.Itoa(size)}
			byID := []string{"-sysv-id", strconv.Itoa(id), "-dir", dir}
			// shmat subscriber <- file publisher (stream: up queue).
			sub := helper(t, nil, append(append([]string{"-mode", tc.mmapSub}, byID...), count...)...)
			if tc.name == "pubsub" {
				sub.waitLine(t, "ready")
			}
			pub := helper(t, nil, append([]string{"-mode", "file-pub", "-dir", dir, "-file", tc.pubFile}, count...)...)
			checkRun(t, "file publisher", pub.result(t), 0, n, size)
			checkRun(t, "shmat subscriber", sub.result(t), 0, n, size)
			// file subscriber <- shmat publisher (stream: down queue).
			q := "0"
			if tc.name == "stream" {
				q = "1"
			}
			fsub := helper(t, nil, append([]string{"-mode", "file-sub", "-dir", dir, "-file", tc.subFile}, count...)...)
			fsub.waitLine(t, "ready") // subscribed: the file is open
			mpub := helper(t, nil, append(append([]string{"-mode", "mmap-pub", "-queue", q}, byID...), count...)...)
			checkRun(t, "shmat publisher", mpub.result(t), 0, n, size)
			checkRun(t, "file subscriber", fsub.result(t), 0, n, size)
		})
	}

	// A restarted agent reattaches the same segment, messages and all.
	dir := filepath.Join(a.mount, "sysv", "pubsub")
	id := sysvID(t, dir)
	a.stop()
	a.start()
	if got := sysvID(t, dir); got != id {
		t.Errorf("sysv_id after restart %d, want %d", got, id)
	}
	waitStat(t, dir, "messages", 2*n)
	f, err := os.Open(filepath.Join(dir, "msg.oldest"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	nr, err := f.Read(buf)
	f.Close()
	if err != nil || nr != size || buf[0] != 'm' {
		t.Errorf("msg.oldest after restart: %q, %v", buf[:nr], err)
	}
	// The helpers' members are dead; once their leases run out the channel
	// is idle and goes, and its segment with it.
	eventually(t, 20*time.Second, func() error { return unix.Rmdir(dir) })
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &unix.SysvShmDesc{}); err == nil {
		t.Errorf("segment %d still there after rmdir", id)
	}
}

func sysvID(t *testing.T, dir string) int {
	t.Helper()
	cfg, err := kv(filepath.Join(dir, "config"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := strconv.Atoi(cfg["sysv_id"])
	if err != nil || cfg["backing"] != "sysv" {
		t.Fatalf("config of a SysV channel: %v", cfg)
	}
	return id
}
