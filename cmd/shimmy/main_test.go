package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/channel"
)

// runCmd runs a command in-process with the given stdin and environment.
func runCmd(t *testing.T, stdin string, envv map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(&env{stdin: strings.NewReader(stdin), stdout: &o, stderr: &e, getenv: func(k string) string { return envv[k] }}, args)
	return code, o.String(), e.String()
}

func TestChannelDir(t *testing.T) {
	for _, tc := range []struct {
		arg, want string
		bad       bool
	}{
		{"ns/ch", "/m/ns/ch", false},
		{"ns/ch/", "/m/ns/ch", false},
		{"a.b_c-d/x", "/m/a.b_c-d/x", false},
		{"/var/run/pod/chan", "/var/run/pod/chan", false},
		{"/var/run/pod/chan/", "/var/run/pod/chan", false},
		{"ns", "", true},
		{"ns/ch/extra", "", true},
		{".hidden/ch", "", true},
		{"ns/bad name", "", true},
		{"ns/" + strings.Repeat("x", 64), "", true},
		{"ns/" + strings.Repeat("x", 63), "/m/ns/" + strings.Repeat("x", 63), false},
	} {
		got, err := channelDir("/m", tc.arg)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("channelDir(%q) = %q, %v; want %q, bad=%v", tc.arg, got, err, tc.want, tc.bad)
		}
	}
}

func TestHelpEverywhere(t *testing.T) {
	for _, c := range commands() {
		for _, h := range []string{"-h", "--help"} {
			code, out, errOut := runCmd(t, "", nil, c.name, h)
			if code != exitOK || !strings.Contains(out, "Usage:") || !strings.Contains(out, "Example:") || errOut != "" {
				t.Errorf("shimmy %s %s: code %d, stdout %q, stderr %q", c.name, h, code, out, errOut)
			}
		}
	}
	code, out, _ := runCmd(t, "", nil, "--help")
	if code != exitOK || !strings.Contains(out, "Commands:") {
		t.Errorf("shimmy --help: code %d, stdout %q", code, out)
	}
}

// The benchmark is cmd/shimmy-bench; a user who still types "shimmy bench"
// is told where it went, and help no longer offers it.
func TestBenchMoved(t *testing.T) {
	for _, args := range [][]string{{"bench"}, {"bench", "--quick"}, {"bench", "--help"}} {
		code, out, errOut := runCmd(t, "", nil, args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "run shimmy-bench") {
			t.Errorf("shimmy %q: code %d, stdout %q, stderr %q; want %d and a pointer to shimmy-bench", args, code, out, errOut, exitUsage)
		}
	}
	if _, out, _ := runCmd(t, "", nil, "--help"); strings.Contains(out, "bench") {
		t.Errorf("shimmy --help still lists the benchmark:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuchcommand"},
		{"agent", "--nosuchflag"},
		{"agent", "--capacity", "3M"},   // not a power of two
		{"agent", "--capacity", "lots"}, // not a size
		{"agent", "--policy", "maybe"},
		{"agent", "--log-level", "loud"},
		{"agent", "extra"},
		{"create"},
		{"create", "ns/ch", "--type", "queue"},
		{"create", "ns/ch", "--backing", "nvram"},
		{"create", "ns/ch", "--mode", "999"},
		{"create", "badchannel"},
		{"pub"},
		{"pub", "--raw", "ns/ch", "msg"},
		{"sub", "ns/ch", "-n"},
		{"sub", "ns/ch", "-n", "-3"},
		{"sub", "ns/ch", "--stream-dir", "sideways"},
		{"ls", "a", "b"},
		{"stat"},
		{"rm", "a/b", "c/d"},
		{"version", "x"},
	} {
		code, _, errOut := runCmd(t, "", nil, args...)
		if code != exitUsage || errOut == "" {
			t.Errorf("shimmy %q: code %d (want %d), stderr %q", args, code, exitUsage, errOut)
		}
	}
}

func TestInterspersedFlags(t *testing.T) {
	fl := newFlagSet("x", "x", "x", "x")
	n := fl.Int("n", 0, "")
	raw := fl.Bool("raw", false, "")
	e := &env{stdout: &bytes.Buffer{}}
	pos, err := parse(fl, e, []string{"ns/ch", "-n", "3", "a", "--raw", "--", "-b", "--raw"}, 1, -1)
	if err != nil {
		t.Fatal(err)
	}
	if *n != 3 || !*raw || strings.Join(pos, ",") != "ns/ch,a,-b,--raw" {
		t.Errorf("n=%d raw=%v pos=%q", *n, *raw, pos)
	}
}

func TestAgentConfig(t *testing.T) {
	var stderr bytes.Buffer
	e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	cfg, mount, err := agentFlags(e, []string{"--mount", "/tmp/m", "--state-dir", "/dev/shm/x", "--metrics", "off",
		"--capacity", "64K", "--policy", "overwrite", "--lease", "200ms", "--member-slots", "8", "--log-level", "debug", "--debug", "--allow-other=false"})
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Defaults
	lg, _ := cfg.Log.(*logrus.Logger)
	if cfg.MountPoint != "/tmp/m" || cfg.StateDir != "/dev/shm/x" || cfg.MetricsAddr != agent.MetricsOff || !mount.Debug || mount.AllowOther ||
		d.Capacity != 64<<10 || d.Policy != channel.PolicyOverwrite || d.Lease.Milliseconds() != 200 || d.MemberSlots != 8 ||
		lg == nil || lg.GetLevel() != logrus.DebugLevel {
		t.Errorf("config %+v, defaults %+v", cfg, d)
	}
	// max_message was not given: it shrinks to fit the 64K ring.
	if want := uint32(64<<10/4 - channel.FrameHeaderLen); d.MaxMessage != want {
		t.Errorf("max message %d, want %d", d.MaxMessage, want)
	}
	if err := d.Validate(); err != nil {
		t.Error(err)
	}
	def, err := agentConfig(e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if def.MountPoint != "/run/shimmy" || def.MetricsAddr != "127.0.0.1:9477" || def.Defaults.Capacity != channel.DefaultCapacity {
		t.Errorf("defaults %+v", def)
	}
	if def.FrontEnd == nil {
		t.Error("no front end: the agent would refuse the configuration")
	}
	if _, mount, _ := agentFlags(e, nil); !mount.AllowOther || mount.Debug {
		t.Errorf("default mount options %+v, want allow_other without debug", mount)
	}
}

// fakeChannel lays out a channel directory as the agent serves it, with
// plain files, so that the client commands can run without a mount.
func fakeChannel(t *testing.T, mount, ns, ch string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(mount, ns, ch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLsStat(t *testing.T) {
	mount := t.TempDir()
	fakeChannel(t, mount, "demo", "chat", map[string]string{
		"config": "type pubsub\npolicy block\ncapacity 1048576\nmax_message 65536\n",
		"stats":  "messages 42\nbytes 420\npublishers 1\nsubscribers 3\nlag_max 7\nlost 0\nreaped 0\nepoch 1\nbroken 0\n",
		"pub":    "", "sub": "",
	})
	fakeChannel(t, mount, "demo", "jobs", map[string]string{
		"config": "type stream\npolicy block\n",
		"stats":  "messages 5\nsubscribers 2\nlag_max 0\nbroken 1\n",
		"up.pub": "", "up.sub": "",
	})
	envv := map[string]string{"SHIMMY_MOUNT": mount}
	code, out, errOut := runCmd(t, "", envv, "ls")
	if code != exitOK {
		t.Fatalf("ls: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CHANNEL") ||
		strings.Join(strings.Fields(lines[1]), " ") != "demo/chat pubsub block 42 3 7 ok" ||
		strings.Join(strings.Fields(lines[2]), " ") != "demo/jobs stream block 5 2 0 broken" {
		t.Errorf("ls output:\n%s", out)
	}
	code, out2, _ := runCmd(t, "", nil, "ls", "--mount", mount, "demo")
	if code != exitOK || out2 != out {
		t.Errorf("ls demo: %d\n%s", code, out2)
	}
	code, out, _ = runCmd(t, "", envv, "stat", "demo/chat")
	for _, want := range []string{"channel", filepath.Join(mount, "demo/chat"), "config:", "capacity", "1048576", "stats:", "lag_max", "subscribers"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("stat: code %d, no %q in\n%s", code, want, out)
		}
	}
	// An absolute path works as well as ns/ch.
	code, out2, _ = runCmd(t, "", nil, "stat", filepath.Join(mount, "demo/chat"))
	if code != exitOK || out2 != out {
		t.Errorf("stat by path: %d\n%s", code, out2)
	}
	code, _, errOut = runCmd(t, "", envv, "stat", "demo/none")
	if code != exitFail || !strings.Contains(errOut, "no such file") {
		t.Errorf("stat of a missing channel: %d %q", code, errOut)
	}
}

// writes records each Write call.
type writes [][]byte

func (w *writes) Write(b []byte) (int, error) {
	*w = append(*w, append([]byte(nil), b...))
	return len(b), nil
}

func TestPublishLinesBatchesWholeLines(t *testing.T) {
	var in strings.Builder
	var want []string
	for i := 0; i < 20000; i++ {
		l := strings.Repeat("x", i%50) + "-" + string(rune('a'+i%26))
		want = append(want, l)
		in.WriteString(l + "\n")
	}
	long := strings.Repeat("L", 3*linesBatch)
	want = append(want, long, "last-without-newline")
	in.WriteString(long + "\nlast-without-newline")
	var w writes
	if err := publishLines(&w, strings.NewReader(in.String())); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, b := range w {
		if len(b) == 0 || b[len(b)-1] != '\n' {
			t.Fatalf("write %d does not end with a whole line", i)
		}
		if len(b) > linesBatch && strings.Count(string(b), "\n") != 1 {
			t.Fatalf("write %d of %d bytes exceeds the batch with several lines", i, len(b))
		}
		got = append(got, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")...)
	}
	if len(w) < 3 {
		t.Errorf("%d writes: lines were not batched into several writes", len(w))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines differ: got %d lines, want %d", len(got), len(want))
	}
}

func TestCreateWritesCtlOnce(t *testing.T) {
	mount := t.TempDir()
	// Pre-create the ctl and config files that the agent would serve in
	// the new directory: a plain directory has none, so mkdir it here and
	// let create find it existing -> it must refuse.
	fakeChannel(t, mount, "demo", "old", map[string]string{"ctl": ""})
	code, _, errOut := runCmd(t, "", nil, "create", "--mount", mount, "demo/old")
	if code != exitFail || !strings.Contains(errOut, "already exists") {
		t.Errorf("create over an existing channel: %d %q", code, errOut)
	}
	// A new channel with no flags: only mkdir, nothing written.
	code, out, errOut := runCmd(t, "", nil, "create", "--mount", mount, "other/new", "--mode", "0660")
	if code != exitOK || strings.TrimSpace(out) != filepath.Join(mount, "other/new") {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	st, err := os.Stat(filepath.Join(mount, "other/new"))
	if err != nil || st.Mode().Perm() != 0o770 {
		t.Errorf("mode %v, %v; want 0770", st.Mode(), err)
	}
}

func TestRm(t *testing.T) {
	mount := t.TempDir()
	fakeChannel(t, mount, "demo", "empty", nil)
	fakeChannel(t, mount, "demo", "full", map[string]string{"pub": ""})
	if code, _, errOut := runCmd(t, "", nil, "rm", "--mount", mount, "demo/empty"); code != exitOK {
		t.Errorf("rm: %d %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(mount, "demo/empty")); !os.IsNotExist(err) {
		t.Errorf("demo/empty still there: %v", err)
	}
	if code, _, errOut := runCmd(t, "", nil, "rm", "--mount", mount, "demo/full"); code != exitFail || errOut == "" {
		t.Errorf("rm of a non-empty dir: %d %q", code, errOut)
	}
}

func TestStreamNeedsDirection(t *testing.T) {
	mount := t.TempDir()
	fakeChannel(t, mount, "demo", "jobs", map[string]string{"up.pub": "", "up.publines": "", "down.pub": ""})
	fakeChannel(t, mount, "demo", "chat", map[string]string{"pub": "", "publines": ""})
	if code, _, errOut := runCmd(t, "", nil, "pub", "--mount", mount, "demo/jobs", "x"); code != exitUsage || !strings.Contains(errOut, "--stream-dir") {
		t.Errorf("pub to a stream without a direction: %d %q", code, errOut)
	}
	if code, _, errOut := runCmd(t, "", nil, "pub", "--mount", mount, "--stream-dir", "up", "demo/chat", "x"); code != exitUsage {
		t.Errorf("--stream-dir on pubsub: %d %q", code, errOut)
	}
	// Arguments: one write each; plain files just collect them.
	if code, _, errOut := runCmd(t, "", nil, "pub", "--mount", mount, "--stream-dir", "down", "demo/jobs", "a", "bc"); code != exitOK {
		t.Fatalf("pub: %d %q", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(mount, "demo/jobs/down.pub")); string(b) != "abc" {
		t.Errorf("down.pub got %q", b)
	}
	if code, _, errOut := runCmd(t, "one\ntwo", nil, "pub", "--mount", mount, "demo/chat"); code != exitOK {
		t.Fatalf("pub lines: %d %q", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(mount, "demo/chat/publines")); string(b) != "one\ntwo\n" {
		t.Errorf("publines got %q", b)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd(t, "", nil, "version")
	if code != exitOK || !strings.HasPrefix(out, "shimmy ") || !strings.Contains(out, "ABI v2") {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestChannelDefaultsFitSmallRings: the agent and create rely on a
// defaulted config of a small ring being valid (max_message shrinks to fit).
func TestChannelDefaultsFitSmallRings(t *testing.T) {
	for _, c := range []uint64{8 << 10, 256 << 10} {
		if err := (channel.Config{Capacity: c}).WithDefaults().Validate(); err != nil {
			t.Errorf("capacity %d: defaults do not validate: %v", c, err)
		}
	}
}
