package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/fs"
	"github.com/shimmy-dev/shimmy/internal/agenttest"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// statFields parses "shimmy stat" output into its key value lines.
func statFields(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	return m
}

// TestCreateBacking runs create, stat, pub, sub and rm against a real
// agent for each backing: a SysV channel shows the key and id of a real
// segment, which rm removes, and carries messages like a POSIX one.
func TestCreateBacking(t *testing.T) {
	cfg := agenttest.Config(t, fs.FrontEnd(fs.MountOptions{}))
	agenttest.Start(t, cfg)
	mnt := cfg.MountPoint
	for _, tc := range []struct {
		name         string
		args         []string
		sysv, stream bool
	}{
		{"default", nil, false, false},
		{"posix", []string{"--backing", "posix"}, false, false},
		{"sysv", []string{"--backing", "sysv"}, true, false},
		{"sysv-stream", []string{"--backing", "sysv", "--type", "stream"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "backing/" + tc.name
			args := append([]string{"create", "--mount", mnt, name}, tc.args...)
			if code, _, errOut := runCmd(t, "", nil, args...); code != exitOK {
				t.Fatalf("shimmy %q: %d %s", args, code, errOut)
			}
			code, out, errOut := runCmd(t, "", nil, "stat", "--mount", mnt, name)
			if code != exitOK {
				t.Fatalf("stat: %d %s", code, errOut)
			}
			st := statFields(out)
			_, ringErr := os.Stat(filepath.Join(mnt, name, chanfile.Ring))
			if !tc.sysv {
				if !strings.HasPrefix(st["backing"], cfg.StateDir+"/") || st["sysv_id"] != "" || ringErr != nil {
					t.Errorf("POSIX channel: backing %q, sysv_id %q, ring file %v", st["backing"], st["sysv_id"], ringErr)
				}
			} else {
				if st["backing"] != chanfile.Sysv || !os.IsNotExist(ringErr) {
					t.Fatalf("SysV channel: backing %q, ring file %v; stat:\n%s", st["backing"], ringErr, out)
				}
				id, err := strconv.Atoi(st["sysv_id"])
				if err != nil {
					t.Fatalf("sysv_id %q: %v", st["sysv_id"], err)
				}
				var desc unix.SysvShmDesc
				if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &desc); err != nil {
					t.Fatalf("sysv_id %d names no segment: %v", id, err)
				}
				if key, err := strconv.ParseUint(st["sysv_key"], 0, 32); err != nil || uint32(key) != uint32(desc.Perm.Key) {
					t.Errorf("sysv_key %q (%v), the segment's key is %#x", st["sysv_key"], err, uint32(desc.Perm.Key))
				}
				t.Cleanup(func() {
					if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &desc); err == nil {
						t.Errorf("segment %d still there after rm", id)
					}
				})
			}
			// A stream reader takes the oldest unread message; a pubsub
			// subscriber asks for it.
			from := []string{"--oldest"}
			if tc.stream {
				from = []string{"--stream-dir", "up"}
			}
			pub := []string{"pub", "--mount", mnt, name, "hello"}
			if tc.stream {
				pub = append(pub, from...)
			}
			if code, _, errOut := runCmd(t, "", nil, pub...); code != exitOK {
				t.Fatalf("pub: %d %s", code, errOut)
			}
			sub := append([]string{"sub", "--mount", mnt, "-n", "1", name}, from...)
			if code, out, errOut := runCmd(t, "", nil, sub...); code != exitOK || out != "hello\n" {
				t.Errorf("sub: %d %q %s", code, out, errOut)
			}
			// The kernel releases the files sub closed asynchronously: the
			// channel is idle soon, not at once.
			wait.Eventually(t, 10*time.Second, func() error {
				if code, _, errOut := runCmd(t, "", nil, "rm", "--mount", mnt, name); code != exitOK {
					return fmt.Errorf("rm: %d %s", code, errOut)
				}
				return nil
			})
		})
	}
}
