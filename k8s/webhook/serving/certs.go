package serving

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// Keys of the certificate Secret (type kubernetes.io/tls, with the CA) and
// file names of a mounted certificate directory.
const (
	KeyCert  = corev1.TLSCertKey       // tls.crt: the serving certificate
	KeyKey   = corev1.TLSPrivateKeyKey // tls.key
	KeyCA    = "ca.crt"                // the CA that signed tls.crt: the caBundle
	KeyCAKey = "ca.key"                // the CA's key (self-provisioned Secret only)
	// caValidity is the CA's validity in serving certificate validities.
	caValidity = 10
)

// material is a loaded serving certificate and the CA bundle that
// verifies it (nil when a mounted directory has no ca.crt).
type material struct {
	cert tls.Certificate
	ca   []byte
}

// loadDir reads a mounted certificate directory: tls.crt, tls.key and,
// if present, ca.crt.
func loadDir(dir string) (*material, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, KeyCert), filepath.Join(dir, KeyKey))
	if err != nil {
		return nil, fmt.Errorf("webhook certificate in %s: %w", dir, err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, KeyCA))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("webhook certificate in %s: %w", dir, err)
	}
	return &material{cert: cert, ca: ca}, nil
}

// fromSecret parses a certificate Secret.
func fromSecret(s *corev1.Secret) (*material, error) {
	cert, err := tls.X509KeyPair(s.Data[KeyCert], s.Data[KeyKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return &material{cert: cert, ca: s.Data[KeyCA]}, nil
}

// provision makes sure the Secret holds a CA and a serving certificate
// for the Service's DNS names with at least a third of Options.Validity
// left,
// and returns it. A valid CA is kept when the serving certificate is
// renewed, so the caBundle stays. Create and Update are conditional
// (AlreadyExists, Conflict): of two writers one wins, and the next round
// reads what it wrote.
func (s *Server) provision(ctx context.Context) (*corev1.Secret, error) {
	secrets := s.opts.Kube.CoreV1().Secrets(s.opts.Namespace)
	cur, err := secrets.Get(ctx, s.opts.Secret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur = nil
	case err != nil:
		return nil, fmt.Errorf("get secret %s/%s: %w", s.opts.Namespace, s.opts.Secret, err)
	}
	var ca *certs.Pair
	if cur != nil {
		why := s.stale(cur)
		if why == "" {
			return cur, nil
		}
		s.log.WithField("reason", why).Info("renewing the webhook's serving certificate")
		ca = s.keptCA(cur)
	}
	data, err := s.issue(ca)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		created, err := secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.opts.Namespace, Name: s.opts.Secret,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "shimmy-controller"}},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create secret %s/%s: %w", s.opts.Namespace, s.opts.Secret, err)
		}
		s.log.WithField("secret", s.opts.Namespace+"/"+s.opts.Secret).Info("made the webhook's CA and serving certificate")
		return created, nil
	}
	next := cur.DeepCopy()
	next.Data = data
	updated, err := secrets.Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update secret %s/%s: %w", s.opts.Namespace, s.opts.Secret, err)
	}
	return updated, nil
}

// stale says why a Secret's certificate needs renewing ("" if it does
// not): unreadable, not for the Service's names, not signed by its CA, or
// with less than a third of Options.Validity left.
func (s *Server) stale(sec *corev1.Secret) string {
	m, err := fromSecret(sec)
	if err != nil {
		return err.Error()
	}
	leaf := m.cert.Leaf
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(m.ca) {
		return "no CA certificate"
	}
	for _, name := range s.dnsNames() {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			return fmt.Sprintf("certificate for %s: %v", name, err)
		}
	}
	if left := time.Until(leaf.NotAfter); left < s.opts.Validity/3 {
		return fmt.Sprintf("expires in %s", left.Round(time.Hour))
	}
	return ""
}

// keptCA returns the Secret's CA if it is usable for at least twice the
// serving certificate's validity, else nil (a new CA is made).
func (s *Server) keptCA(sec *corev1.Secret) *certs.Pair {
	cb, _ := pem.Decode(sec.Data[KeyCA])
	kb, _ := pem.Decode(sec.Data[KeyCAKey])
	if cb == nil || kb == nil {
		return nil
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil || !cert.IsCA || time.Until(cert.NotAfter) < 2*s.opts.Validity {
		return nil
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil
	}
	return &certs.Pair{Cert: cert, Key: key, CertPEM: sec.Data[KeyCA], KeyPEM: sec.Data[KeyCAKey]}
}

// issue signs a serving certificate for the Service's DNS names with ca,
// made first when nil, and returns the Secret's data.
func (s *Server) issue(ca *certs.Pair) (map[string][]byte, error) {
	var err error
	if ca == nil {
		if ca, err = certs.NewCA(certs.Options{Name: "shimmy-webhook-ca", Validity: caValidity * s.opts.Validity}); err != nil {
			return nil, err
		}
	}
	names := s.dnsNames()
	leaf, err := ca.Issue(certs.Options{Name: names[0], DNS: names[1:], Validity: s.opts.Validity})
	if err != nil {
		return nil, err
	}
	return map[string][]byte{KeyCert: leaf.CertPEM, KeyKey: leaf.KeyPEM, KeyCA: ca.CertPEM, KeyCAKey: ca.KeyPEM}, nil
}

// dnsNames are the names the API server may use for the Service: it asks
// for <service>.<namespace>.svc.
func (s *Server) dnsNames() []string {
	svc, ns := s.opts.Service, s.opts.Namespace
	return []string{svc + "." + ns + ".svc", svc, svc + "." + ns, svc + "." + ns + ".svc.cluster.local"}
}

// patchCABundle sets the caBundle of every webhook of the
// MutatingWebhookConfiguration to ca where it differs. A JSON patch whose
// first operation tests the webhook's name, so that a configuration
// changed meanwhile is refused rather than patched at the wrong index.
func (s *Server) patchCABundle(ctx context.Context, ca []byte) error {
	api := s.opts.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, s.opts.WebhookConfig, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get MutatingWebhookConfiguration %s: %w", s.opts.WebhookConfig, err)
	}
	var ops []jsonOp
	for i, w := range cfg.Webhooks {
		if bytes.Equal(w.ClientConfig.CABundle, ca) {
			continue
		}
		base := fmt.Sprintf("/webhooks/%d", i)
		ops = append(ops, jsonOp{"test", base + "/name", w.Name}, jsonOp{"add", base + "/clientConfig/caBundle", ca})
	}
	if len(ops) == 0 {
		return nil
	}
	if err := s.jsonPatch(ctx, ops); err != nil {
		return err
	}
	s.log.WithFields(map[string]any{"configuration": s.opts.WebhookConfig, "webhooks": len(ops) / 2}).Info("patched the webhook's caBundle")
	return nil
}
