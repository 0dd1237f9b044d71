package tcp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/shimmy-dev/shimmy/rdma"
)

// tlsConfigs returns the listener's and the dialer's TLS configuration:
// TLS 1.3 only, certificates from the cluster CA required both ways.
func tlsConfigs(o rdma.Options) (server, client *tls.Config) {
	var certs []tls.Certificate
	if len(o.Certificate.Certificate) > 0 {
		certs = []tls.Certificate{o.Certificate}
	}
	server = &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		Certificates:                certs,
		ClientAuth:                  tls.RequireAndVerifyClientCert,
		ClientCAs:                   o.CA,
		SessionTicketsDisabled:      true,
		DynamicRecordSizingDisabled: true,
	}
	client = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Present the certificate even if the listener's CA differs, so
		// that the listener logs why it refuses (not "no certificate").
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if len(certs) == 0 {
				return &tls.Certificate{}, nil
			}
			return &certs[0], nil
		},
		// Agents dial addresses, not names: the chain is verified against
		// the cluster CA below and the identity checked after the
		// handshake (DialOptions.Peer), in place of the host name check.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: o.CA, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("%w: %w", rdma.ErrAuth, err)
			}
			return nil
		},
		DynamicRecordSizingDisabled: true,
	}
	return server, client
}

// identity is a verified certificate's node name: its common name, else
// its first URI SAN, else its first DNS SAN.
func identity(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	c := cs.PeerCertificates[0]
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return ""
}

// authError wraps err in ErrAuth when it comes from certificate
// verification, on this side or the peer's (a TLS alert).
func authError(err error) error {
	var (
		verr  *tls.CertificateVerificationError
		op    *net.OpError
		alert tls.AlertError
	)
	switch {
	case errors.As(err, &verr), errors.As(err, &alert),
		errors.As(err, &op) && op.Op == "remote error":
		return fmt.Errorf("%w: %w", rdma.ErrAuth, err)
	}
	// The server refuses a client without a certificate with a plain error
	// (and a certificate_required alert to the client).
	if err != nil && strings.Contains(err.Error(), "didn't provide a certificate") {
		return fmt.Errorf("%w: %w", rdma.ErrAuth, err)
	}
	return err
}
