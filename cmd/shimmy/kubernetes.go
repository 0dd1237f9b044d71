package main

import (
	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/k8s/node"
	"github.com/shimmy-dev/shimmy/registry"
)

// kubeFlags are the agent's Kubernetes flags, read by kubernetes.
type kubeFlags struct {
	on           *bool
	kubeconfig   *string
	nodeName     *string
	defaultQuota *string
}

func addKubeFlags(fl *flagSet, e *env) kubeFlags {
	return kubeFlags{
		on:           fl.Bool("kubernetes", false, "run the node reconciler: make the channels that SharedMemoryChannels ask for the pods bound to this node (docs/kubernetes.md)"),
		kubeconfig:   fl.String("kubeconfig", "", "kubeconfig file of the API server (with --kubernetes; empty: the pod's service account)"),
		nodeName:     fl.String("node-name", e.getenv("NODE_NAME"), "this node's name (with --kubernetes; default $NODE_NAME, from the downward API's spec.nodeName)"),
		defaultQuota: fl.String("default-quota", "", `quota of namespaces without the `+node.QuotaAnnotation+` annotation, as .quota lines separated by commas, e.g. "max_channels 64, max_bytes 1G" (with --kubernetes; keys left out keep the registry's defaults)`),
	}
}

// kubernetes is the agent's Kubernetes configuration (nil without
// --kubernetes).
func (k kubeFlags) kubernetes() (*agent.KubernetesConfig, error) {
	if !*k.on {
		if *k.defaultQuota != "" || *k.kubeconfig != "" {
			return nil, usagef("--kubeconfig and --default-quota need --kubernetes")
		}
		return nil, nil
	}
	if *k.nodeName == "" {
		return nil, usagef("--kubernetes needs the node's name: --node-name, or NODE_NAME (the downward API's spec.nodeName)")
	}
	kc := &agent.KubernetesConfig{Kubeconfig: *k.kubeconfig, NodeName: *k.nodeName}
	if *k.defaultQuota != "" {
		q, err := node.ParseQuota(*k.defaultQuota, registry.DefaultQuota)
		if err != nil {
			return nil, usagef("--default-quota: %v", err)
		}
		kc.DefaultQuota = &q
	}
	return kc, nil
}
