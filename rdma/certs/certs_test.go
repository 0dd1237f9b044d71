package certs

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestIssueVerifyWriteLoad(t *testing.T) {
	ca, err := NewCA(Options{Name: "test-ca"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.Issue(Options{Name: "node-a", DNS: []string{"a.example"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := node.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("usage %v: %v", usage, err)
		}
	}
	other, _ := NewCA(Options{Name: "other-ca"})
	if _, err := node.Cert.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("a node certificate verified against another CA")
	}

	dir := filepath.Join(t.TempDir(), "pki")
	if err := node.Write(dir, "node-a"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"node-a.crt", "node-a.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	if err := node.Write(dir, "node-a"); !errors.Is(err, os.ErrExist) {
		t.Errorf("second write: %v, want ErrExist", err)
	}
	back, err := Load(dir, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if !back.Cert.Equal(node.Cert) || !back.Key.Equal(node.Key) {
		t.Error("loaded pair differs from the written one")
	}
	if _, err := ca.Issue(Options{}); err == nil {
		t.Error("issued a certificate without a name")
	}
}

func TestNodeDirectory(t *testing.T) {
	ca, _ := NewCA(Options{Name: "ca"})
	other, _ := NewCA(Options{Name: "other"})
	a, _ := ca.Issue(Options{Name: "node-a"})
	b, _ := ca.Issue(Options{Name: "node-b"})
	base := t.TempDir()
	good := filepath.Join(base, "good")
	if err := WriteNode(good, a, ca); err != nil {
		t.Fatal(err)
	}
	n, err := LoadNode(good)
	if err != nil {
		t.Fatal(err)
	}
	if n.Identity() != "node-a" {
		t.Errorf("identity %q, want node-a", n.Identity())
	}
	if _, err := n.Pair.Cert.Verify(x509.VerifyOptions{Roots: n.CA}); err != nil {
		t.Errorf("loaded CA pool does not verify the node: %v", err)
	}
	if err := WriteNode(good, a, ca); !errors.Is(err, os.ErrExist) {
		t.Errorf("second WriteNode: %v, want ErrExist", err)
	}

	// A directory whose parts do not belong together is refused at load.
	for name, mk := range map[string]func(dir string) error{
		"foreign CA": func(dir string) error { return WriteNode(dir, a, other) },
		"key of another node": func(dir string) error {
			mixed := *a
			mixed.KeyPEM = b.KeyPEM
			return WriteNode(dir, &mixed, ca)
		},
		"no CA file": func(dir string) error { return a.Write(dir, NodeName) },
	} {
		dir := filepath.Join(base, name)
		if err := mk(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadNode(dir); err == nil {
			t.Errorf("%s: LoadNode accepted it", name)
		}
	}
}
