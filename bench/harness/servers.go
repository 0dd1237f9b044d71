package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shimmy-dev/shimmy/internal/nethost"
	"github.com/shimmy-dev/shimmy/internal/syncbuf"
)

// place is where a server or client runs: this machine (host nil), on
// loopback, or a host of the remote cases, on its address.
type place struct {
	host *nethost.Host
}

// ip is the address servers listen on.
func (p place) ip() string {
	if p.host == nil {
		return "127.0.0.1"
	}
	return p.host.IP
}

// command runs bin there.
func (p place) command(bin string, args ...string) *exec.Cmd {
	if p.host == nil {
		return exec.Command(bin, args...)
	}
	return p.host.Command(bin, args...)
}

// do runs f in the place's network namespace.
func (p place) do(f func() error) error {
	if p.host == nil {
		return f()
	}
	return p.host.InNet(f)
}

// server is a broker the harness started: a child process, on loopback or
// on a host of the remote cases.
type server struct {
	name string
	addr string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
}

// pid returns the server's process id.
func (s *server) pid() int { return s.cmd.Process.Pid }

// stop ends the server: SIGTERM, then SIGKILL after two seconds.
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(2 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// freePort asks the kernel for a free port on the place's address.
// Another process could take it before the server binds; the server then
// fails to start and the error says so.
func (p place) freePort() (port int, err error) {
	err = p.do(func() error {
		ln, err := net.Listen("tcp", net.JoinHostPort(p.ip(), "0"))
		if err != nil {
			return err
		}
		defer ln.Close()
		port = ln.Addr().(*net.TCPAddr).Port
		return nil
	})
	return port, err
}

// findBinary looks in PATH and in the sbin directories Debian installs
// daemons to, which a non-root PATH often lacks.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// startServer runs bin with args (which may contain {port} and {dir}) and
// waits until its port accepts connections.
func startServer(ctx context.Context, at place, name, bin, dir string, conf func(port int) (args []string, file string, body string)) (*server, error) {
	port, err := at.freePort()
	if err != nil {
		return nil, err
	}
	args, file, body := conf(port)
	if file != "" {
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			return nil, err
		}
	}
	addr := net.JoinHostPort(at.ip(), strconv.Itoa(port))
	return launch(ctx, at, name, bin, dir, addr, args, "listen on "+addr, func(*server) bool {
		return at.do(func() error {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
}

// launch runs bin with args in dir and waits up to 10 s for ready, which
// says (doing what) that the server serves.
func launch(ctx context.Context, at place, name, bin, dir, addr string, args []string, what string, ready func(*server) bool) (*server, error) {
	out := &syncbuf.Buffer{}
	cmd := at.command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a terminal's ^C reaches the harness, which
	// stops the server itself.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pdeathsig = true, syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, addr: addr, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for !ready(s) {
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited at start: %s", name, strings.TrimSpace(out.String()))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s did not %s within 10 s: %s", name, what, strings.TrimSpace(out.String()))
		}
	}
	return s, nil
}

// Configurations that keep each broker from dropping messages for a slow
// subscriber, on loopback only.

func startMosquitto(ctx context.Context, at place, dir string, _ []Case) (*server, error) {
	bin, err := findBinary("mosquitto")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	return startServer(ctx, at, "mosquitto", bin, dir, func(port int) ([]string, string, string) {
		return []string{"-c", conf}, conf, fmt.Sprintf(`listener %d %s
allow_anonymous true
persistence false
# No per-client queue limits and no memory cap: QoS 0 must not be dropped.
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
memory_limit 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`, port, at.ip())
	})
}

func startNATS(ctx context.Context, at place, dir string, _ []Case) (*server, error) {
	bin, err := findBinary("nats-server")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nats.conf")
	return startServer(ctx, at, "nats-server", bin, dir, func(port int) ([]string, string, string) {
		return []string{"-c", conf}, conf, fmt.Sprintf(`listen: "%s:%d"
# A slow consumer is cut off past max_pending bytes or write_deadline:
# raise both so a subscriber that falls behind is not dropped.
max_pending: 1073741824
write_deadline: "60s"
max_payload: 1048576
`, at.ip(), port)
	})
}

func startRedis(ctx context.Context, at place, dir string, _ []Case) (*server, error) {
	bin, err := findBinary("redis-server")
	if err != nil {
		return nil, err
	}
	return startServer(ctx, at, "redis-server", bin, dir, func(port int) ([]string, string, string) {
		return []string{"--port", strconv.Itoa(port), "--bind", at.ip(), "--save", "", "--appendonly", "no",
			"--protected-mode", "no", "--dir", dir,
			// Unlimited output buffers for pub/sub clients: Redis disconnects
			// a subscriber past the default 32 MB hard limit.
			"--client-output-buffer-limit", "pubsub 0 0 0"}, "", ""
	})
}

// procCPU returns the CPU time of every thread of pid in nanoseconds, from
// /proc/<pid>/task/*/schedstat (nanosecond resolution), or from
// /proc/<pid>/stat utime+stime (clock ticks) where schedstat is missing.
func procCPU(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err == nil {
		var sum int64
		ok := true
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue // the thread ended
				}
				ok = false
				break
			}
			f := strings.Fields(string(b))
			if len(f) < 1 {
				ok = false
				break
			}
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				ok = false
				break
			}
			sum += v
		}
		if ok {
			return sum, nil
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which may hold spaces: utime and
	// stime are fields 14 and 15, the 12th and 13th after ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (u + st) * int64(time.Second) / 100, nil // USER_HZ is 100 on Linux
}
