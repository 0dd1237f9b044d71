package harness

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The C peers (iceoryx, POSIX message queues, ZeroMQ) are clients written
// in C, as their users write them, in bench/harness/peer: one program that
// speaks the children's protocol, payload and pacing (child.go), compiled
// by the harness with cc for each peer, so that neither shimmy nor
// shimmy-bench links their libraries and a missing library skips only its
// system.

//go:embed peer/peer.c peer/peer_mq.h peer/peer_zmq.h peer/peer_iceoryx.h
var peerSrc embed.FS

// peer is one C client: its compile-time switch, libraries and headers,
// and the Debian packages that provide them.
type peer struct {
	define string
	flags  []string
	header string // a header the package installs, to name the package when it is missing
	pkgs   string
}

var (
	peerMQ      = &peer{define: "PEER_MQ", flags: []string{"-lrt"}, header: "/usr/include/mqueue.h", pkgs: "libc6-dev"}
	peerZMQ     = &peer{define: "PEER_ZMQ", flags: []string{"-lzmq"}, header: "/usr/include/zmq.h", pkgs: "libzmq3-dev"}
	peerIceoryx = &peer{define: "PEER_ICEORYX", flags: []string{"-I/usr/include/iceoryx/v2.0.3", "-liceoryx_binding_c"},
		header: "/usr/include/iceoryx/v2.0.3/iceoryx_binding_c/api.h", pkgs: "iceoryx libiceoryx-binding-c-dev"}
)

// missing says what of the peer's packages is not installed, if any.
func (p *peer) missing() error {
	if _, err := os.Stat(p.header); err != nil {
		return fmt.Errorf("%s is missing (install it: apt-get install -y %s, or make bench-deps)", p.header, p.pkgs)
	}
	if p == peerIceoryx {
		if _, err := findBinary("iox-roudi"); err != nil {
			return fmt.Errorf("%w (install it: apt-get install -y %s, or make bench-deps)", err, p.pkgs)
		}
	}
	return nil
}

// peerBuilds caches the compiled clients of this process by directory and
// define.
var peerBuilds sync.Map

// build compiles the client into dir (once) and returns its path.
func (p *peer) build(dir string) (string, error) {
	key := dir + "\x00" + p.define
	if v, ok := peerBuilds.Load(key); ok {
		return v.(string), nil
	}
	if err := p.missing(); err != nil {
		return "", err
	}
	src := filepath.Join(dir, "peer-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	err := fs.WalkDir(peerSrc, "peer", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := peerSrc.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(src, filepath.Base(path)), b, 0o644)
	})
	if err != nil {
		return "", err
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	bin := filepath.Join(dir, "peer-"+strings.ToLower(strings.TrimPrefix(p.define, "PEER_")))
	args := append([]string{"-O2", "-D" + p.define, "-o", bin, filepath.Join(src, "peer.c"), "-lpthread"}, p.flags...)
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", cc, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	peerBuilds.Store(key, bin)
	return bin, nil
}

// raiseMQLimits lets a queue hold messages of size bytes and up to 1024 of
// them (fs.mqueue.msgsize_max, msg_max: 8 KiB and 10 by default); the
// bytes of all queues of a user stay bounded by RLIMIT_MSGQUEUE (800 KiB
// here), which root cannot raise without CAP_SYS_RESOURCE, so the client
// sizes its queues within it. It returns what it changed, for the report.
func raiseMQLimits(size int) (string, error) {
	var changed []string
	for _, l := range []struct {
		name string
		min  int
	}{{"msgsize_max", size}, {"msg_max", 1024}} {
		path := "/proc/sys/fs/mqueue/" + l.name
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		cur, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if cur >= l.min {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(l.min)), 0); err != nil {
			return "", fmt.Errorf("raise fs.mqueue.%s to %d: %w", l.name, l.min, err)
		}
		changed = append(changed, fmt.Sprintf("fs.mqueue.%s %d -> %d", l.name, cur, l.min))
	}
	return strings.Join(changed, ", "), nil
}

// startRouDi runs iceoryx's daemon with a mempool per message size of the
// run, each with enough chunks for four subscribers' full queues (256
// each) and the chunks in flight: the lossless policies make a publisher
// wait for space, so a pool too small would stall it, not drop.
func startRouDi(ctx context.Context, at place, dir string, cases []Case) (*server, error) {
	bin, err := findBinary("iox-roudi")
	if err != nil {
		return nil, err
	}
	var sizes []int
	for _, c := range cases {
		// The chunk header (40 bytes) and alignment, rounded up to 64.
		sizes = append(sizes, (c.Size+40+63)/64*64)
	}
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	var conf strings.Builder
	conf.WriteString("[general]\nversion = 1\n\n[[segment]]\n")
	for _, s := range sizes {
		fmt.Fprintf(&conf, "\n[[segment.mempool]]\nsize = %d\ncount = %d\n", s, 4*256+64)
	}
	path := filepath.Join(dir, "roudi.toml")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		return nil, err
	}
	// One RouDi per machine: a second one (another run) fails at start.
	return launch(ctx, at, "iox-roudi", bin, dir, "iceoryx", []string{"-c", path}, "get ready", func(s *server) bool {
		return strings.Contains(s.out.String(), "RouDi is ready for clients")
	})
}
