package v1alpha1_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/shimmy-dev/shimmy/internal/k8stest"
)

// generated lists what hack/update-codegen.sh writes, relative to the root.
var generated = []string{
	"k8s/apis/shimmy/v1alpha1/zz_generated.deepcopy.go",
	"k8s/client",
	"deploy/crd",
}

// TestGeneratedUpToDate runs hack/update-codegen.sh on a copy of the
// module's sources and fails if what it writes differs from what is
// committed: a change to types.go must come with its regenerated code.
func TestGeneratedUpToDate(t *testing.T) {
	root := k8stest.RepoRoot(t)
	tmp := t.TempDir()
	for _, p := range []string{"go.mod", "go.sum", "k8s/apis"} {
		copyTree(t, filepath.Join(root, p), filepath.Join(tmp, p))
	}
	out, err := exec.Command(filepath.Join(root, "hack", "update-codegen.sh"), tmp).CombinedOutput()
	if err != nil {
		t.Fatalf("hack/update-codegen.sh: %v\n%s", err, out)
	}
	for _, p := range generated {
		want, got := files(t, filepath.Join(root, p)), files(t, filepath.Join(tmp, p))
		for name, b := range got {
			if w, ok := want[name]; !ok {
				t.Errorf("%s is generated but not committed", filepath.Join(p, name))
			} else if !bytes.Equal(w, b) {
				t.Errorf("%s differs from what the generators write", filepath.Join(p, name))
			}
		}
		for name := range want {
			if _, ok := got[name]; !ok {
				t.Errorf("%s is committed but no longer generated", filepath.Join(p, name))
			}
		}
	}
	if t.Failed() {
		t.Log("run hack/update-codegen.sh and commit the result")
	}
}

// files reads every regular file under path (a file or a directory),
// keyed by its path relative to path.
func files(t *testing.T, path string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(path, p)
		m[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	for rel, b := range files(t, from) {
		dst := filepath.Join(to, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
