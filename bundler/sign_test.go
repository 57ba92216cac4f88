package bundler

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/verify"
)

func writeKeyPair(t *testing.T, password string) (priv, pub string) {
	t.Helper()
	privPEM, pubPEM, err := GenerateKeyPair([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
	if err := os.WriteFile(priv, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func TestSignThenVerify(t *testing.T) {
	dir, _ := gitTree(t)
	store := memory.New()
	res, err := Build(t.Context(), store, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := writeKeyPair(t, "correct horse")
	key, err := LoadPrivateKey(priv, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Sign(t.Context(), store, res.Descriptor, key, "demo"); err != nil {
		t.Fatal(err)
	}
	trusted, err := verify.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Bundle(t.Context(), store, res.Descriptor, verify.Policy{Keys: []verify.Key{trusted}}); err != nil {
		t.Fatal(err)
	}
	// Signing again with a second key adds a signature rather than replacing the first.
	priv2, pub2 := writeKeyPair(t, "")
	key2, err := LoadPrivateKey(priv2, []byte(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Sign(t.Context(), store, res.Descriptor, key2, "demo"); err != nil {
		t.Fatal(err)
	}
	second, _ := verify.LoadPublicKey(pub2)
	got, err := verify.Bundle(t.Context(), store, res.Descriptor, verify.Policy{Keys: []verify.Key{trusted, second}, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Signers) != 2 {
		t.Fatalf("signers %+v", got.Signers)
	}
	// An untrusted key's signature does not count.
	_, other := writeKeyPair(t, "x")
	untrusted, _ := verify.LoadPublicKey(other)
	if _, err := verify.Bundle(t.Context(), store, res.Descriptor, verify.Policy{Keys: []verify.Key{untrusted}}); !errors.Is(err, verify.ErrUntrusted) {
		t.Fatalf("err = %v, want ErrUntrusted", err)
	}
}

func TestLoadPrivateKeyRefusals(t *testing.T) {
	priv, pub := writeKeyPair(t, "right")
	if _, err := LoadPrivateKey(priv, []byte("wrong")); err == nil || strings.Contains(err.Error(), "right") {
		t.Fatalf("err = %v, want a refusal that does not echo the password", err)
	}
	if _, err := LoadPrivateKey(pub, []byte("right")); err == nil || !strings.Contains(err.Error(), "want an encrypted cosign key") {
		t.Fatalf("public key as private: err = %v", err)
	}
	if _, err := LoadPrivateKey(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Fatal("missing file accepted")
	}
}
