package agent_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/internal/agenttest"
	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// nodeDir writes a node TLS directory of a fresh CA and returns it.
func nodeDir(t *testing.T, name string) string {
	t.Helper()
	ca, err := certs.NewCA(certs.Options{Name: "ca"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.Issue(certs.Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tls")
	if err := certs.WriteNode(dir, node, ca); err != nil {
		t.Fatal(err)
	}
	return dir
}

// planText is a plan sharing demo/chat with the named peers.
func planText(peers ...string) string {
	s := "peers:\n"
	for i, p := range peers {
		s += fmt.Sprintf("  - name: %s\n    addr: 10.0.0.%d:7470\n", p, i+2)
	}
	s += "shares:\n  - namespace: demo\n    channel: chat\n    peers: ["
	for i, p := range peers {
		if i > 0 {
			s += ", "
		}
		s += p
	}
	return s + "]\n"
}

func writePlan(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMirrorConfigValidates(t *testing.T) {
	tls := nodeDir(t, "node-a")
	plan := filepath.Join(t.TempDir(), "plan.yaml")
	writePlan(t, plan, planText("node-b"))
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writePlan(t, bad, "peers: [{name: b}]\nshares: [{namespace: demo, channel: chat, peers: [c]}]\n")
	kube := &agent.KubernetesConfig{NodeName: "node-a"}
	for _, tc := range []struct {
		name string
		m    agent.MirrorConfig
		kube *agent.KubernetesConfig
		ok   bool
	}{
		{"off", agent.MirrorConfig{}, nil, true},
		{"on", agent.MirrorConfig{PlanFile: plan, TLSDir: tls, Listen: "127.0.0.1:0"}, nil, true},
		{"dial only", agent.MirrorConfig{PlanFile: plan, TLSDir: tls}, nil, true},
		{"listen without plan", agent.MirrorConfig{Listen: "127.0.0.1:0", TLSDir: tls}, nil, false},
		{"no TLS directory", agent.MirrorConfig{PlanFile: plan}, nil, false},
		{"TLS directory without certificates", agent.MirrorConfig{PlanFile: plan, TLSDir: t.TempDir()}, nil, false},
		{"missing plan", agent.MirrorConfig{PlanFile: plan + ".nowhere", TLSDir: tls}, nil, false},
		{"invalid plan", agent.MirrorConfig{PlanFile: bad, TLSDir: tls}, nil, false},
		{"bad listen address", agent.MirrorConfig{PlanFile: plan, TLSDir: tls, Listen: "7470"}, nil, false},
		{"advertised address without Kubernetes", agent.MirrorConfig{PlanFile: plan, TLSDir: tls, Listen: ":7470", Advertise: "10.0.0.1:7470"}, nil, false},
		{"Kubernetes, mirror off", agent.MirrorConfig{}, kube, true},
		{"Kubernetes", agent.MirrorConfig{TLSDir: tls, Listen: "127.0.0.1:0"}, kube, true},
		{"Kubernetes, a host name", agent.MirrorConfig{TLSDir: tls, Listen: "localhost:7470"}, kube, true},
		{"Kubernetes, wildcard and advertised", agent.MirrorConfig{TLSDir: tls, Listen: ":7470", Advertise: "10.0.0.1:7470"}, kube, true},
		{"Kubernetes and a plan file", agent.MirrorConfig{PlanFile: plan, TLSDir: tls, Listen: "127.0.0.1:0"}, kube, false},
		{"Kubernetes, dial only", agent.MirrorConfig{TLSDir: tls}, kube, false},
		{"Kubernetes, wildcard listen", agent.MirrorConfig{TLSDir: tls, Listen: ":7470"}, kube, false},
		{"Kubernetes, 0.0.0.0", agent.MirrorConfig{TLSDir: tls, Listen: "0.0.0.0:7470"}, kube, false},
		{"Kubernetes, ::", agent.MirrorConfig{TLSDir: tls, Listen: "[::]:7470"}, kube, false},
		{"Kubernetes, wildcard advertised", agent.MirrorConfig{TLSDir: tls, Listen: ":7470", Advertise: "0.0.0.0:7470"}, kube, false},
		{"Kubernetes, advertised port 0", agent.MirrorConfig{TLSDir: tls, Listen: ":0", Advertise: "10.0.0.1:0"}, kube, false},
		{"Kubernetes, advertised without port", agent.MirrorConfig{TLSDir: tls, Listen: ":7470", Advertise: "10.0.0.1"}, kube, false},
		{"Kubernetes, certificate of another node", agent.MirrorConfig{TLSDir: nodeDir(t, "node-b"), Listen: "127.0.0.1:0"}, kube, false},
	} {
		cfg := agenttest.Config(t, frontEnd)
		cfg.Mirror, cfg.Kubernetes = tc.m, tc.kube
		_, err := agent.New(cfg)
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, agent.ErrConfig) {
			t.Errorf("%s: New: %v (want ok=%v, else ErrConfig)", tc.name, err, tc.ok)
		}
	}
}

// The agent applies its plan file at start, a changed file within the
// poll interval or at once on ReloadPlan, and keeps the previous plan when
// the new one is invalid.
func TestMirrorPlanReload(t *testing.T) {
	r, plan, hook := mirrorAgent(t, time.Hour)

	eventually(t, 10*time.Second, func() error { return planApplied(hook, 1) })
	writePlan(t, plan, planText("node-b", "node-c"))
	r.a.ReloadPlan() // the poll is an hour away: only the reload applies it
	eventually(t, 10*time.Second, func() error { return planApplied(hook, 2) })

	writePlan(t, plan, "peers: [{name: b}, {name: b}]\n")
	r.a.ReloadPlan()
	eventually(t, 10*time.Second, func() error {
		return logged(hook, "plan not applied; the previous plan stays", func(e *logrus.Entry) bool { return e.Level == logrus.ErrorLevel })
	})
	if err := r.stop(); err != nil {
		t.Errorf("agent with an invalid plan file: Run: %v", err)
	}
}

// Without ReloadPlan, a changed plan file is applied at the next poll.
func TestMirrorPlanPoll(t *testing.T) {
	_, plan, hook := mirrorAgent(t, 20*time.Millisecond)
	writePlan(t, plan, planText("node-b", "node-c", "node-d"))
	eventually(t, 10*time.Second, func() error { return planApplied(hook, 3) })
}

// mirrorAgent runs an agent whose mirror listens on loopback and follows a
// plan file sharing demo/chat with node-b, checked every poll; the log is
// in hook.
func mirrorAgent(t *testing.T, poll time.Duration) (r *running, plan string, hook *logtest.Hook) {
	t.Helper()
	plan = filepath.Join(t.TempDir(), "plan.yaml")
	writePlan(t, plan, planText("node-b"))
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.InfoLevel)
	cfg := agenttest.Config(t, frontEnd)
	cfg.Log = log
	cfg.Mirror = agent.MirrorConfig{PlanFile: plan, TLSDir: nodeDir(t, "node-a"), Listen: "127.0.0.1:0", PlanPoll: poll}
	return start(t, cfg), plan, hook
}

// logged reports whether the log has an entry msg that match accepts.
func logged(hook *logtest.Hook, msg string, match func(*logrus.Entry) bool) error {
	for _, e := range hook.AllEntries() {
		if e.Message == msg && match(e) {
			return nil
		}
	}
	return fmt.Errorf("no log entry %q (yet)", msg)
}

func planApplied(hook *logtest.Hook, peers int) error {
	return logged(hook, "mirror plan applied", func(e *logrus.Entry) bool { return e.Data["peers"] == peers })
}

// Two agents whose plans name each other link up over the transport the
// agent builds from its TLS directory, and each exports the link in its
// /metrics.
func TestMirrorLinkMetrics(t *testing.T) {
	ca, err := certs.NewCA(certs.Options{Name: "ca"})
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	names := []string{"node-a", "node-b"}
	addrs := map[string]string{}
	for _, n := range names {
		addrs[n] = freeAddr(t)
	}
	var agents []*running
	for i, n := range names {
		node, err := ca.Issue(certs.Options{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(base, n)
		if err := certs.WriteNode(filepath.Join(dir, "tls"), node, ca); err != nil {
			t.Fatal(err)
		}
		peer := names[1-i]
		plan := filepath.Join(dir, "plan.yaml")
		writePlan(t, plan, fmt.Sprintf("peers: [{name: %s, addr: %q}]\nshares: [{namespace: demo, channel: chat, peers: [%s]}]\n", peer, addrs[peer], peer))
		cfg := testConfig(t)
		cfg.Mirror = agent.MirrorConfig{PlanFile: plan, TLSDir: filepath.Join(dir, "tls"), Listen: addrs[n]}
		agents = append(agents, start(t, cfg))
	}
	for i, r := range agents {
		want := fmt.Sprintf("shimmy_link_up{peer=%q} 1", names[1-i])
		eventually(t, 30*time.Second, func() error {
			resp, err := http.Get("http://" + r.a.MetricsAddr() + "/metrics")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if !strings.Contains(string(b), want) {
				return fmt.Errorf("%s's metrics lack %q", names[i], want)
			}
			return nil
		})
		if st := r.a.LinkStats(); len(st) != 1 || st[0].Peer != names[1-i] {
			t.Errorf("%s's links: %+v", names[i], st)
		}
	}
}

// freeAddr returns a loopback address whose port was free.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
