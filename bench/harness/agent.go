package harness

import (
	"context"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/agent"
)

// InProcessAgent runs an agent in this process on a temporary mount, with its
// rings in a temporary state directory, for the data-file cases: the Agent hook of Options. It needs root and
// /dev/fuse.
func InProcessAgent(ctx context.Context) (string, func(), error) {
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
	cfg.MountPoint, cfg.StateDir, cfg.MetricsAddr = mnt, state, ""
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	cfg.Log = log
	a, err := agent.New(cfg)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		cleanup()
		return "", nil, fmt.Errorf("bench agent: %w", err)
	case <-ctx.Done():
		cancel()
		<-done
		cleanup()
		return "", nil, ctx.Err()
	}
	return mnt, func() {
		cancel()
		if err := <-done; err != nil {
			log.WithError(err).Warn("bench agent stopped with an error")
		}
		cleanup()
	}, nil
}
