// Package images is the node's image endpoint: a read-only OCI distribution API, on loopback,
// that serves the container images of every kept revision straight from the store's content
// files, so the node's containerd (k3s's) reaches it as a mirror of each upstream registry.
//
// Images keep the names the manifests use. containerd asks a mirror for
// /v2/library/nginx/manifests/1.25?ns=docker.io; the endpoint also answers
// /v2/docker.io/library/nginx/manifests/1.25 (the registry host as the first path element),
// for clients that cannot add the ns query (skopeo, oras, crane). Manifests are served as
// stored, with the digest CI signed: nothing is rewritten.
//
// Invariants:
//   - Only GET and HEAD are answered; anything that writes gets 405 UNSUPPORTED.
//   - A repository serves only the manifests and blobs of the graphs of images named by that
//     repository in a kept revision: the bundle's own layers, its signatures and other
//     repositories' blobs are never served, whatever digest is asked for.
//   - A tag resolves only to what the current revision of a bundle or one of its healthy
//     revisions carries; the current revision wins, then the newest healthy one. A digest
//     resolves in any kept revision, so a rollback pulls nothing from anywhere.
//   - The index is rebuilt when the store's generation changes, so an admission, a state
//     change or garbage collection is seen by the next request.
//
// Blobs are served with http.ServeContent from the content file (Range, HEAD, sendfile):
// memory does not grow with image size. The listener bounds concurrent connections.
//
// Not done here: writing containerd's configuration (see Configure in mirror.go).
package images
