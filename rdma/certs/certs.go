// Package certs makes a cluster CA and per-node certificates (ECDSA P-256)
// for the mutual TLS of the rdma transport, for tests and small clusters.
// A node certificate serves both ends of a link (server and client auth);
// its common name is the node's identity.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DefaultValidity of certificates when the options leave it zero.
const DefaultValidity = 365 * 24 * time.Hour

// Options describe one certificate.
type Options struct {
	// Name is the subject common name: the node's identity (or the CA's name).
	Name string
	// DNS and IPs are extra subject alternative names (node certificates).
	DNS []string
	IPs []net.IP
	// Validity from now; default DefaultValidity.
	Validity time.Duration
}

// Pair is a certificate and its key, parsed and PEM-encoded.
type Pair struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA.
func NewCA(opts Options) (*Pair, error) {
	tmpl := template(opts)
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	return create(tmpl, nil)
}

// Issue makes a node certificate signed by ca.
func (ca *Pair) Issue(opts Options) (*Pair, error) {
	if opts.Name == "" {
		return nil, errors.New("certs: a node certificate needs a name")
	}
	tmpl := template(opts)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = append([]string{opts.Name}, opts.DNS...)
	tmpl.IPAddresses = opts.IPs
	return create(tmpl, ca)
}

func template(opts Options) *x509.Certificate {
	if opts.Validity <= 0 {
		opts.Validity = DefaultValidity
	}
	now := time.Now()
	return &x509.Certificate{
		Subject:   pkix.Name{CommonName: opts.Name, Organization: []string{"shimmy"}},
		NotBefore: now.Add(-time.Minute), // tolerate small clock skew between nodes
		NotAfter:  now.Add(opts.Validity),
	}
}

func create(tmpl *x509.Certificate, parent *Pair) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: key: %w", err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, fmt.Errorf("certs: serial: %w", err)
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, fmt.Errorf("certs: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: key: %w", err)
	}
	return &Pair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// TLS returns the pair as a tls.Certificate.
func (p *Pair) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}
}

// Pool returns a pool holding only this (CA) certificate.
func (p *Pair) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Cert)
	return pool
}

// Write stores the pair as dir/name.crt and dir/name.key, both mode 0600,
// creating dir (0700) if needed. It refuses to overwrite existing files.
func (p *Pair) Write(dir, name string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for _, f := range []struct {
		ext  string
		data []byte
	}{{".crt", p.CertPEM}, {".key", p.KeyPEM}} {
		if err := writeNew(filepath.Join(dir, name+f.ext), f.data); err != nil {
			return err
		}
	}
	return nil
}

func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	return nil
}

// Load reads a pair that Write stored (dir/name.crt, dir/name.key).
func Load(dir, name string) (*Pair, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("certs: %s/%s: no PEM block", dir, name)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s/%s.crt: %w", dir, name, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s/%s.key: %w", dir, name, err)
	}
	return &Pair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// File names in a CA directory (CA.crt, CA.key) and in a node's TLS
// directory (CA.crt, Node.crt, Node.key): what `shimmy certs` writes and
// the agent's --mirror-tls-dir reads.
const (
	CAName   = "ca"
	NodeName = "node"
)

// WriteNode stores a node's TLS directory: its certificate and key as
// dir/node.crt and dir/node.key, and the CA's certificate (not its key) as
// dir/ca.crt. It refuses to overwrite existing files.
func WriteNode(dir string, node, ca *Pair) error {
	if err := node.Write(dir, NodeName); err != nil {
		return err
	}
	return writeNew(filepath.Join(dir, CAName+".crt"), ca.CertPEM)
}

// Node is a node's TLS directory, loaded.
type Node struct {
	Pair *Pair
	// CA holds the cluster CA certificate: the peers' certificates must
	// chain to it.
	CA *x509.CertPool
}

// Identity is the node's name: its certificate's common name.
func (n *Node) Identity() string { return n.Pair.Cert.Subject.CommonName }

// LoadNode reads a node's TLS directory that WriteNode stored and checks
// that the node's certificate chains to the CA it holds.
func LoadNode(dir string) (*Node, error) {
	pair, err := Load(dir, NodeName)
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM); err != nil {
		return nil, fmt.Errorf("certs: %s/%s.key does not match %s.crt: %w", dir, NodeName, NodeName, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAName+".crt"))
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("certs: %s/%s.crt: no certificate", dir, CAName)
	}
	if _, err := pair.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certs: %s/%s.crt is not signed by %s/%s.crt: %w", dir, NodeName, dir, CAName, err)
	}
	if pair.Cert.Subject.CommonName == "" {
		return nil, fmt.Errorf("certs: %s/%s.crt has no common name (the node's identity)", dir, NodeName)
	}
	return &Node{Pair: pair, CA: pool}, nil
}
