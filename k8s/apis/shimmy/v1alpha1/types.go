package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SharedMemoryChannel asks for a channel named after it, in its namespace,
// on every node where a pod it selects runs.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=smc,categories=shimmy
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=".spec.type"
// +kubebuilder:printcolumn:name="Overflow",type=string,JSONPath=".spec.overflow"
// +kubebuilder:printcolumn:name="Capacity",type=string,JSONPath=".spec.capacity"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=".status.conditions[?(@.type==\"Ready\")].status"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="name must be at most 63 characters: it names the channel directory"
type SharedMemoryChannel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec SharedMemoryChannelSpec `json:"spec"`
	// +optional
	Status SharedMemoryChannelStatus `json:"status,omitempty"`
}

// ChannelType is "pubsub" or "stream", the names of channel.Type.
//
// +kubebuilder:validation:Enum=pubsub;stream
type ChannelType string

// Channel types.
const (
	TypePubSub ChannelType = "pubsub"
	TypeStream ChannelType = "stream"
)

// OverflowPolicy is "block" or "overwrite", the names of channel.Policy.
//
// +kubebuilder:validation:Enum=block;overwrite
type OverflowPolicy string

// Overflow policies.
const (
	OverflowBlock     OverflowPolicy = "block"
	OverflowOverwrite OverflowPolicy = "overwrite"
)

// SharedMemoryChannelSpec is the channel's configuration. Defaults and
// bounds are those of the ring (docs/ring-format.md); the schema enforces
// them so that a bad spec is refused when it is applied, not on a node.
//
// +kubebuilder:validation:XValidation:rule="!(self.type == 'stream' && self.overflow == 'overwrite')",message="a stream channel is lossless: overflow must be block"
// +kubebuilder:validation:XValidation:rule="!has(self.maxMessage) || !has(self.capacity) || !isQuantity(string(self.maxMessage)) || !isQuantity(string(self.capacity)) || !quantity(string(self.capacity)).isInteger() || !quantity(string(self.maxMessage)).isInteger() || quantity(string(self.maxMessage)).asInteger() <= quantity(string(self.capacity)).asInteger() / 4 - 16",message="maxMessage must be at most capacity/4 - 16 bytes"
type SharedMemoryChannelSpec struct {
	// Selector chooses the pods, in the channel's namespace, that use the
	// channel: every node that runs one of them gets the channel.
	//
	// +required
	Selector *metav1.LabelSelector `json:"selector"`

	// Type is pubsub (every subscriber sees every message) or stream (one
	// queue per direction; each message goes to one reader).
	//
	// +kubebuilder:default=pubsub
	// +optional
	Type ChannelType `json:"type,omitempty"`

	// Overflow is what a full pubsub queue does: block publishers
	// (lossless) or overwrite the oldest messages. A stream always blocks.
	//
	// +kubebuilder:default=block
	// +optional
	Overflow OverflowPolicy `json:"overflow,omitempty"`

	// Capacity is the data bytes of each queue: a power of two from 4Ki to
	// 1Gi.
	//
	// +kubebuilder:default="1Mi"
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self)) && quantity(string(self)).isInteger() && quantity(string(self)).asInteger() in [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608, 16777216, 33554432, 67108864, 134217728, 268435456, 536870912, 1073741824]",message="capacity must be a power of two from 4Ki to 1Gi"
	// +optional
	Capacity *resource.Quantity `json:"capacity,omitempty"`

	// MaxMessage is the largest payload in bytes, at most capacity/4 - 16;
	// unset, min(64Ki, capacity/4 - 16).
	//
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self)) && quantity(string(self)).isInteger() && quantity(string(self)).asInteger() >= 1",message="maxMessage must be a whole number of bytes, at least 1"
	// +optional
	MaxMessage *resource.Quantity `json:"maxMessage,omitempty"`

	// MemberSlots bounds the publishers and subscribers attached at once.
	//
	// +kubebuilder:default=64
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4096
	// +optional
	MemberSlots *int32 `json:"memberSlots,omitempty"`

	// Lease is how long a member may go without a heartbeat before it is
	// taken for dead and its slot reclaimed: from 10ms to 1h.
	//
	// +kubebuilder:default="2s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('1h')",message="lease must be from 10ms to 1h"
	// +optional
	Lease *metav1.Duration `json:"lease,omitempty"`

	// Mirror keeps the channel's replicas on different nodes in step, so
	// that a message published on one node reaches subscribers on all of
	// them. Off, each node's channel is on its own.
	//
	// +kubebuilder:default=true
	// +optional
	Mirror *bool `json:"mirror,omitempty"`
}

// SharedMemoryChannelStatus is what the agents and the controller observed.
type SharedMemoryChannelStatus struct {
	// ObservedGeneration is the spec generation the controller's
	// conditions describe.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (the channel is present with its spec's settings on
	// every node that needs it) and Degraded (some node could not follow
	// the spec; the reason and message say why).
	//
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Nodes where the channel is present, with the members attached on each.
	//
	// +listType=map
	// +listMapKey=name
	// +optional
	Nodes []NodeStatus `json:"nodes,omitempty"`

	// Mirror is the controller's mirroring plan: the nodes whose agents
	// keep the channel's replicas in step. Absent when mirroring is off or
	// fewer than two nodes take part.
	//
	// +optional
	Mirror *MirrorPlan `json:"mirror,omitempty"`
}

// NodeStatus is the channel on one node. Each node's agent writes only its
// own entry, with server-side apply on the status subresource (field
// manager shimmy-agent-<node>), and removes it when the channel leaves the
// node.
type NodeStatus struct {
	// Name of the node.
	Name string `json:"name"`
	// Members attached on that node (publishers and subscribers).
	//
	// +kubebuilder:validation:Minimum=0
	Members int32 `json:"members"`
	// ObservedGeneration is the spec generation this node applied.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// State of the channel on this node: Ready (it holds the spec's
	// settings), NeedsIdle (the spec changed settings that only a fresh,
	// idle channel can take), Rejected (the registry refused the spec) or
	// Broken (the ring is corrupt).
	State NodeState `json:"state"`
	// Message says why, when the state is not Ready.
	//
	// +optional
	Message string `json:"message,omitempty"`
	// MirrorAddress is the "host:port" where this node's mirror listens;
	// empty when the node's agent has no mirror.
	//
	// +optional
	MirrorAddress string `json:"mirrorAddress,omitempty"`
}

// NodeState is the state of a channel on one node.
//
// +kubebuilder:validation:Enum=Ready;NeedsIdle;Rejected;Broken
type NodeState string

// Node states.
const (
	NodeReady     NodeState = "Ready"
	NodeNeedsIdle NodeState = "NeedsIdle"
	NodeRejected  NodeState = "Rejected"
	NodeBroken    NodeState = "Broken"
)

// Condition types and reasons of SharedMemoryChannelStatus.
const (
	ConditionReady    = "Ready"
	ConditionDegraded = "Degraded"

	// ReasonNeedsIdle: the spec changed settings that only a fresh, idle
	// channel can take; the node keeps the old ones until it is idle.
	ReasonNeedsIdle = "ChangeNeedsIdleChannel"
	// ReasonRejected: the node's registry refused the spec (a quota, or a
	// value the schema could not check).
	ReasonRejected = "Rejected"
	// ReasonBroken: the node's channel is broken (its ring is corrupt).
	ReasonBroken = "Broken"
	// ReasonReconciled: every node holds the spec's settings.
	ReasonReconciled = "Reconciled"
	// ReasonPending: a node that needs the channel has not reported it at
	// the spec's generation yet.
	ReasonPending = "Pending"
	// ReasonNotReported: a node has needed the channel for longer than the
	// controller's --node-report-timeout without reporting it.
	ReasonNotReported = "NodeNotReporting"
)

// SharedMemoryChannelList is a list of SharedMemoryChannels.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type SharedMemoryChannelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []SharedMemoryChannel `json:"items"`
}
