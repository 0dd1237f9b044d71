package harness

import (
	"context"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/agent"
)

// InProcessAgent returns the Agent hook of Options for the data-file cases:
// it runs an agent with front end fe (fs.FrontEnd in shimmy-bench) in this
// process, on a temporary mount with its rings in a temporary state
// directory. It needs root and /dev/fuse.
func InProcessAgent(fe agent.FrontEnd) func(ctx context.Context) (string, func(), error) {
	return func(ctx context.Context) (string, func(), error) {
		mnt, err := os.MkdirTemp("", "shimmy-bench-mnt-")
		if err != nil {
			return "", nil, err
		}
		state, err := os.MkdirTemp("/dev/shm", "shimmy-bench-state-")
		if err != nil {
			os.Remove(mnt)
			return "", nil, err
		}
		cleanup := func() { os.Remove(mnt); os.RemoveAll(state) }
		cfg := agent.DefaultConfig()
		cfg.FrontEnd = fe
		cfg.MountPoint, cfg.StateDir, cfg.MetricsAddr = mnt, state, agent.MetricsOff
		log := logrus.New()
		log.SetLevel(logrus.WarnLevel)
		cfg.Log = log
		a, err := agent.New(cfg)
		if err != nil {
			cleanup()
			return "", nil, err
		}
		stop, err := a.Start(ctx)
		if err != nil {
			cleanup()
			return "", nil, fmt.Errorf("bench agent: %w", err)
		}
		return mnt, func() {
			if err := stop(); err != nil {
				log.WithError(err).Warn("bench agent stopped with an error")
			}
			cleanup()
		}, nil
	}
}
