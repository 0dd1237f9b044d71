# Shimmy: shared-memory channels served as files.
GO        ?= go
BIN       ?= bin/shimmy
MOUNT     ?= /run/shimmy
STATE_DIR ?= /dev/shm/shimmy
# The race detector slows the multi-process tests; give them room.
TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: build run test vet bench fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/shimmy

# Runs the node agent on its embedded defaults (no Kubernetes): mounts
# $(MOUNT), keeps channels in $(STATE_DIR). Needs root and /dev/fuse.
run: build
	$(BIN) agent --mount $(MOUNT) --state-dir $(STATE_DIR)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test: vet
	$(GO) test $(TEST_FLAGS) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./bench/ringbench/

# Runs each fuzzer for a while; seeds in testdata/fuzz run in every `make test`.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./channel/
	$(GO) test -run '^$$' -fuzz FuzzReader -fuzztime 120s ./channel/

clean:
	rm -rf bin
