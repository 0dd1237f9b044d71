//go:build tools

// Package tools pins the Kubernetes binaries that the integration tests
// run: build.sh builds these mains from this module's go.sum alone. The
// control plane (etcd, kube-apiserver, kube-controller-manager for the
// DaemonSet and Deployment controllers, kube-scheduler to bind their pods),
// kubectl, and a kubelet for the real-node tests.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
