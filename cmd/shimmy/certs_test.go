package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
	"github.com/shimmy-dev/shimmy/rdma/tcp"
)

// mustCerts runs a certs command and fails t unless it succeeds.
func mustCerts(t *testing.T, args ...string) {
	t.Helper()
	if code, out, errOut := runCmd(t, "", nil, append([]string{"certs"}, args...)...); code != exitOK || !strings.HasPrefix(out, "wrote ") {
		t.Fatalf("shimmy certs %q: code %d, stdout %q, stderr %q", args, code, out, errOut)
	}
}

// transport makes an rdma/tcp transport from a node's TLS directory.
func transport(t *testing.T, dir string, o rdma.Options) (*tcp.Transport, string) {
	t.Helper()
	node, err := certs.LoadNode(dir)
	if err != nil {
		t.Fatal(err)
	}
	o.Certificate, o.CA, o.Log = node.Pair.TLS(), node.CA, testenv.QuietLog()
	tr, err := tcp.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tr, node.Identity()
}

// The certificates shimmy certs writes link two agents over rdma/tcp; a
// node of another CA is refused by the listener, and the refusal reported.
func TestCertsLinkAndRefuse(t *testing.T) {
	base := t.TempDir()
	ca, other := filepath.Join(base, "ca"), filepath.Join(base, "other-ca")
	mustCerts(t, "ca", "--out", ca)
	mustCerts(t, "ca", "--out", other, "--name", "other")
	mustCerts(t, "node", "--name", "node-a", "--ca-dir", ca, "--out", filepath.Join(base, "a"), "--ip", "10.0.0.1", "--dns", "a.local")
	mustCerts(t, "node", "--name", "node-b", "--ca-dir", ca, "--out", filepath.Join(base, "b"))
	mustCerts(t, "node", "--name", "node-a", "--ca-dir", other, "--out", filepath.Join(base, "imposter"))

	for _, f := range []string{"ca/ca.key", "a/node.key", "a/node.crt", "a/ca.crt"} {
		st, err := os.Stat(filepath.Join(base, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	if _, err := os.Stat(filepath.Join(base, "a", "ca.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the CA key was copied to a node: %v", err)
	}

	var mu sync.Mutex
	var rejected []error
	lnTr, lnID := transport(t, filepath.Join(base, "b"), rdma.Options{Timeout: 5 * time.Second, OnReject: func(_ string, err error) {
		mu.Lock()
		rejected = append(rejected, err)
		mu.Unlock()
	}})
	ln, err := lnTr.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			accepted <- err.Error()
			return
		}
		accepted <- c.Peer()
		c.Close()
	}()

	imp, _ := transport(t, filepath.Join(base, "imposter"), rdma.Options{Timeout: 5 * time.Second})
	if c, err := imp.Dial(ctx, ln.Addr().String(), rdma.DialOptions{Peer: lnID}); !errors.Is(err, rdma.ErrAuth) {
		if c != nil {
			c.Close()
		}
		t.Errorf("a node of another CA dialed: %v, want ErrAuth", err)
	}
	dialer, id := transport(t, filepath.Join(base, "a"), rdma.Options{Timeout: 5 * time.Second})
	c, err := dialer.Dial(ctx, ln.Addr().String(), rdma.DialOptions{Peer: "node-b"})
	if err != nil {
		t.Fatalf("node-a dial node-b: %v", err)
	}
	defer c.Close()
	if id != "node-a" || c.Peer() != "node-b" {
		t.Errorf("identities: dialer %q, its peer %q; want node-a, node-b", id, c.Peer())
	}
	if got := <-accepted; got != "node-a" {
		t.Errorf("the listener accepted %q, want node-a (the imposter must never reach Accept)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(rejected) != 1 || !errors.Is(rejected[0], rdma.ErrAuth) {
		t.Errorf("refusals reported: %v, want one ErrAuth", rejected)
	}
}

func TestCertsUsage(t *testing.T) {
	base := t.TempDir()
	ca := filepath.Join(base, "ca")
	mustCerts(t, "ca", "--out", ca)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"certs"}, exitUsage},
		{[]string{"certs", "intermediate"}, exitUsage},
		{[]string{"certs", "ca"}, exitUsage},
		{[]string{"certs", "ca", "--out", ca}, exitFail}, // never overwrites
		{[]string{"certs", "node", "--ca-dir", ca, "--out", base + "/n"}, exitUsage},
		{[]string{"certs", "node", "--name", "n", "--out", base + "/n"}, exitUsage},
		{[]string{"certs", "node", "--name", "n", "--ca-dir", ca}, exitUsage},
		{[]string{"certs", "node", "--name", "n", "--ca-dir", ca, "--out", base + "/n", "--ip", "not-an-ip"}, exitUsage},
		{[]string{"certs", "node", "--name", "n", "--ca-dir", base + "/nowhere", "--out", base + "/n"}, exitFail},
	} {
		if code, _, errOut := runCmd(t, "", nil, tc.args...); code != tc.code || errOut == "" {
			t.Errorf("shimmy %q: code %d (want %d), stderr %q", tc.args, code, tc.code, errOut)
		}
	}
	for _, args := range [][]string{{"certs", "--help"}, {"certs", "ca", "--help"}, {"certs", "node", "-h"}} {
		if code, out, _ := runCmd(t, "", nil, args...); code != exitOK || !strings.Contains(out, "Usage:") || !strings.Contains(out, "Example:") {
			t.Errorf("shimmy %q: code %d, stdout %q", args, code, out)
		}
	}
}
