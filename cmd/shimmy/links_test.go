package main

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/mirror"
)

// metricsServer serves /metrics with the links that stats returns, as the
// agent does.
func metricsServer(t *testing.T, stats []mirror.LinkStats) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(agent.NewLinkCollector(func() []mirror.LinkStats { return stats }))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// shimmy stat --links shows what the agent's /metrics exports, per peer.
func TestStatLinks(t *testing.T) {
	addr := metricsServer(t, []mirror.LinkStats{
		{Peer: "node-c", State: mirror.StateBackoff, Bytes: 10, Messages: 1, Reconnects: 4, Losses: 7},
		{Peer: "node-b", State: mirror.StateUp, Bytes: 123456789, Messages: 5000000, Lag: 12, Window: 4 << 20, Reconnects: 2},
	})
	code, out, errOut := runCmd(t, "", nil, "stat", "--links", "--metrics", addr)
	if code != exitOK {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	want := [][]string{
		{"PEER", "STATE", "BYTES", "MESSAGES", "LAG", "WINDOW", "RECONNECTS", "LOSSES"},
		{"node-b", "up", "123456789", "5000000", "12", "4194304", "2", "0"},
		{"node-c", "backoff", "10", "1", "0", "0", "4", "7"},
	}
	if len(rows) != len(want) {
		t.Fatalf("output:\n%s", out)
	}
	for i := range want {
		if strings.Join(rows[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("row %d: %q, want %q", i, rows[i], want[i])
		}
	}

	if code, out, _ := runCmd(t, "", nil, "stat", "--links", "--metrics", metricsServer(t, nil)); code != exitOK || !strings.Contains(out, "no mirror links") {
		t.Errorf("an agent without a mirror: code %d, %q", code, out)
	}
	if code, _, errOut := runCmd(t, "", nil, "stat", "--links", "--metrics", "127.0.0.1:1"); code != exitFail || !strings.Contains(errOut, "is the agent running") {
		t.Errorf("no agent: code %d, stderr %q", code, errOut)
	}
	if code, _, _ := runCmd(t, "", nil, "stat", "--links", "ns/ch"); code != exitUsage {
		t.Errorf("--links with a channel: code %d, want %d", code, exitUsage)
	}
}

func TestAgentMirrorFlags(t *testing.T) {
	e := &env{stdout: &strings.Builder{}, stderr: &strings.Builder{}, getenv: func(string) string { return "" }}
	cfg, _, err := agentFlags(e, []string{"--mirror-plan", "/etc/p.yaml", "--mirror-tls-dir", "/etc/tls", "--mirror-listen", "10.0.0.1:7470", "--mirror-timeout", "3s"})
	if err != nil {
		t.Fatal(err)
	}
	want := agent.MirrorConfig{PlanFile: "/etc/p.yaml", TLSDir: "/etc/tls", Listen: "10.0.0.1:7470", Timeout: 3e9}
	if cfg.Mirror != want {
		t.Errorf("mirror config %+v, want %+v", cfg.Mirror, want)
	}
	if cfg, _, _ := agentFlags(e, nil); cfg.Mirror != (agent.MirrorConfig{}) {
		t.Errorf("the mirror is on by default: %+v", cfg.Mirror)
	}
	cfg, _, err = agentFlags(e, []string{"--kubernetes", "--node-name", "node-a", "--mirror-tls-dir", "/etc/tls", "--mirror-listen", ":7470", "--mirror-advertise", "10.0.0.1:7470"})
	if err != nil {
		t.Fatal(err)
	}
	want = agent.MirrorConfig{TLSDir: "/etc/tls", Listen: ":7470", Advertise: "10.0.0.1:7470"}
	if cfg.Mirror != want || cfg.Kubernetes == nil || cfg.Kubernetes.NodeName != "node-a" {
		t.Errorf("mirror config %+v, kubernetes %+v, want %+v for node-a", cfg.Mirror, cfg.Kubernetes, want)
	}
}
