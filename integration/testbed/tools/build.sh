#!/usr/bin/env bash
# Builds every binary the testbed runs into a cache outside the clone and prints that cache's
# bin directory on stdout. The cache key is a hash of this script, the tools modules and the Go
# version, so changing a pinned version builds a new set and an unchanged tree builds nothing.
#
#   FERRY_TESTBED_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/ferry-testbed)
#
# Used by `make testbed` and by the testbed Go package, which calls it before starting anything.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOTOOLCHAIN=local   # age and etcd name newer toolchains; never download one
export GOFLAGS=-mod=readonly
export CGO_ENABLED=0

# Tools without replace directives in their go.mod install straight from the module proxy at a
# pinned version; `go install pkg@version` uses the module's own go.mod and go.sum checks.
simple=(
	sigs.k8s.io/kwok/cmd/kwok@v0.8.0
	github.com/distribution/distribution/v3/cmd/registry@v3.1.2
	github.com/versity/versitygw/cmd/versitygw@v1.8.0
	github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
	github.com/getsops/sops/v3/cmd/sops@v3.13.3
	oras.land/oras/cmd/oras@v1.3.6
	helm.sh/helm/v3/cmd/helm@v3.22.0
	sigs.k8s.io/kustomize/kustomize/v5@v5.8.2
	filippo.io/age/cmd/age@v1.3.2
	filippo.io/age/cmd/age-keygen@v1.3.2
	honnef.co/go/tools/cmd/staticcheck@v0.7.0
)
# Tools whose go.mod replaces sibling modules with relative paths: built from a tools module
# of ours (tools/<dir>/go.mod) that pins the siblings to the same release.
modules=(kube etcd)

key=$( {
	cat "${BASH_SOURCE[0]}"
	for m in "${modules[@]}"; do cat "$here/$m/go.mod" "$here/$m/go.sum"; done
	go version
} | sha256sum | cut -c1-16)
root=${FERRY_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-testbed}
dir=$root/$key
mkdir -p "$root"

# One build at a time: test packages start in parallel and would otherwise race to build.
exec 9>"$root/.lock"
flock 9

if [ ! -f "$dir/complete" ]; then
	start=$(date +%s)
	echo "testbed: building binaries into $dir (cold build takes several minutes)" >&2
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp/bin"
	for p in "${simple[@]}"; do
		echo "testbed: go install $p" >&2
		GOBIN="$dir.tmp/bin" go install -trimpath -ldflags '-s -w' "$p" >&2
	done
	for m in "${modules[@]}"; do
		echo "testbed: go build tool (tools/$m)" >&2
		(cd "$here/$m" && go build -trimpath -ldflags '-s -w' -o "$dir.tmp/bin/" tool) >&2
	done
	# go names etcd's binary after its module path's last element (server/v3 -> server).
	mv "$dir.tmp/bin/server" "$dir.tmp/bin/etcd"
	# kwok's default Stages ship inside its module; keep the ones the testbed uses beside it.
	kwokdir=$(go env GOMODCACHE)/sigs.k8s.io/kwok@v0.8.0
	mkdir -p "$dir.tmp/stages"
	cp "$kwokdir/kustomize/stage/node/fast/node-initialize.yaml" \
		"$kwokdir/kustomize/stage/node/heartbeat/node-heartbeat.yaml" \
		"$kwokdir/kustomize/stage/pod/fast/pod-ready.yaml" \
		"$kwokdir/kustomize/stage/pod/fast/pod-complete.yaml" \
		"$kwokdir/kustomize/stage/pod/fast/pod-delete.yaml" \
		"$dir.tmp/stages/"
	chmod -R u+w "$dir.tmp"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	touch "$dir/complete"
	echo "testbed: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$dir"
