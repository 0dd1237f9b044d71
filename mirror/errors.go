package mirror

import "errors"

// Errors, matched with errors.Is.
var (
	// ErrPlan: a plan is invalid (Validate, LoadPlan, Apply).
	ErrPlan = errors.New("mirror: invalid plan")
	// ErrProtocol: a peer sent something the wire format does not allow;
	// the link is closed and re-established.
	ErrProtocol = errors.New("mirror: protocol violation")
	// ErrVersion: a peer speaks another version of the wire format.
	ErrVersion = errors.New("mirror: unsupported wire version")
	// ErrUnknownPeer: a link from an identity the plan does not list.
	ErrUnknownPeer = errors.New("mirror: unknown peer")
	// ErrClosed: the mirror was stopped.
	ErrClosed = errors.New("mirror: closed")
)

// errInterrupted ends a session whose shares changed or whose peer
// dialed again.
var errInterrupted = errors.New("mirror: link replaced (plan changed or the peer dialed again)")
