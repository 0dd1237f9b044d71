package main

import (
	"bytes"
	"testing"

	"github.com/shimmy-dev/shimmy/agent"
)

// TestAgentPodDirFlag: the pod directory is on by default only with
// --kubernetes, and "off" turns it off there too.
func TestAgentPodDirFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"--pod-dir", "/run/p"}, "/run/p"},
		{[]string{"--kubernetes", "--node-name", "n"}, agent.DefaultPodDir},
		{[]string{"--kubernetes", "--node-name", "n", "--pod-dir", "/run/p"}, "/run/p"},
		{[]string{"--kubernetes", "--node-name", "n", "--pod-dir", "off"}, ""},
		{[]string{"--pod-dir", "off"}, ""},
	} {
		e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
		cfg, _, err := agentFlags(e, tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if cfg.PodDir != tc.want {
			t.Errorf("%q: pod directory %q, want %q", tc.args, cfg.PodDir, tc.want)
		}
	}
}
