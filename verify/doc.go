// Package verify decides whether a bundle may be trusted: it checks the cosign signatures a
// bundle carries against a policy of public keys, offline, before anything of the bundle is
// written anywhere. `ferry bundle verify` and the daemon's ingest call the same code.
//
// Invariants:
//   - Fail closed: no signature, an unknown key, a signature over another digest, or too few
//     distinct signers is an error wrapping ErrUntrusted; there is no "warn" mode.
//   - A signature counts only when its payload claims exactly the bundle's manifest digest
//     (the check cosign's SimpleClaimVerifier does); a valid signature over any other payload
//     proves nothing.
//   - Nothing here contacts a network: no transparency log, no certificate authority.
//   - A key's scope may require SLSA provenance (Result.Attested): an attestation counts only
//     once its DSSE signature verifies with a policy key named as attestor, and only if its
//     subject is this manifest and the source it names is the one the signed config names.
//     The provenance admitted is part of the Result stored with the revision.
//
// Verification uses the standard library's ECDSA, RSA and Ed25519 rather than cosign's Go
// packages (hundreds of packages for a few lines of checks); the integration tests run the
// real cosign CLI against Ferry's signatures both ways to keep the two compatible.
package verify
