// Package render turns a component's files into the Kubernetes objects they describe, the
// way Flux's kustomize-controller does, but offline and confined:
//
//   - kustomize runs over an in-memory copy of the component's files only, so no path in a
//     kustomization can reach the node's disk, with load restrictions to the root, plugins
//     and exec functions disabled, and remote bases refused before kustomize sees them;
//   - Flux's component-level patches, targetNamespace and commonMetadata are applied as an
//     overlay around the component;
//   - kustomize panics are turned into errors.
//
// The same code serves `ferry bundle build` (to prove a component builds), `ferry render`,
// `ferry bundle diff` and the daemon, so what a user previews is what a node applies.
// Decryption and ${VAR} substitution happen after this step, on the node.
package render
