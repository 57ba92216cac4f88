package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/ferrygitops/ferry/bundles"
)

// Keyless trusts signatures made with short-lived certificates (Sigstore's keyless flow, or
// a site's own CA), checked offline against a trusted root shipped to the node: the
// certificate must chain to one of its CAs at the time a trusted transparency log recorded the
// signature, and name an allowed identity and issuer.
type Keyless struct {
	Roots, Intermediates *x509.CertPool
	// TLogs are the transparency logs' public keys by log ID (hex SHA-256 of the key's DER).
	TLogs      map[string]crypto.PublicKey
	Identities []Identity
	// windows hold the trusted root's validFor of each log (by log ID) and each certificate
	// authority (by its root certificate's DER): outside them, a log or CA is not trusted.
	windows map[string]window
}

// window is a validFor period; a zero end is open.
type window struct{ start, end time.Time }

func (w window) contains(t time.Time) bool {
	return !t.Before(w.start) && (w.end.IsZero() || t.Before(w.end))
}

// Identity is an allowed signer: the certificate's issuer (the OIDC issuer extension) and its
// subject (a URI or email SAN), exactly or by regular expression.
type Identity struct {
	Issuer    string
	Subject   string
	SubjectRE *regexp.Regexp
	Scope     *bundles.Scope
}

func (id Identity) matches(issuer string, sans []string) bool {
	if id.Issuer != issuer {
		return false
	}
	for _, s := range sans {
		if s == "" {
			continue // an empty SAN names no one
		}
		if (id.Subject != "" && s == id.Subject) || (id.SubjectRE != nil && id.SubjectRE.MatchString(s)) {
			return true
		}
	}
	return false
}

// OIDs of the Fulcio certificate extensions that hold the OIDC issuer.
var (
	oidIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
	oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
)

// MaxTrustedRootBytes bounds a trusted root file.
const MaxTrustedRootBytes = 4 << 20

// ParseTrustedRoot reads a Sigstore trusted root (trusted_root.json): the certificate
// authorities' chains and the transparency logs' keys.
func ParseTrustedRoot(source string, b []byte) (*Keyless, error) {
	if len(b) > MaxTrustedRootBytes {
		return nil, fmt.Errorf("%s: over the %d-byte limit", source, MaxTrustedRootBytes)
	}
	var tr struct {
		Tlogs []struct {
			PublicKey struct {
				RawBytes []byte   `json:"rawBytes"`
				ValidFor validFor `json:"validFor"`
			} `json:"publicKey"`
		} `json:"tlogs"`
		CertificateAuthorities []struct {
			CertChain struct {
				Certificates []struct {
					RawBytes []byte `json:"rawBytes"`
				} `json:"certificates"`
			} `json:"certChain"`
			ValidFor validFor `json:"validFor"`
		} `json:"certificateAuthorities"`
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	k := &Keyless{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), TLogs: map[string]crypto.PublicKey{}, windows: map[string]window{}}
	roots := 0
	for i, ca := range tr.CertificateAuthorities {
		for j, c := range ca.CertChain.Certificates {
			cert, err := x509.ParseCertificate(c.RawBytes)
			if err != nil {
				return nil, fmt.Errorf("%s: certificateAuthorities[%d].certChain.certificates[%d]: %w", source, i, j, err)
			}
			if bytes.Equal(cert.RawIssuer, cert.RawSubject) && cert.CheckSignatureFrom(cert) == nil {
				k.Roots.AddCert(cert)
				k.windows[string(cert.Raw)] = ca.ValidFor.window()
				roots++
			} else {
				k.Intermediates.AddCert(cert)
			}
		}
	}
	for i, tl := range tr.Tlogs {
		pub, err := x509.ParsePKIXPublicKey(tl.PublicKey.RawBytes)
		if err != nil {
			return nil, fmt.Errorf("%s: tlogs[%d].publicKey: %w", source, i, err)
		}
		sum := sha256.Sum256(tl.PublicKey.RawBytes)
		k.TLogs[hex.EncodeToString(sum[:])] = pub
		k.windows[hex.EncodeToString(sum[:])] = tl.PublicKey.ValidFor.window()
	}
	if roots == 0 || len(k.TLogs) == 0 {
		return nil, fmt.Errorf("%s: needs at least one root certificate authority and one transparency log", source)
	}
	return k, nil
}

// validFor is a trusted root's validity period (RFC 3339 times; a missing start is open).
type validFor struct {
	Start *time.Time `json:"start"`
	End   *time.Time `json:"end"`
}

func (v validFor) window() window {
	var w window
	if v.Start != nil {
		w.start = *v.Start
	}
	if v.End != nil {
		w.end = *v.End
	}
	return w
}

// rekorBundle is the transparency-log entry cosign attaches to a keyless signature.
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// hashedRekord is the log entry body of a signature over a hash.
type hashedRekord struct {
	Kind string `json:"kind"`
	Spec struct {
		Data struct {
			Hash struct {
				Algorithm string `json:"algorithm"`
				Value     string `json:"value"`
			} `json:"hash"`
		} `json:"data"`
		Signature struct {
			Content   []byte `json:"content"`
			PublicKey struct {
				Content []byte `json:"content"`
			} `json:"publicKey"`
		} `json:"signature"`
	} `json:"spec"`
}

// verifyKeyless checks one certificate-bearing signature. It returns the index of the policy
// identity it satisfies (what the threshold counts: one policy entry is one signer, however
// many certificates match it) and a description of the certificate for the record.
func (k *Keyless) verifyKeyless(s bundles.SignatureLayer, sig []byte) (int, string, error) {
	leafPEM := s.Descriptor.Annotations[bundles.CertificateAnnotation]
	block, _ := pem.Decode([]byte(leafPEM))
	if block == nil {
		return -1, "", errors.New("certificate annotation holds no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return -1, "", fmt.Errorf("certificate: %w", err)
	}
	// When was it signed? Only a trusted log's signed entry says so offline.
	raw := s.Descriptor.Annotations[bundles.BundleAnnotation]
	if raw == "" {
		return -1, "", errors.New("no transparency-log entry: a keyless signature cannot be dated offline without one")
	}
	var rb rekorBundle
	if err := json.Unmarshal([]byte(raw), &rb); err != nil {
		return -1, "", fmt.Errorf("transparency-log entry: %w", err)
	}
	pub, ok := k.TLogs[rb.Payload.LogID]
	if !ok {
		return -1, "", fmt.Errorf("transparency log %q is not in the trusted root", rb.Payload.LogID)
	}
	// The entry timestamp signs the canonical JSON of the payload: keys sorted, compact.
	canonical, _ := json.Marshal(struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogID          string `json:"logID"`
		LogIndex       int64  `json:"logIndex"`
	}{rb.Payload.Body, rb.Payload.IntegratedTime, rb.Payload.LogID, rb.Payload.LogIndex})
	sum := sha256.Sum256(canonical)
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok || !ecdsa.VerifyASN1(ek, sum[:], rb.SignedEntryTimestamp) {
		return -1, "", errors.New("transparency-log entry: signed entry timestamp does not verify")
	}
	body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
	if err != nil {
		return -1, "", fmt.Errorf("transparency-log entry body: %w", err)
	}
	var rec hashedRekord
	if err := json.Unmarshal(body, &rec); err != nil {
		return -1, "", fmt.Errorf("transparency-log entry body: %w", err)
	}
	payloadSum := sha256.Sum256(s.Payload)
	logged, _ := pem.Decode(rec.Spec.Signature.PublicKey.Content)
	switch {
	case rec.Kind != "hashedrekord" || rec.Spec.Data.Hash.Algorithm != "sha256":
		return -1, "", fmt.Errorf("transparency-log entry of kind %q, want a sha256 hashedrekord", rec.Kind)
	case rec.Spec.Data.Hash.Value != hex.EncodeToString(payloadSum[:]):
		return -1, "", errors.New("transparency-log entry is for another payload")
	case !bytes.Equal(rec.Spec.Signature.Content, sig):
		return -1, "", errors.New("transparency-log entry is for another signature")
	case logged == nil || !bytes.Equal(logged.Bytes, leaf.Raw):
		return -1, "", errors.New("transparency-log entry is for another certificate")
	}
	signedAt := time.Unix(rb.Payload.IntegratedTime, 0)
	if !k.windows[rb.Payload.LogID].contains(signedAt) {
		return -1, "", fmt.Errorf("transparency log %s was not trusted at %s (validFor in the trusted root)", rb.Payload.LogID, signedAt.UTC().Format(time.RFC3339))
	}
	inter := k.Intermediates.Clone()
	for rest := []byte(s.Descriptor.Annotations[bundles.ChainAnnotation]); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			inter.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: k.Roots, Intermediates: inter, CurrentTime: signedAt,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}})
	if err != nil {
		return -1, "", fmt.Errorf("certificate at %s: %w", signedAt.UTC().Format(time.RFC3339), err)
	}
	inWindow := false
	for _, c := range chains {
		inWindow = inWindow || k.windows[string(c[len(c)-1].Raw)].contains(signedAt)
	}
	if !inWindow {
		return -1, "", fmt.Errorf("certificate authority was not trusted at %s (validFor in the trusted root)", signedAt.UTC().Format(time.RFC3339))
	}
	if !verifySignature(leaf.PublicKey, s.Payload, sig) {
		return -1, "", errors.New("signature does not verify with the certificate's key")
	}
	issuer := certIssuer(leaf)
	sans := append([]string{}, leaf.EmailAddresses...)
	for _, u := range leaf.URIs {
		sans = append(sans, u.String())
	}
	for i, id := range k.Identities {
		if id.matches(issuer, sans) {
			return i, fmt.Sprintf("%v from %s", sans, issuer), nil
		}
	}
	return -1, "", fmt.Errorf("certificate identity %v from issuer %q is not allowed by the policy", sans, issuer)
}

// certIssuer reads the OIDC issuer from a Fulcio certificate extension.
func certIssuer(c *x509.Certificate) string {
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(oidIssuerV2):
			var s string
			if _, err := asn1.Unmarshal(e.Value, &s); err == nil {
				return s
			}
		case e.Id.Equal(oidIssuerV1):
			return string(e.Value)
		}
	}
	return ""
}
