# Shimmy: shared-memory channels served as files.
GO        ?= go
BIN       ?= bin/shimmy
BENCH_BIN ?= bin/shimmy-bench
MOUNT     ?= /run/shimmy
STATE_DIR ?= /dev/shm/shimmy
# The race detector slows the multi-process tests; give them room.
TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: build run test test-node vet verbs k8s-bins images node-images codegen bench bench-scale bench-deps bench-full fuzz clean

# The node binary (agent + CLI) and the benchmark against brokers, which
# is kept out of it so that the node links no broker client.
build:
	$(GO) build -o $(BIN) ./cmd/shimmy
	$(GO) build -o $(BENCH_BIN) ./cmd/shimmy-bench

# Runs the node agent on its embedded defaults (no Kubernetes): mounts
# $(MOUNT), keeps channels in $(STATE_DIR). Needs root and /dev/fuse.
run: build
	$(BIN) agent --mount $(MOUNT) --state-dir $(STATE_DIR)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# The Kubernetes tests (test/k8s, test/node) run etcd, kube-apiserver and the
# rest built from the tool module hack/k8s-bins, and test/node runs the
# images; building them first keeps a cold build (minutes) out of the tests'
# timeout. A warm cache (.cache/k8s-bins, Go's build cache) returns at once.
# test/node (a real node running deploy/ and examples/pipeline) runs last,
# alone, in test-node: it needs the machine's two cores to itself.
test: vet verbs k8s-bins
	$(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v '/test/node$$')
	$(MAKE) --no-print-directory test-node

# The node end-to-end test alone (it skips, saying why, without root,
# containerd, runc or busybox-static).
test-node: k8s-bins node-images
	$(GO) test $(TEST_FLAGS) -v ./test/node/

k8s-bins:
	hack/k8s-bins/build.sh >/dev/null

# The container images (shimmy:dev, shimmy-client:dev) as docker-archive
# tars built from static binaries, no registry: $(IMAGES)/*.tar. LOAD=ctr
# imports them into containerd (namespace k8s.io, socket CONTAINERD),
# LOAD=docker into Docker.
IMAGES     ?= .cache/images
LOAD       ?=
CONTAINERD ?= /run/containerd/containerd.sock
images:
	$(GO) run ./hack/images -out $(IMAGES) -load "$(LOAD)" -address $(CONTAINERD)

# The images for test/node, where it can run (it skips, saying why, without
# containerd; hack/images needs busybox-static; .ci/run installs both).
node-images:
	@if command -v containerd >/dev/null && dpkg -s busybox-static >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory images; \
	else \
		echo "node-images: skipped: containerd or busybox-static is missing (test/node will skip; .ci/run installs them)"; \
	fi

# Regenerates deep copies, clientset, listers, informers and the CRD from
# k8s/apis (TestGeneratedUpToDate checks that this was done).
codegen:
	hack/update-codegen.sh

# The verbs transport backend builds only with its tag and libibverbs-dev
# (.ci/run installs it): vet it and run its tests (without an RDMA device
# they check that it reports "no RDMA device"; see docs/remote.md).
verbs:
	@if [ ! -e /usr/include/infiniband/verbs.h ]; then \
		echo "verbs: skipped: libibverbs-dev is missing (apt-get install libibverbs-dev; .ci/run installs it)"; \
	else \
		$(GO) vet -tags verbs ./rdma/... && $(GO) test -tags verbs -count=1 ./rdma/verbs/; \
	fi

# Ring benchmarks against a bare SPSC ring, a Unix socket pair and a
# futex wake-up, all measured in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./bench/ringbench/

# The node at scale (docs/limits.md): agent RSS and idle CPU at 0 to 100 000
# channels (100 000 needs vm.max_map_count raised), a publisher with 1 to
# 1 000 mmap subscribers, and 1 000 file readers coming and going.
bench-scale:
	$(GO) test -run '^$$' -bench 'IdleScale|FileReaders' -benchtime 1x -timeout 30m ./agent/
	$(GO) test -run '^$$' -bench Fanout -benchtime 200000x ./channel/

# Debian packages of the servers `shimmy-bench` compares against (Kafka is
# not packaged in Debian 12), and of the C peers it compiles (iceoryx,
# ZeroMQ; POSIX message queues are libc's).
bench-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto nats-server redis-server \
		gcc libc6-dev iceoryx libiceoryx-binding-c-dev libzmq3-dev

# The paper's evaluation against Mosquitto, NATS, Redis and kernel sockets:
# writes bench/results/<date>/ (table, CSV, JSON, plots).
bench-full: build
	$(BENCH_BIN)

# Runs each fuzzer for a while (about 5 minutes in all); seeds in
# testdata/fuzz run in every `make test`. FuzzHostilePeer rewrites ring
# fields while a client uses the ring (rings up to 4 MiB and 4096 slots);
# FuzzRogueMembers checks honest members beside dying and stalling ones;
# FuzzPaddingReclaimed laps a subscriber while it reads a padding frame.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./channel/
	$(GO) test -run '^$$' -fuzz FuzzReader -fuzztime 120s ./channel/
	$(GO) test -run '^$$' -fuzz FuzzHostilePeer -fuzztime 60s -fuzzminimizetime 20x ./channel/
	$(GO) test -run '^$$' -fuzz FuzzRogueMembers -fuzztime 60s -fuzzminimizetime 10x ./channel/
	$(GO) test -run '^$$' -fuzz FuzzPaddingReclaimed -fuzztime 30s ./channel/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./rdma/tcp/

clean:
	rm -rf bin
