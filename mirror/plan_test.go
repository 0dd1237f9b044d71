package mirror

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParsePlan(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"yaml", "peers:\n- {name: b, addr: 10.0.0.2:7070}\n- {name: c, addr: 10.0.0.3:7070, identity: node-c}\nshares:\n- {namespace: ns, channel: ch, peers: [b, c]}\n", true},
		{"json", `{"peers":[{"name":"b","addr":"h:1"}],"shares":[{"namespace":"ns","channel":"ch","peers":["b"]}]}`, true},
		{"unknown field", `{"peers":[{"name":"b","adress":"h:1"}]}`, false},
		{"unknown peer", `{"peers":[{"name":"b"}],"shares":[{"namespace":"ns","channel":"ch","peers":["c"]}]}`, false},
		{"peer twice", `{"peers":[{"name":"b"},{"name":"b"}]}`, false},
		{"identity twice", `{"peers":[{"name":"b"},{"name":"c","identity":"b"}]}`, false},
		{"bad channel name", `{"peers":[{"name":"b"}],"shares":[{"namespace":"ns","channel":"../x","peers":["b"]}]}`, false},
		{"share twice", `{"peers":[{"name":"b"}],"shares":[{"namespace":"ns","channel":"c","peers":["b"]},{"namespace":"ns","channel":"c","peers":[]}]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "plan")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := LoadPlan(path)
			if tc.ok != (err == nil) {
				t.Fatalf("LoadPlan: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrPlan) {
				t.Fatalf("error %v does not match ErrPlan", err)
			}
			if tc.ok && len(p.sharesWith("b")) != 1 {
				t.Fatalf("plan %+v: shares with b: %v", p, p.sharesWith("b"))
			}
		})
	}
}
