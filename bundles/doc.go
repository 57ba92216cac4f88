// Package bundles owns Ferry's bundle format (SPEC.md in this directory is the truth): its
// media types, the signed metadata, the reproducible component layers, ferry.yaml, and the
// addresses that name where a bundle lives.
//
// Invariants kept here:
//   - What this package writes is reproducible: the same inputs give the same bytes (SPEC §5).
//   - Everything read from outside (metadata, layers, ferry.yaml) is parsed once into a
//     validated type, with size and count limits named below, and refused with an error that
//     names the file and field rather than skipped or truncated.
//   - No path read from a layer or a ferry.yaml can leave the directory it belongs to.
//   - A layout directory or archive (a USB stick) is read with a deadline on every open,
//     stat and read (stall.go, stick.go): a call that does not answer fails with ErrStalled
//     and is left to return on its own goroutine, holding only its own buffer and the file.
//     An archive is read from the one file that was checked, at the offsets the check found.
//
// It does not verify signatures (package verify), build from Git (package bundler) or talk to
// the cluster (package apply), and imports none of them.
package bundles
