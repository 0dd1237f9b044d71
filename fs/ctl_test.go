package fs

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCtlAppliesAtClose: what is written to ctl applies once, as a whole,
// when the writer closes; bash's printf, which writes line by line, gets
// all or nothing, and sees a refusal in its exit status.
func TestCtlAppliesAtClose(t *testing.T) {
	f := mountFS(t)
	for _, tc := range []struct {
		name, text string
		ok         bool
		want       map[string]string
	}{
		{"bad second line", `policy overwrite\ncapacity 3000\n`, false, map[string]string{"policy": "block", "capacity": "1048576"}},
		{"README example", `type stream\ncapacity 4M\nmax_message 256K\n`, true, map[string]string{"type": "stream", "capacity": "4194304", "max_message": "262144"}},
		{"lines fine alone but not together", `capacity 64K\nmax_message 32K\n`, false, map[string]string{"capacity": "1048576"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := f.mkchan(t, "ns", strings.ReplaceAll(filepath.Base(t.Name()), "_", "-"))
			before := readKV(t, filepath.Join(dir, "config"))
			out, err := exec.Command("bash", "-c", `printf '`+tc.text+`' > `+filepath.Join(dir, "ctl")).CombinedOutput()
			if (err == nil) != tc.ok {
				t.Errorf("bash printf: %v %s, want success %v", err, out, tc.ok)
			}
			cfg := readKV(t, filepath.Join(dir, "config"))
			for k, v := range tc.want {
				if cfg[k] != v {
					t.Errorf("%s = %s, want %s", k, cfg[k], v)
				}
			}
			if changed := cfg["epoch"] != before["epoch"]; changed != tc.ok {
				t.Errorf("epoch %s -> %s: want changed %v", before["epoch"], cfg["epoch"], tc.ok)
			}
		})
	}

	// Line by line on one open file: nothing changes before close, and
	// close applies it all with one new ring.
	dir := f.mkchan(t, "ns", "lines")
	before := readKV(t, filepath.Join(dir, "config"))
	ctl := openOwned(t, filepath.Join(dir, "ctl"), unix.O_WRONLY)
	for _, line := range []string{"type stream\n", "capacity 64K\n", "lease 500ms\n"} {
		mustWrite(t, ctl, line)
		if cfg := readKV(t, filepath.Join(dir, "config")); cfg["epoch"] != before["epoch"] || cfg["type"] != "pubsub" {
			t.Fatalf("after writing %q (before close): %v", line, cfg)
		}
	}
	if err := unix.Close(ctl); err != nil {
		t.Fatalf("close: %v", err)
	}
	if cfg := readKV(t, filepath.Join(dir, "config")); cfg["type"] != "stream" || cfg["capacity"] != "65536" || cfg["lease"] != "500ms" {
		t.Errorf("after close: %v", cfg)
	}

	// A channel that became busy between the write and the close: close
	// reports EBUSY and nothing changes.
	dir = f.mkchan(t, "ns", "late")
	before = readKV(t, filepath.Join(dir, "config"))
	ctl = openOwned(t, filepath.Join(dir, "ctl"), unix.O_WRONLY)
	mustWrite(t, ctl, "capacity 8K\n")
	sub := openOwned(t, filepath.Join(dir, "sub"), unix.O_RDONLY)
	if err := unix.Close(ctl); err != unix.EBUSY {
		t.Errorf("close of ctl on a channel busy since the write: %v, want EBUSY", err)
	}
	if cfg := readKV(t, filepath.Join(dir, "config")); cfg["epoch"] != before["epoch"] {
		t.Errorf("config changed: %v", cfg)
	}
	unix.Close(sub)
}
