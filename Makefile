# Ferry's build. `make test` is what CI runs (.ci/run); `make test-unit` is the quick loop.
SHELL := /bin/bash
GO ?= go
# Never download a toolchain: some tool modules name a newer Go than the one installed.
export GOTOOLCHAIN := local
# kustomize's Go plugin loader links package plugin, which with cgo puts the linker in
# dynamic mode: every symbol exported, 30 MB more binary and ~36 MiB more RSS on the node
# (docs/BENCHMARKS.md, "The edge daemon"). Ferry never loads plugins; build, test and
# benchmark what ships.
export GOFLAGS := -tags=kustomize_disable_go_plugin_support

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Everything but the integration tree: no testbed needed, runs with the race detector.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/integration')
TESTBED_BIN = $(shell integration/testbed/tools/build.sh)/bin

.PHONY: all build test test-unit test-integration testbed demo lint fuzz bench bench-apply bench-daemon bench-helm bench-images bench-fleet clean

all: build

## build: the ferry binary in bin/ (release flags: -trimpath, stripped)
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ferry ./cmd/ferry

## testbed: install the testbed's Debian packages (containerd, skopeo) and build (once) and cache its binaries outside the clone
testbed:
	integration/testbed/tools/packages.sh
	integration/testbed/tools/build.sh

## test: every test — unit tests with -race, then integration tests on the testbed
test: testbed test-unit test-integration

## test-unit: unit tests only, with the race detector; no testbed
test-unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

## test-integration: tests that start the testbed (real API server, registry, S3)
test-integration: testbed
	$(GO) test -count=1 -timeout 30m ./integration/...

## demo: a bundle's life on an edge node: CI build and sign, USB stick, ferry daemon, health, automatic rollback (DEMO_FLAGS=-keep to leave it up)
demo: testbed build
	$(GO) run ./integration/demo -ferry bin/ferry $(DEMO_FLAGS)

## lint: gofmt, go vet and staticcheck (staticcheck comes from the testbed cache)
lint: testbed
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TESTBED_BIN)/staticcheck ./...

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./... | grep -v /integration); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## bench: benchmarks, each compared with a peer in the same run (see docs/BENCHMARKS.md)
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(UNIT_PKGS)

## bench-daemon: the edge daemon's binary size, memory, CPU and stick-to-healthy time (testbed; ~6 min)
.PHONY: bench-daemon
## bench-apply: the apply engine against kubectl, fluxcd/pkg/ssa and a raw loop, then the render sweep (1k, 4k, 16k objects) against kustomize build (12 min, then about 40 min for the sweep, most of it kustomize at 16k; RENDER_FLAGS='-sizes 1000,4000' takes 4 min)
bench-apply: testbed
	$(GO) run ./bench/apply -runs 3
	$(GO) run ./bench/render $(RENDER_FLAGS)

## bench-render: only the render sweep of bench-apply
.PHONY: bench-render
bench-render: testbed
	$(GO) run ./bench/render $(RENDER_FLAGS)

bench-daemon: testbed
	$(GO) run ./bench/daemon

## bench-images: a bundle carrying a 2 GiB image through build, export, verify, ingest and a containerd pull, each beside a peer (testbed; ~5 min; IMAGE_SIZE=4GiB)
IMAGE_SIZE ?= 2GiB
bench-images: testbed build
	$(GO) run ./bench/images -ferry bin/ferry -size $(IMAGE_SIZE)

## bench-mirror: ferry mirror registry ↔ tar and layout beside oras cp and skopeo copy, and a thin delta archive's size and import beside a full one (testbed; ~12 min; MIRROR_FLAGS="-runs 1 -total 512")
.PHONY: bench-mirror
bench-mirror: testbed
	$(GO) run ./bench/mirror $(MIRROR_FLAGS)

## bench-helm: Helm releases, the apply engine against the helm CLI (testbed; about 1 min)
bench-helm: testbed
	$(GO) run ./bench/helm -runs 3

## bench-fleet: 500 nodes' pollers and admission against one registry, then one S3 server: requests, bytes and mirror CPU per idle poll, time until all admit a new revision (testbed; ~25 min; FLEET_FLAGS='-nodes 50 -idle 30s' for a quick run)
bench-fleet: testbed
	$(GO) run ./bench/fleet $(FLEET_FLAGS)

clean:
	rm -rf bin/
