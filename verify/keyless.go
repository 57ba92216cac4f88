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
}

// Identity is an allowed signer: the certificate's issuer (the OIDC issuer extension) and its
// subject (a URI or email SAN), exactly or by regular expression.
type Identity struct {
	Issuer    string
	Subject   string
	SubjectRE *regexp.Regexp
}

func (id Identity) matches(issuer string, sans []string) bool {
	if id.Issuer != issuer {
		return false
	}
	for _, s := range sans {
		if s == id.Subject || (id.SubjectRE != nil && id.SubjectRE.MatchString(s)) {
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
				RawBytes []byte `json:"rawBytes"`
			} `json:"publicKey"`
		} `json:"tlogs"`
		CertificateAuthorities []struct {
			CertChain struct {
				Certificates []struct {
					RawBytes []byte `json:"rawBytes"`
				} `json:"certificates"`
			} `json:"certChain"`
		} `json:"certificateAuthorities"`
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	k := &Keyless{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), TLogs: map[string]crypto.PublicKey{}}
	roots := 0
	for i, ca := range tr.CertificateAuthorities {
		for j, c := range ca.CertChain.Certificates {
			cert, err := x509.ParseCertificate(c.RawBytes)
			if err != nil {
				return nil, fmt.Errorf("%s: certificateAuthorities[%d].certChain.certificates[%d]: %w", source, i, j, err)
			}
			if bytes.Equal(cert.RawIssuer, cert.RawSubject) && cert.CheckSignatureFrom(cert) == nil {
				k.Roots.AddCert(cert)
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
	}
	if roots == 0 || len(k.TLogs) == 0 {
		return nil, fmt.Errorf("%s: needs at least one root certificate authority and one transparency log", source)
	}
	return k, nil
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

// verifyKeyless checks one certificate-bearing signature and returns the signer's identity
// ("subject from issuer").
func (k *Keyless) verifyKeyless(s bundles.SignatureLayer, sig []byte) (string, error) {
	leafPEM := s.Descriptor.Annotations[bundles.CertificateAnnotation]
	block, _ := pem.Decode([]byte(leafPEM))
	if block == nil {
		return "", errors.New("certificate annotation holds no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	// When was it signed? Only a trusted log's signed entry says so offline.
	raw := s.Descriptor.Annotations[bundles.BundleAnnotation]
	if raw == "" {
		return "", errors.New("no transparency-log entry: a keyless signature cannot be dated offline without one")
	}
	var rb rekorBundle
	if err := json.Unmarshal([]byte(raw), &rb); err != nil {
		return "", fmt.Errorf("transparency-log entry: %w", err)
	}
	pub, ok := k.TLogs[rb.Payload.LogID]
	if !ok {
		return "", fmt.Errorf("transparency log %q is not in the trusted root", rb.Payload.LogID)
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
		return "", errors.New("transparency-log entry: signed entry timestamp does not verify")
	}
	body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
	if err != nil {
		return "", fmt.Errorf("transparency-log entry body: %w", err)
	}
	var rec hashedRekord
	if err := json.Unmarshal(body, &rec); err != nil {
		return "", fmt.Errorf("transparency-log entry body: %w", err)
	}
	payloadSum := sha256.Sum256(s.Payload)
	logged, _ := pem.Decode(rec.Spec.Signature.PublicKey.Content)
	switch {
	case rec.Kind != "hashedrekord" || rec.Spec.Data.Hash.Algorithm != "sha256":
		return "", fmt.Errorf("transparency-log entry of kind %q, want a sha256 hashedrekord", rec.Kind)
	case rec.Spec.Data.Hash.Value != hex.EncodeToString(payloadSum[:]):
		return "", errors.New("transparency-log entry is for another payload")
	case !bytes.Equal(rec.Spec.Signature.Content, sig):
		return "", errors.New("transparency-log entry is for another signature")
	case logged == nil || !bytes.Equal(logged.Bytes, leaf.Raw):
		return "", errors.New("transparency-log entry is for another certificate")
	}
	signedAt := time.Unix(rb.Payload.IntegratedTime, 0)
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
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: k.Roots, Intermediates: inter, CurrentTime: signedAt,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}); err != nil {
		return "", fmt.Errorf("certificate at %s: %w", signedAt.UTC().Format(time.RFC3339), err)
	}
	if !verifySignature(leaf.PublicKey, s.Payload, sig) {
		return "", errors.New("signature does not verify with the certificate's key")
	}
	issuer := certIssuer(leaf)
	sans := append([]string{}, leaf.EmailAddresses...)
	for _, u := range leaf.URIs {
		sans = append(sans, u.String())
	}
	for _, id := range k.Identities {
		if id.matches(issuer, sans) {
			return fmt.Sprintf("%s from %s", sans[0], issuer), nil
		}
	}
	return "", fmt.Errorf("certificate identity %v from issuer %q is not allowed by the policy", sans, issuer)
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
