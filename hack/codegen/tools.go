//go:build tools

// Package tools pins the generators of hack/update-codegen.sh: the client,
// lister, informer and deep-copy generators of k8s.io/code-generator and
// controller-gen for the CRD manifest. A module of its own, so that their
// dependencies never reach the agent's go.mod.
package tools

import (
	_ "k8s.io/code-generator/cmd/applyconfiguration-gen"
	_ "k8s.io/code-generator/cmd/client-gen"
	_ "k8s.io/code-generator/cmd/deepcopy-gen"
	_ "k8s.io/code-generator/cmd/informer-gen"
	_ "k8s.io/code-generator/cmd/lister-gen"
	_ "k8s.io/code-generator/cmd/register-gen"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
