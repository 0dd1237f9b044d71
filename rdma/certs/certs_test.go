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
