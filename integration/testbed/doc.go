// Package testbed starts the real services Ferry's integration tests and demo run against,
// on free loopback ports in one temporary directory, and stops them again:
//
//   - etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from source
//     (k8s.io/kubernetes through a separate tools module, see tools/kube/go.mod);
//   - kwok, whose fake nodes make pods Running and Ready, with one Stage of ours that keeps
//     pods labelled [FailLabel] from ever becoming Ready, so a test can make a rollout fail;
//   - an OCI registry (distribution v3) and an S3 server (versitygw, posix backend);
//   - the CLIs interoperability tests call: cosign, sops, oras, helm, age, kubectl, kustomize.
//
// Binaries come from tools/build.sh, which builds them once into a cache outside the clone
// (${XDG_CACHE_HOME:-~/.cache}/ferry-testbed/<hash>) and reuses them afterwards.
//
// Invariants: every process the testbed starts is in its own process group and is stopped
// (SIGTERM, then SIGKILL of the group) by [Testbed.Stop], also when [Start] fails half way;
// nothing is written outside the testbed's directory and the binary cache. Certificates and
// keys are generated here in Go. A testbed that cannot be built or started is an error, never
// a skip: [Main] exits non-zero with the reason.
//
// The testbed is for tests and the demo only; nothing in the product imports it.
package testbed
