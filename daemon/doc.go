// Package daemon is the edge side of Ferry: it takes bundles from sources (registry, USB,
// S3, import), admits them into the store, and reconciles them onto the cluster.
//
// So far it holds the ingest path: verify first, then copy (ingest.go). Invariant: nothing of
// a bundle is written to the state directory before its signatures have been verified
// against the node's policy, and every blob is digest-checked as it is copied.
package daemon
