package bundler

import (
	"context"
	"crypto"
	"encoding/base64"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/internal/cosignkey"
)

// LoadPrivateKey reads a cosign private key file (as `cosign generate-key-pair` or
// `ferry keys generate` writes it) and decrypts it with password (cosignkey.Load).
func LoadPrivateKey(path string, password []byte) (crypto.Signer, error) {
	return cosignkey.Load(path, password)
}

// GenerateKeyPair makes an ECDSA P-256 key pair in cosign's format (cosignkey.Generate).
func GenerateKeyPair(password []byte) (privatePEM, publicPEM []byte, err error) {
	return cosignkey.Generate(password)
}

// SignTarget is where signatures are stored: beside the bundle, in the same store.
type SignTarget interface {
	content.Storage
	content.Resolver
	content.Tagger
}

// Sign signs bundle d with key and stores the signature beside it in dst, the way cosign
// does (SPEC §8). identity is the docker-reference claimed in the payload: the repository the
// bundle is published under, or its name.
func Sign(ctx context.Context, dst SignTarget, d ocispec.Descriptor, key crypto.Signer, identity string) (ocispec.Descriptor, error) {
	payload := bundles.NewPayload(identity, d.Digest)
	sig, err := cosignkey.Sign(key, payload)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return bundles.AppendSignature(ctx, dst, d, payload, base64.StdEncoding.EncodeToString(sig))
}
