package verify

import (
	"bytes"
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
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundles"
)

type signer struct {
	priv crypto.Signer
	key  Key
}

func newSigner(t *testing.T, kind string) signer {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch kind {
	case "ecdsa":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(priv.Public())
	key, err := ParsePublicKey(kind+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return signer{priv: priv, key: key}
}

func (s signer) sign(t *testing.T, payload []byte) string {
	t.Helper()
	var sig []byte
	var err error
	if k, ok := s.priv.(ed25519.PrivateKey); ok {
		sig = ed25519.Sign(k, payload)
	} else {
		sum := sha256.Sum256(payload)
		sig, err = s.priv.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// aBundle stores some manifest to stand for a bundle; only its digest matters here.
func aBundle(t *testing.T) (*memory.Store, ocispec.Descriptor) {
	t.Helper()
	store := memory.New()
	b := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
	if err := store.Push(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return store, d
}

func TestBundleAcceptsEachKeyType(t *testing.T) {
	for _, kind := range []string{"ecdsa", "rsa", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			store, d := aBundle(t)
			s := newSigner(t, kind)
			payload := bundles.NewPayload("edge-apps", d.Digest)
			if _, err := bundles.AppendSignature(t.Context(), store, d, payload, s.sign(t, payload)); err != nil {
				t.Fatal(err)
			}
			res, err := Bundle(t.Context(), store, d, Policy{Keys: []Key{s.key}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Signers) != 1 || res.Signers[0].KeyID != s.key.ID || res.Digest != d.Digest.String() {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

func TestBundleRefusals(t *testing.T) {
	trusted, other := newSigner(t, "ecdsa"), newSigner(t, "ecdsa")
	tests := []struct {
		name   string
		setup  func(t *testing.T, store *memory.Store, d ocispec.Descriptor)
		policy Policy
		want   string
	}{
		{"unsigned", func(*testing.T, *memory.Store, ocispec.Descriptor) {}, Policy{Keys: []Key{trusted.key}}, "not signed"},
		{"wrong key", func(t *testing.T, s *memory.Store, d ocispec.Descriptor) {
			p := bundles.NewPayload("x", d.Digest)
			bundles.AppendSignature(t.Context(), s, d, p, other.sign(t, p))
		}, Policy{Keys: []Key{trusted.key}}, "made by no trusted key"},
		{"valid signature over another digest", func(t *testing.T, s *memory.Store, d ocispec.Descriptor) {
			// The replay cosign's SimpleClaimVerifier exists for: a genuine signature by a
			// trusted key, for some other bundle, stored under this bundle's tag.
			p := bundles.NewPayload("x", digest.FromString("another bundle"))
			bundles.AppendSignature(t.Context(), s, d, p, trusted.sign(t, p))
		}, Policy{Keys: []Key{trusted.key}}, "not this bundle"},
		{"signature over other bytes", func(t *testing.T, s *memory.Store, d ocispec.Descriptor) {
			p := bundles.NewPayload("x", d.Digest)
			bundles.AppendSignature(t.Context(), s, d, p, trusted.sign(t, append(p, ' ')))
		}, Policy{Keys: []Key{trusted.key}}, "made by no trusted key"},
		{"not base64", func(t *testing.T, s *memory.Store, d ocispec.Descriptor) {
			bundles.AppendSignature(t.Context(), s, d, bundles.NewPayload("x", d.Digest), "!!!")
		}, Policy{Keys: []Key{trusted.key}}, "not base64"},
		{"threshold not met", func(t *testing.T, s *memory.Store, d ocispec.Descriptor) {
			p := bundles.NewPayload("x", d.Digest)
			bundles.AppendSignature(t.Context(), s, d, p, trusted.sign(t, p))
			// The same key twice still counts once.
			bundles.AppendSignature(t.Context(), s, d, p, trusted.sign(t, p))
		}, Policy{Keys: []Key{trusted.key, other.key}, Threshold: 2}, "1 of 2 required"},
		{"empty policy", func(*testing.T, *memory.Store, ocispec.Descriptor) {}, Policy{}, "trusts no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, d := aBundle(t)
			tt.setup(t, store, d)
			res, err := Bundle(t.Context(), store, d, tt.policy)
			if err == nil {
				t.Fatalf("accepted: %+v", res)
			}
			if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrUntrusted mentioning %q", err, tt.want)
			}
		})
	}
}

func TestBundleThresholdMet(t *testing.T) {
	store, d := aBundle(t)
	a, b := newSigner(t, "ecdsa"), newSigner(t, "rsa")
	p := bundles.NewPayload("x", d.Digest)
	for _, s := range []signer{a, b} {
		if _, err := bundles.AppendSignature(t.Context(), store, d, p, s.sign(t, p)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Bundle(t.Context(), store, d, Policy{Keys: []Key{a.key, b.key}, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Signers) != 2 {
		t.Fatalf("signers %+v", res.Signers)
	}
}

func TestParsePublicKeyRefusals(t *testing.T) {
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	privDER, _ := x509.MarshalPKCS8PrivateKey(ecPriv)
	tests := map[string]struct {
		in   []byte
		want string
	}{
		"weak rsa":    {pemOf(&weak.PublicKey), "at least 2048"},
		"p384":        {pemOf(&p384.PublicKey), "want P-256"},
		"private key": {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), "want PUBLIC KEY"},
		"not pem":     {[]byte("ssh-ed25519 AAAA"), "no PEM block"},
		"garbage der": {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("xx")}), "k.pub"},
		"huge":        {bytes.Repeat([]byte("a"), MaxKeyBytes+1), "limit"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParsePublicKey("k.pub", tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzParsePublicKey(f *testing.F) {
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(ecPriv.Public())
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMA==\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParsePublicKey("fuzz", b)
		if err == nil && (k.Public == nil || !strings.HasPrefix(k.ID, "sha256:")) {
			t.Fatalf("accepted key without a public part or ID: %+v", k)
		}
	})
}

func FuzzParsePayload(f *testing.F) {
	d := digest.FromString("bundle")
	f.Add(bundles.NewPayload("x", d))
	f.Add([]byte(`{"critical":{"image":{"docker-manifest-digest":"sha256:00"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := bundles.ParsePayload(b, d)
		if err == nil && p.Critical.Image.DockerManifestDigest != d.String() {
			t.Fatalf("accepted a payload for %q", p.Critical.Image.DockerManifestDigest)
		}
	})
}

func TestPolicyFingerprintIsRecorded(t *testing.T) {
	store, d := aBundle(t)
	a, b := newSigner(t, "ecdsa"), newSigner(t, "ecdsa")
	p := bundles.NewPayload("x", d.Digest)
	bundles.AppendSignature(t.Context(), store, d, p, a.sign(t, p))
	res, err := Bundle(t.Context(), store, d, Policy{Keys: []Key{a.key, b.key}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Policy != (Policy{Keys: []Key{b.key, a.key}}).Fingerprint() {
		t.Fatal("key order changed the policy fingerprint")
	}
	if res.Policy == (Policy{Keys: []Key{a.key}}).Fingerprint() || res.Policy == (Policy{Keys: []Key{a.key, b.key}, Threshold: 2}).Fingerprint() {
		t.Fatal("different policies share a fingerprint")
	}
}
