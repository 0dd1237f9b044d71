package agent

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/shimmy-dev/shimmy/k8s/client/clientset/versioned"
	"github.com/shimmy-dev/shimmy/k8s/node"
	"github.com/shimmy-dev/shimmy/registry"
)

// KubernetesConfig turns on the node reconciler (package k8s/node): the
// agent then keeps its channels in step with the cluster's
// SharedMemoryChannels, for the pods bound to its node.
type KubernetesConfig struct {
	// Kubeconfig is the path of a kubeconfig file; "" uses the pod's
	// service account (in-cluster configuration).
	Kubeconfig string
	// NodeName is this node's name as the API server knows it (required;
	// in a DaemonSet, the downward API's spec.nodeName in $NODE_NAME).
	NodeName string
	// DefaultQuota is the quota of a namespace without the shimmy.io/quota
	// annotation; nil: the agent's Quota (registry.DefaultQuota if unset).
	DefaultQuota *registry.Quota
	// Workers reconcile channels in parallel; default 2.
	Workers int
	// StatusInterval bounds how often one channel's status is written and
	// how stale its member count may be; default 2s.
	StatusInterval time.Duration
}

func (k *KubernetesConfig) validate() error {
	switch {
	case k.NodeName == "":
		return fmt.Errorf("%w: kubernetes: no node name (set --node-name, or NODE_NAME from the downward API's spec.nodeName)", ErrConfig)
	case k.Workers < 0 || k.StatusInterval < 0:
		return fmt.Errorf("%w: kubernetes: negative workers or status interval", ErrConfig)
	}
	return nil
}

// kubernetesPart builds the node reconciler over reg: its clients come
// from the kubeconfig (or the in-cluster configuration) now, its informers
// start when the part runs. With the mirror mp (nil: none) it reports
// the mirror's address and applies the controller's plans to it.
func (a *Agent) kubernetesPart(reg *registry.Registry, mp *mirrorPart) (func(context.Context) error, error) {
	k := a.cfg.Kubernetes
	rc, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	shimmy, err := versioned.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	quota := k.DefaultQuota
	if quota == nil {
		quota = a.cfg.Quota
	}
	o := node.Options{
		Node: k.NodeName, Kube: kube, Shimmy: shimmy, Registry: reg, Log: a.log,
		DefaultQuota: quota, StatusInterval: k.StatusInterval,
	}
	if mp != nil {
		o.Mirror, o.MirrorAddress = mp.m, a.cfg.Mirror.advertised(mp.m.Addr())
	}
	r, err := node.New(o)
	if err != nil {
		return nil, err
	}
	workers := k.Workers
	if workers == 0 {
		workers = 2
	}
	return func(ctx context.Context) error { return r.Run(ctx, workers) }, nil
}
