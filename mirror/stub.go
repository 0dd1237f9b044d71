package mirror

import "context"

type state struct{}

func openState(dir string) (*state, error) { return &state{}, nil }

type peer struct{}

func (p *peer) stats() LinkStats { return LinkStats{} }

func (m *Mirror) run(ctx context.Context) error { <-ctx.Done(); return nil }
