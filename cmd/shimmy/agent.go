package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/fs"
)

// agentConfig turns the agent's command line into an agent.Config whose
// front end is the FUSE tree.
func agentConfig(e *env, args []string) (agent.Config, error) {
	cfg, mount, err := agentFlags(e, args)
	if err != nil {
		return cfg, err
	}
	cfg.FrontEnd = fs.FrontEnd(mount)
	return cfg, nil
}

// agentFlags parses the agent's command line: the agent's configuration and
// the options of its FUSE mount.
func agentFlags(e *env, args []string) (agent.Config, fs.MountOptions, error) {
	cfg := agent.DefaultConfig()
	mount := fs.MountOptions{AllowOther: true}
	fl := newFlagSet("agent", "shimmy agent [flags]",
		`Run the node agent: mount the channel filesystem at --mount, keep the
channels' rings in --state-dir (a tmpfs, so that they survive an agent
restart but not a reboot), serve /metrics and /healthz on --metrics, and
serve until SIGINT or SIGTERM, then unmount. Needs root (or CAP_SYS_ADMIN)
and /dev/fuse. The size, policy and lease flags are the defaults of channels
created without their own configuration. With --mirror-plan, the agent also
keeps the channels the plan shares in step with the agents of other hosts
(docs/remote.md).

With --kubernetes the agent also runs the node reconciler: it makes the
channel of each SharedMemoryChannel that selects a pod bound to this node
(--node-name, default $NODE_NAME), keeps its settings in step with the spec,
removes it once no local pod selects it and it is idle, sets namespace
quotas from the shimmy.io/quota annotation (or --default-quota), and
reports this node in each channel's status.nodes. See docs/kubernetes.md.
With --kubernetes and --mirror-tls-dir (no --mirror-plan: refused), the
mirror follows the controller's plans instead (each channel's
status.mirror): the node's certificate must carry its node name (shimmy
certs node --name <node>), --mirror-listen is required, and the node
reports the address peers dial as its mirrorAddress: --mirror-advertise,
needed when --mirror-listen is a wildcard (:7470, 0.0.0.0:7470).

--pod-dir keeps, for each namespace, a bind of <mount>/<ns> at
<pod-dir>/<ns>: the host path of pods' volumes (the admission webhook gives
pods /run/shimmy-pods/<ns>). An agent that starts again covers those binds
with its own, and the kernel carries that into running pods: files they open
afterwards work, files open across the restart fail with ENOTCONN (reopen
them), mmap clients never notice. A volume of <mount>/<ns> itself stays dead
after a restart. On by default (`+agent.DefaultPodDir+`) only with
--kubernetes; "off" disables it.`,
		"shimmy agent --mount /run/shimmy --state-dir /dev/shm/shimmy --capacity 4M --log-level debug\n"+
			"shimmy agent --pod-dir /run/shimmy-pods\n"+
			"shimmy agent --mirror-plan /etc/shimmy/plan.yaml --mirror-tls-dir /etc/shimmy/tls --mirror-listen 10.0.0.1:7470\n"+
			"NODE_NAME=node-a shimmy agent --kubernetes --kubeconfig ~/.kube/config --default-quota 'max_channels 64, max_bytes 1G'\n"+
			"NODE_NAME=node-a shimmy agent --kubernetes --mirror-tls-dir /etc/shimmy/tls --mirror-listen :7470 --mirror-advertise 10.0.0.1:7470")
	fl.StringVar(&cfg.MountPoint, "mount", cfg.MountPoint, "mount point of the channel filesystem")
	fl.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory of the rings' shared memory (a tmpfs)")
	fl.StringVar(&cfg.MetricsAddr, "metrics", cfg.MetricsAddr, fmt.Sprintf("address of the /metrics and /healthz HTTP server (%q disables it)", agent.MetricsOff))
	logLevel := fl.String("log-level", "info", "log level: panic, fatal, error, warn, info, debug or trace")
	d := cfg.Defaults.WithDefaults()
	capacity := &sizeFlag{n: d.Capacity}
	fl.Var(capacity, "capacity", "default ring data bytes per direction, a power of two (K, M, G suffixes)")
	maxMsg := &sizeFlag{n: uint64(d.MaxMessage)}
	fl.Var(maxMsg, "max-message", "default largest message (K, M, G suffixes)")
	fl.Var(&textFlag{v: &d.Policy}, "policy", "default overflow policy of pubsub channels: block or overwrite")
	slots := fl.Uint("member-slots", uint(d.MemberSlots), "default member slots per channel")
	fl.DurationVar(&d.Lease, "lease", d.Lease, "default member lease: a member silent this long is reaped")
	fl.DurationVar(&cfg.ReapInterval, "reap-interval", cfg.ReapInterval, "how often the agent reaps dead members (0: the agent's default)")
	fl.BoolVar(&mount.AllowOther, "allow-other", mount.AllowOther, "let users other than root use the mount (subject to each channel's mode)")
	fl.BoolVar(&mount.Debug, "debug", mount.Debug, "log every FUSE request (very verbose)")
	fl.StringVar(&cfg.Mirror.PlanFile, "mirror-plan", "", "mirror: plan file of peers and shared channels (docs/remote.md); reloaded when it changes and on SIGHUP; unset: no mirror")
	fl.StringVar(&cfg.Mirror.TLSDir, "mirror-tls-dir", "", "mirror: this node's TLS directory, ca.crt, node.crt and node.key (shimmy certs node --out)")
	fl.StringVar(&cfg.Mirror.Listen, "mirror-listen", "", "mirror: address to accept peers' links on, host:port (unset: dial only)")
	fl.StringVar(&cfg.Mirror.Advertise, "mirror-advertise", "", "mirror, with --kubernetes: the host:port peers dial, reported as the node's mirrorAddress (default --mirror-listen, which must then name a host)")
	fl.DurationVar(&cfg.Mirror.Timeout, "mirror-timeout", 0, "mirror: a link silent this long is closed and dialed again (0: 10s)")
	fl.StringVar(&cfg.CPUProfile, "cpu-profile", "", "write a CPU profile of the agent's run to this file (go tool pprof), for profiling")
	podDir := fl.String("pod-dir", "", `pods' view of the namespaces, kept across agent restarts (`+agent.DefaultPodDir+` with --kubernetes, else none; "off": none)`)
	kube := addKubeFlags(fl, e)
	_, err := parse(fl, e, args, 0, 0)
	if err != nil {
		return cfg, mount, err
	}
	if cfg.Kubernetes, err = kube.kubernetes(); err != nil {
		return cfg, mount, err
	}
	switch {
	case *podDir == "off":
	case *podDir != "":
		cfg.PodDir = *podDir
	case cfg.Kubernetes != nil:
		cfg.PodDir = agent.DefaultPodDir
	}
	level, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		return cfg, mount, usagef("--log-level: %v", err)
	}
	d.Capacity = capacity.n
	if maxMsg.n > 1<<32-1 {
		return cfg, mount, usagef("--max-message %s is too large", channel.FormatSize(maxMsg.n))
	}
	d.MaxMessage = uint32(maxMsg.n)
	if !maxMsg.set {
		d.MaxMessage = 0 // the channel default, which fits a smaller ring
	}
	d.MemberSlots = uint32(*slots)
	d = d.WithDefaults()
	d.Epoch = 0 // each channel takes its own creation epoch
	if err := d.Validate(); err != nil {
		return cfg, mount, usageError{fmt.Errorf("channel defaults: %w", err)}
	}
	cfg.Defaults = d
	log := logrus.New()
	log.SetOutput(e.stderr)
	log.SetLevel(level)
	cfg.Log = log
	return cfg, mount, nil
}

func runAgent(e *env, args []string) error {
	cfg, err := agentConfig(e, args)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				a.ReloadPlan()
			case <-a.Done():
				return
			}
		}
	}()
	return a.Run(ctx)
}
