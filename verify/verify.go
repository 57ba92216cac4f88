package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/ferrygitops/ferry/bundles"
)

// ErrUntrusted is wrapped by every refusal of a bundle's signatures.
var ErrUntrusted = errors.New("untrusted bundle")

// MaxKeyBytes bounds a public key file.
const MaxKeyBytes = 64 << 10

// Key is a trusted public key.
type Key struct {
	// ID is "sha256:" and the hex SHA-256 of the key's PKIX DER encoding.
	ID     string
	Public crypto.PublicKey
	// Source says where the key came from (a file name), for messages.
	Source string
	// Scope limits what the key may ship; nil does not.
	Scope *bundles.Scope
}

// ParsePublicKey reads a PEM public key (PKIX "PUBLIC KEY": ECDSA P-256, Ed25519, RSA
// of at least 2048 bits) as cosign writes it.
func ParsePublicKey(source string, b []byte) (Key, error) {
	if len(b) > MaxKeyBytes {
		return Key{}, fmt.Errorf("%s: over the %d-byte limit for a key", source, MaxKeyBytes)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return Key{}, fmt.Errorf("%s: no PEM block", source)
	}
	if block.Type != "PUBLIC KEY" {
		return Key{}, fmt.Errorf("%s: PEM type %q, want PUBLIC KEY", source, block.Type)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", source, err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		// cosign signs with SHA-256 on P-256; other curves would need another hash.
		if k.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("%s: ECDSA curve %s, want P-256", source, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return Key{}, fmt.Errorf("%s: RSA key of %d bits, want at least 2048", source, k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return Key{}, fmt.Errorf("%s: unsupported key type %T", source, pub)
	}
	sum := sha256.Sum256(block.Bytes)
	return Key{ID: "sha256:" + hex.EncodeToString(sum[:]), Public: pub, Source: source}, nil
}

// LoadPublicKey reads a public key file.
func LoadPublicKey(path string) (Key, error) {
	b, err := bundles.ReadFileLimited(path, MaxKeyBytes)
	if err != nil {
		return Key{}, err
	}
	return ParsePublicKey(path, b)
}

// Policy is what a bundle must carry to be trusted.
type Policy struct {
	Keys []Key
	// Keyless, when set, also trusts certificate signatures (see Keyless).
	Keyless *Keyless
	// Threshold is the number of distinct keys that must have signed; 0 means 1.
	Threshold int
}

// Fingerprint identifies the policy: the SHA-256 of its threshold, sorted key IDs and keyless
// identities. (A changed trusted root with the same identities keeps the fingerprint.)
func (p Policy) Fingerprint() string {
	ids := make([]string, 0, len(p.Keys))
	for _, k := range p.Keys {
		if k.Scope != nil {
			ids = append(ids, k.ID+"|scope:"+k.Scope.String())
		} else {
			ids = append(ids, k.ID)
		}
	}
	if p.Keyless != nil {
		for _, id := range p.Keyless.Identities {
			re := ""
			if id.SubjectRE != nil {
				re = id.SubjectRE.String()
			}
			id := "keyless:" + id.Issuer + "|" + id.Subject + "|" + re
			if sc := p.Keyless.Identities[len(ids)-len(p.Keys)].Scope; sc != nil {
				id += "|scope:" + sc.String()
			}
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	sum := sha256.Sum256([]byte(fmt.Sprintf("threshold=%d\n%s", max(p.Threshold, 1), strings.Join(ids, "\n"))))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Signer is one key that signed the bundle.
type Signer struct {
	KeyID     string `json:"keyID"`
	KeySource string `json:"keySource,omitempty"`
	// Payload is the digest of the signed payload blob.
	Payload string `json:"payload"`
	// Scope is the policy's scope of the key, recorded so the node enforces it at apply.
	Scope *bundles.Scope `json:"scope,omitempty"`
}

// Result records a successful verification; it is stored with the revision.
type Result struct {
	Digest     string   `json:"digest"`     // of the bundle manifest
	Signatures string   `json:"signatures"` // digest of the signature manifest
	Signers    []Signer `json:"signers"`
	Threshold  int      `json:"threshold"`
	// Policy identifies the policy that admitted the bundle: the SHA-256 of its threshold and
	// sorted key IDs, so a record shows whether the node's policy changed since.
	Policy string    `json:"policy"`
	Time   time.Time `json:"time"`
	// Provenance are the SLSA provenance attestations that verified (Attested).
	Provenance []Provenance `json:"provenance,omitempty"`

	signatures   *bundles.Signatures
	verified     []ocispec.Descriptor // payloads of the signatures that counted
	attestations *bundles.Signatures
	attested     []ocispec.Descriptor // envelopes of the attestations that verified
}

// Scopes are the scopes of the keys that signed, those that have one.
func (r *Result) Scopes() []*bundles.Scope {
	var out []*bundles.Scope
	for _, s := range r.Signers {
		if s.Scope != nil {
			out = append(out, s.Scope)
		}
	}
	return out
}

// ParseRecord reads a Result as Ingest stores it with a revision (its JSON): the node reads
// the signers' scopes back from it at every apply, through this one type, so the field names
// written and read cannot drift apart.
func ParseRecord(b []byte) (*Result, error) {
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// SignatureBlobs are the blobs to keep with the revision so a node can show (and re-check)
// what it admitted: the signature manifests (read with their size limit), their configs when
// small, and the payloads of the signatures that verified — never the other layers a
// signature manifest may list, which nobody checked.
func (r *Result) SignatureBlobs() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, s := range []*bundles.Signatures{r.signatures, r.attestations} {
		if s == nil {
			continue
		}
		for _, d := range s.Manifests() {
			out = append(out, d.Descriptor)
			if c := d.Manifest.Config; c.Size >= 0 && c.Size <= bundles.MaxManifestBytes && c.Digest != "" {
				out = append(out, c)
			}
		}
	}
	out = append(out, r.verified...)
	return append(out, r.attested...)
}

// Source is what Bundle reads signatures from.
type Source interface {
	content.Fetcher
	content.Resolver
}

// Bundle checks the signatures stored beside bundle d in src against p. It reads only the
// signature manifest and its payloads, never the bundle's layers.
func Bundle(ctx context.Context, src Source, d ocispec.Descriptor, p Policy) (*Result, error) {
	if len(p.Keys) == 0 && p.Keyless == nil {
		return nil, fmt.Errorf("%w: the policy trusts no key", ErrUntrusted)
	}
	threshold := max(p.Threshold, 1)
	if p.Keyless == nil && threshold > len(p.Keys) {
		return nil, fmt.Errorf("policy: threshold %d with only %d keys can never be met", threshold, len(p.Keys))
	}
	found, err := bundles.ReadSignatures(ctx, src, d)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUntrusted, d.Digest, err)
	}
	sigs := found.Layers
	res := &Result{Digest: d.Digest.String(), Signatures: found.Descriptor.Digest.String(), Threshold: threshold,
		Policy: p.Fingerprint(), Time: time.Now().UTC(), signatures: found}
	signed := map[string]bool{}
	var verified []ocispec.Descriptor
	var problems []error
	for i, s := range sigs {
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil {
			problems = append(problems, fmt.Errorf("signature %d: not base64", i))
			continue
		}
		if _, err := bundles.ParsePayload(s.Payload, d.Digest); err != nil {
			problems = append(problems, fmt.Errorf("signature %d: %w", i, err))
			continue
		}
		if _, hasCert := s.Descriptor.Annotations[bundles.CertificateAnnotation]; hasCert && p.Keyless != nil {
			idx, who, err := p.Keyless.verifyKeyless(s, raw)
			if err != nil {
				problems = append(problems, fmt.Errorf("signature %d: %w", i, err))
				continue
			}
			id := fmt.Sprintf("keyless:%d", idx)
			verified = append(verified, s.Descriptor)
			if !signed[id] {
				signed[id] = true
				res.Signers = append(res.Signers, Signer{KeyID: id, KeySource: "keyless " + who, Payload: s.Descriptor.Digest.String(), Scope: p.Keyless.Identities[idx].Scope})
			}
			continue
		}
		matched := false
		for _, k := range p.Keys {
			if signed[k.ID] || !verifySignature(k.Public, s.Payload, raw) {
				continue
			}
			signed[k.ID], matched = true, true
			verified = append(verified, s.Descriptor)
			res.Signers = append(res.Signers, Signer{KeyID: k.ID, KeySource: k.Source, Payload: s.Descriptor.Digest.String(), Scope: k.Scope})
			break
		}
		if !matched {
			problems = append(problems, fmt.Errorf("signature %d: made by no trusted key", i))
		}
	}
	res.verified = verified
	if len(signed) < threshold {
		return nil, fmt.Errorf("%w: %s: %d of %d required trusted signatures: %w", ErrUntrusted, d.Digest, len(signed), threshold, errors.Join(problems...))
	}
	return res, nil
}

// ErrOutOfScope is returned by Scoped when too few of the signers' keys may sign the bundle.
var ErrOutOfScope = errors.New("signed outside the signing keys' scope")

// Scoped keeps the signers whose scope lets them sign bundle name (read from the verified
// manifest's config) and fails unless they still meet the threshold: a key scoped to team
// a's bundles does not count towards team b's. The remaining signers' scopes are recorded
// with the revision, and the engine enforces their namespaces and service account.
func (r *Result) Scoped(name string) error {
	var keep []Signer
	var out []string
	for _, s := range r.Signers {
		if s.Scope.AllowsBundle(name) {
			keep = append(keep, s)
		} else {
			out = append(out, fmt.Sprintf("%s (%s)", s.KeySource, s.Scope))
		}
	}
	if len(keep) < r.Threshold {
		return fmt.Errorf("%w: %w: bundle %q: %d of %d required signatures are from keys that may sign it; out of scope: %s",
			ErrUntrusted, ErrOutOfScope, name, len(keep), r.Threshold, strings.Join(out, ", "))
	}
	r.Signers = keep
	return nil
}

// Verify reports whether sig is k's signature over payload, as cosign signs a blob.
func (k Key) Verify(payload, sig []byte) bool { return verifySignature(k.Public, payload, sig) }

// verifySignature checks sig over payload the way cosign signs with each key type: SHA-256
// then ECDSA (ASN.1) or RSA PKCS#1 v1.5; Ed25519 over the payload itself.
func verifySignature(pub crypto.PublicKey, payload, sig []byte) bool {
	sum := sha256.Sum256(payload)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, payload, sig)
	}
	return false
}
