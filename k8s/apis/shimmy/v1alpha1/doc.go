// Package v1alpha1 is the shimmy.io/v1alpha1 API: the SharedMemoryChannel
// resource, which asks every node whose pods it selects for a channel
// directory under the pod's namespace. The markers below drive
// hack/update-codegen.sh: deep copies, the typed clientset, listers and
// informers (k8s/client) and the CRD manifest (deploy/crd).
//
// +k8s:deepcopy-gen=package
// +groupName=shimmy.io
package v1alpha1
