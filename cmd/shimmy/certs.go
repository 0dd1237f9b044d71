package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// runCerts makes the cluster CA and node certificates of the mirror's
// mutual TLS (package rdma/certs).
func runCerts(e *env, args []string) error {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "ca":
		return runCertsCA(e, args)
	case "node":
		return runCertsNode(e, args)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(e.stdout, certsUsage)
		return errHelpShown
	case "":
		return usagef("missing subcommand: ca or node")
	}
	return usagef("unknown subcommand %q: want ca or node", sub)
}

const certsUsage = `Usage:
  shimmy certs ca --out <dir> [flags]
  shimmy certs node --name <node> --ca-dir <dir> --out <dir> [flags]

Make the certificates of the mirror's mutual TLS 1.3 (ECDSA P-256), for
tests and small clusters. "ca" makes a cluster CA: <dir>/ca.crt and
<dir>/ca.key. "node" makes a node's TLS directory signed by that CA:
<dir>/node.crt and <dir>/node.key (the node's identity is --name, the
certificate's common name) and a copy of ca.crt, which is what the agent's
--mirror-tls-dir reads. Keys are written with mode 0600; existing files are
never overwritten. Run "shimmy certs ca --help" or "shimmy certs node
--help" for the flags.

Example:
  shimmy certs ca --out /etc/shimmy/ca
  shimmy certs node --name node-a --ca-dir /etc/shimmy/ca --out /etc/shimmy/tls
`

func runCertsCA(e *env, args []string) error {
	fl := newFlagSet("certs ca", "shimmy certs ca --out <dir> [flags]",
		`Make a cluster CA: <dir>/ca.crt and <dir>/ca.key (mode 0600). Keep
ca.key to issue node certificates; give every node ca.crt (shimmy certs node
copies it into the node's directory).`,
		"shimmy certs ca --out /etc/shimmy/ca")
	out := fl.String("out", "", "directory to write ca.crt and ca.key into (created, mode 0700)")
	name := fl.String("name", "shimmy-cluster-ca", "the CA's common name")
	validity := fl.Duration("validity", 10*certs.DefaultValidity, "how long the CA is valid")
	if _, err := parse(fl, e, args, 0, 0); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out is required")
	}
	ca, err := certs.NewCA(certs.Options{Name: *name, Validity: *validity})
	if err != nil {
		return err
	}
	if err := ca.Write(*out, certs.CAName); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s/%s.crt and %s.key (CA %q, valid until %s)\n", *out, certs.CAName, certs.CAName, *name,
		ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func runCertsNode(e *env, args []string) error {
	fl := newFlagSet("certs node", "shimmy certs node --name <node> --ca-dir <dir> --out <dir> [flags]",
		`Make a node's TLS directory: <out>/node.crt and <out>/node.key, signed by
the CA in --ca-dir (ca.crt, ca.key), and <out>/ca.crt. The node's identity
is --name: the names in the mirror's plan file and the peers' logs.`,
		"shimmy certs node --name node-a --ca-dir /etc/shimmy/ca --out /etc/shimmy/tls")
	name := fl.String("name", "", "the node's identity (certificate common name)")
	caDir := fl.String("ca-dir", "", "directory holding ca.crt and ca.key (shimmy certs ca --out)")
	out := fl.String("out", "", "directory to write node.crt, node.key and ca.crt into (created, mode 0700)")
	dns := fl.String("dns", "", "extra DNS names, comma-separated")
	ips := fl.String("ip", "", "IP addresses, comma-separated")
	validity := fl.Duration("validity", certs.DefaultValidity, "how long the certificate is valid")
	if _, err := parse(fl, e, args, 0, 0); err != nil {
		return err
	}
	switch {
	case *name == "":
		return usagef("--name is required")
	case *caDir == "":
		return usagef("--ca-dir is required")
	case *out == "":
		return usagef("--out is required")
	}
	opts := certs.Options{Name: *name, DNS: splitList(*dns), Validity: *validity}
	for _, s := range splitList(*ips) {
		ip := net.ParseIP(s)
		if ip == nil {
			return usagef("--ip: %q is not an IP address", s)
		}
		opts.IPs = append(opts.IPs, ip)
	}
	ca, err := certs.Load(*caDir, certs.CAName)
	if err != nil {
		return err
	}
	node, err := ca.Issue(opts)
	if err != nil {
		return err
	}
	if err := certs.WriteNode(*out, node, ca); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s/%s.crt, %s.key and %s.crt (node %q, valid until %s)\n", *out, certs.NodeName, certs.NodeName,
		certs.CAName, *name, node.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
