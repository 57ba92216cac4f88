// Package cosignkey reads, makes and signs with private keys in cosign's format, for the
// CI's signing keys (bundler) and the node's own key (daemon receipts) alike.
package cosignkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
)

// PEM types of cosign private keys: the current one and the one older cosign releases wrote.
const (
	pemSigstoreKey = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemCosignKey   = "ENCRYPTED COSIGN PRIVATE KEY"
	maxKeyFile     = 64 << 10
)

// Load reads a cosign private key file (as `cosign generate-key-pair` or
// `ferry keys generate` writes it) and decrypts it with password. The error never holds the
// password or key material.
func Load(path string, password []byte) (crypto.Signer, error) {
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

// Generate makes an ECDSA P-256 key pair in cosign's format: the private key PKCS#8,
// encrypted with password (scrypt + secretbox; an empty password still encrypts, as cosign
// requires), and the public key as PKIX PEM.
func Generate(password []byte) (privatePEM, publicPEM []byte, err error) {
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

// Sign signs as cosign does for each key type: SHA-256 then ECDSA (ASN.1) or RSA
// PKCS#1 v1.5; Ed25519 over the payload itself.
func Sign(key crypto.Signer, payload []byte) ([]byte, error) {
	if k, ok := key.(ed25519.PrivateKey); ok {
		return ed25519.Sign(k, payload), nil
	}
	sum := sha256.Sum256(payload)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// WriteNew writes a key file that must not exist yet (a key is never overwritten), synced,
// and removed again if it could not be written whole.
func WriteNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
