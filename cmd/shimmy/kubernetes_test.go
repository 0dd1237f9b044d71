package main

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/registry"
)

func TestAgentKubernetesFlags(t *testing.T) {
	q := registry.DefaultQuota
	q.Channels, q.Bytes = 8, 64<<20
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		want  *agent.KubernetesConfig
		usage bool
	}{
		{name: "off", args: nil, want: nil},
		{name: "node from the downward API", env: map[string]string{"NODE_NAME": "n1"}, args: []string{"--kubernetes"},
			want: &agent.KubernetesConfig{NodeName: "n1"}},
		{name: "flag over env", env: map[string]string{"NODE_NAME": "n1"}, args: []string{"--kubernetes", "--node-name", "n2", "--kubeconfig", "/k"},
			want: &agent.KubernetesConfig{NodeName: "n2", Kubeconfig: "/k"}},
		{name: "default quota", args: []string{"--kubernetes", "--node-name", "n", "--default-quota", "max_channels 8, max_bytes 64M"},
			want: &agent.KubernetesConfig{NodeName: "n", DefaultQuota: &q}},
		{name: "no node name", args: []string{"--kubernetes"}, usage: true},
		{name: "bad quota", args: []string{"--kubernetes", "--node-name", "n", "--default-quota", "max_pods 3"}, usage: true},
		{name: "negative quota", args: []string{"--kubernetes", "--node-name", "n", "--default-quota", "max_channels -1"}, usage: true},
		{name: "quota without kubernetes", args: []string{"--default-quota", "max_channels 8"}, usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(k string) string { return tc.env[k] }}
			cfg, _, err := agentFlags(e, tc.args)
			if tc.usage {
				if _, ok := err.(usageError); !ok {
					t.Fatalf("%q: %v, want a usage error", tc.args, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Kubernetes, tc.want) {
				t.Errorf("%q: kubernetes %+v, want %+v", tc.args, cfg.Kubernetes, tc.want)
			}
		})
	}
}
