package bundler

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"oras.land/oras-go/v2/content"

	"github.com/ferrygitops/ferry/bundles"
)

// PEM types of cosign private keys: the current one and the one older cosign releases wrote.
const (
	pemSigstoreKey = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemCosignKey   = "ENCRYPTED COSIGN PRIVATE KEY"
	maxKeyFile     = 64 << 10
)

// LoadPrivateKey reads a cosign private key file (as `cosign generate-key-pair` or
// `ferry keys generate` writes it) and decrypts it with password. The error never holds the
// password or key material.
func LoadPrivateKey(path string, password []byte) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxKeyFile {
		return nil, fmt.Errorf("%s: over the %d-byte limit for a key", path, maxKeyFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	if block.Type != pemSigstoreKey && block.Type != pemCosignKey {
		return nil, fmt.Errorf("%s: PEM type %q, want an encrypted cosign key (%s)", path, block.Type, pemSigstoreKey)
	}
	der, err := encrypted.Decrypt(block.Bytes, password)
	if err != nil {
		return nil, fmt.Errorf("%s: decrypt: wrong password or damaged key", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%s: ECDSA curve %s, want P-256", path, k.Curve.Params().Name)
		}
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("%s: unsupported key type %T", path, key)
}

// GenerateKeyPair makes an ECDSA P-256 key pair in cosign's format: the private key PKCS#8,
// encrypted with password (scrypt + secretbox; an empty password still encrypts, as cosign
// requires), and the public key as PKIX PEM.
func GenerateKeyPair(password []byte) (privatePEM, publicPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	if password == nil {
		password = []byte{}
	}
	enc, err := encrypted.Encrypt(der, password)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemSigstoreKey, Bytes: enc}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
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
	sig, err := signPayload(key, payload)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return bundles.AppendSignature(ctx, dst, d, payload, base64.StdEncoding.EncodeToString(sig))
}

// signPayload signs as cosign does for each key type: SHA-256 then ECDSA (ASN.1) or RSA
// PKCS#1 v1.5; Ed25519 over the payload itself.
func signPayload(key crypto.Signer, payload []byte) ([]byte, error) {
	if k, ok := key.(ed25519.PrivateKey); ok {
		return ed25519.Sign(k, payload), nil
	}
	sum := sha256.Sum256(payload)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}
