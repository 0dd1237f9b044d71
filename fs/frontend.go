package fs

import (
	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/registry"
)

// FrontEnd is Mount with o as the agent's front end (agent.Config.FrontEnd,
// whose type this function's result has): the agent hands in the mount
// point, the registry and its logger (used unless o.Log is set), and waits
// on the server to learn that the connection ended.
func FrontEnd(o MountOptions) func(dir string, reg *registry.Registry, log logrus.FieldLogger) (wait func(), passthrough bool, err error) {
	return func(dir string, reg *registry.Registry, log logrus.FieldLogger) (func(), bool, error) {
		mo := o
		if mo.Log == nil {
			mo.Log = log
		}
		server, pt, err := Mount(dir, reg, mo)
		if err != nil {
			return nil, false, err
		}
		return server.Wait, pt, nil
	}
}
