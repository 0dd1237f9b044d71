package netnstest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/wait"
)

// The test binary is also the helper that runs inside the hosts.
const helperEnv = "NETNSTEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := helper(mode, os.Args[len(os.Args)-1]); err != nil {
			fmt.Println("helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper modes: "echo" serves line echoes on addr; "client" dials addr
// afresh for each line of stdin and prints the echo or the error; "hold"
// dials once and prints how the connection ended.
func helper(mode, addr string) error {
	switch mode {
	case "echo":
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			go io.Copy(c, c)
		}
	case "client":
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			fmt.Println(exchange(addr, in.Text()))
		}
		return nil
	case "hold":
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		fmt.Println("connected")
		_, err = c.Read(make([]byte, 1))
		if errors.Is(err, syscall.ECONNRESET) {
			fmt.Println("reset")
		} else {
			fmt.Println("ended:", err)
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func exchange(addr, msg string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "error " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return "error " + err.Error()
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "error " + err.Error()
	}
	return "echo " + strings.TrimSpace(line)
}

func startHelper(t *testing.T, h *Host, mode, addr string) (*Proc, io.Writer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command("env", helperEnv+"="+mode, exe, addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	return StartCmd(t, cmd), stdin
}

// The hosts' addresses, shared memory and mounts are their own.
func TestIsolation(t *testing.T) {
	n := New(t, "a", "b")
	a, b := n.Host("a"), n.Host("b")
	if a.IP != Subnet+".1" || b.IP != Subnet+".2" {
		t.Errorf("addresses %s, %s", a.IP, b.IP)
	}
	if out := a.Run(t, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, a.IP+"/24") {
		t.Errorf("a's eth0: %q, want %s/24", out, a.IP)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range addrs {
		if strings.HasPrefix(ad.String(), Subnet+".") {
			t.Errorf("the test's namespace has a host address: %v", ad)
		}
	}

	name := fmt.Sprintf("netnstest-%d", os.Getpid())
	a.Run(t, "touch", filepath.Join("/dev/shm", name))
	if _, err := os.Stat(a.Path(filepath.Join("/dev/shm", name))); err != nil {
		t.Errorf("a's /dev/shm file through a.Path: %v", err)
	}
	if out, err := b.Command("ls", filepath.Join("/dev/shm", name)).CombinedOutput(); err == nil {
		t.Errorf("b sees a's /dev/shm file: %s", out)
	}
	if _, err := os.Stat(filepath.Join("/dev/shm", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the test sees a's /dev/shm file: %v", err)
	}

	dir := t.TempDir()
	a.Run(t, "mount", "-t", "tmpfs", "hostmount", dir)
	a.Run(t, "touch", filepath.Join(dir, "inside"))
	if _, err := os.Stat(a.Path(filepath.Join(dir, "inside"))); err != nil {
		t.Errorf("a's mount through a.Path: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "inside")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a's mount reached the test's mount table: %v", err)
	}
	if out, err := b.Command("ls", filepath.Join(dir, "inside")).CombinedOutput(); err == nil {
		t.Errorf("b sees a's mount: %s", out)
	}
}

// Link cuts, dropped packets and resets reach TCP between two hosts, and
// the link works again once restored.
func TestFaults(t *testing.T) {
	n := New(t, "a", "b")
	a, b := n.Host("a"), n.Host("b")
	srv, _ := startHelper(t, b, "echo", b.Addr(7000))
	srv.WaitLine(t, "listening", 10*time.Second)
	cli, in := startHelper(t, a, "client", b.Addr(7000))

	sent := 0
	// try sends msg once and returns the client's answer.
	try := func(msg string) string {
		t.Helper()
		sent++
		fmt.Fprintln(in, msg)
		var line string
		wait.Eventually(t, 10*time.Second, func() error {
			lines := strings.Split(strings.TrimSpace(cli.Out.String()), "\n")
			if len(lines) < sent || cli.Out.String() == "" {
				return fmt.Errorf("no answer to %q yet", msg)
			}
			line = lines[sent-1]
			return nil
		})
		return line
	}
	// works retries until the exchange succeeds (a port that came up).
	works := func(msg string) {
		t.Helper()
		wait.Eventually(t, 10*time.Second, func() error {
			if got := try(msg); got != "echo "+msg {
				return fmt.Errorf("%s", got)
			}
			return nil
		})
	}
	fails := func(msg string) {
		t.Helper()
		if got := try(msg); !strings.HasPrefix(got, "error ") {
			t.Errorf("%s went through a fault: %q", msg, got)
		}
	}

	works("first")
	b.LinkDown(t)
	fails("while-b-down")
	b.LinkUp(t)
	works("after-b-up")

	a.DropShare(t, 100)
	fails("while-a-drops-all")
	a.DropShare(t, 0)
	works("after-drops")
	a.DropShare(t, 30) // TCP retransmits through a lossy link
	works("through-30-percent")
	a.DropShare(t, 0)

	hold, _ := startHelper(t, a, "hold", b.Addr(7000))
	hold.WaitLine(t, "connected", 10*time.Second)
	if got := b.ResetTCP(t, 7000); got < 1 {
		t.Errorf("ResetTCP aborted %d connections, want at least 1", got)
	}
	hold.WaitLine(t, "reset", 10*time.Second)
	works("after-reset")
}
