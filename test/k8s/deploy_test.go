package k8s

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/shimmy-dev/shimmy/internal/k8stest"
)

// testKustomization: `kubectl apply -k deploy/`, what users run to install
// everything, passes the server's validation object by object (dry run;
// test/node applies it for real on a node). The namespace is created
// first: a server dry run of namespaced objects needs it to exist.
func testKustomization(t *testing.T, c *k8stest.Cluster) {
	deploy := filepath.Join(k8stest.RepoRoot(t), "deploy")
	rendered, err := c.Kubectl("", "kustomize", deploy)
	if err != nil {
		t.Fatal(err)
	}
	objects := strings.Count("\n"+rendered, "\n---\n") + 1
	if _, err := c.Kubectl("", "apply", "-f", filepath.Join(deploy, "namespace.yaml")); err != nil {
		t.Fatal(err)
	}
	out, err := c.Kubectl("", "apply", "-k", deploy, "--dry-run=server")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != objects {
		t.Errorf("kubectl apply -k deploy --dry-run=server printed %d lines for %d objects:\n%s", len(lines), objects, out)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "(server dry run)") {
			t.Errorf("kubectl apply -k deploy --dry-run=server: %q", l)
		}
	}
	for _, kind := range []string{"daemonset.apps/shimmy-agent", "customresourcedefinition.apiextensions.k8s.io/sharedmemorychannels.shimmy.io", "clusterrole.rbac.authorization.k8s.io/shimmy-agent"} {
		if !strings.Contains(out, kind) {
			t.Errorf("kubectl apply -k deploy installs no %s:\n%s", kind, out)
		}
	}
}
