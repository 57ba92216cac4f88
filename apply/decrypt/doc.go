// Package decrypt opens SOPS-encrypted files in memory on the node, with the node's age
// identities and nothing else.
//
// Bundles carry SOPS files byte for byte; this package is the one door through which sops is
// used on a node. It owns:
//
//   - [LoadKeys]: reading the node's age key file, refused when group or others may read it;
//   - [IsEncrypted]: a cheap test, by file name, whether a file carries SOPS metadata;
//   - [Keys.File] and [Keys.Files]: turning an encrypted file into exactly the bytes
//     `sops --decrypt` prints for it.
//
// Invariants:
//
//   - The data key is recovered only from the age stanzas in the file and the identities held
//     by [Keys]. Nothing reads SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, ~/.config/sops/age/keys.txt,
//     SSH keys, age plugins, PGP keyrings or cloud KMS credentials: the sops packages that
//     would (sops/v3/decrypt, keyservice, MasterKey.Decrypt) are never called.
//   - A file decrypts only if its MAC verifies: the MAC stored in the file is decrypted with the
//     data key, bound to `lastmodified`, and compared with the MAC computed over the decrypted
//     tree, as sops's own decrypt path does. There is no way to skip the check. The MAC proves
//     the file is whole, not who wrote it: anyone who knows the node's public key can write a
//     file that verifies. Where a file comes from is the bundle signature's job (verify).
//   - Errors name the file and say what was wrong; they never hold a plaintext value, a data
//     key, a MAC or identity material. Errors from the sops and age libraries are not wrapped,
//     because several of them quote the input they choke on; each is replaced by a message of
//     our own. Age recipients (public keys) may appear in errors.
//   - Plaintext is never written to disk by this package.
//
// Formats follow the file name exactly as the sops CLI chooses them (case-sensitive suffix):
// ".yaml"/".yml" YAML, ".json" JSON, ".env" dotenv, anything else sops's binary envelope.
// ".ini" files are refused: sops's INI store is not supported on nodes.
//
// What it does not do: encrypt, re-encrypt, rotate keys, or decrypt with anything but age
// (files whose key groups hold only PGP or KMS keys are refused with the recipients listed).
//
// Importing sops has one process-wide effect this package cannot prevent: sops's audit package
// reads /etc/sops/audit.yaml when the program starts (and sops loggers write warnings to
// stderr). A node should not have that file.
package decrypt
