//go:build tools

// Package tools pins the Kubernetes control plane that the integration tests
// run: build.sh builds these mains from this module's go.sum alone.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
