// Package bundler builds bundles from a source tree: it reads ferry.yaml, records the Git
// provenance of the tree (commit, remote, dirty flag) with go-git, packs each component into
// a reproducible layer and stores the bundle in an OCI layout. It also signs bundles with
// cosign-format keys (sign.go).
//
// Invariants: a build takes no input from the clock unless the caller passes a time, so the
// same commit builds the same digest; a dirty tree is refused unless the caller allows it, and
// then the metadata says so; nothing outside the directory of ferry.yaml is read.
//
// It does not push or verify; those are bundles' transports and package verify.
package bundler
