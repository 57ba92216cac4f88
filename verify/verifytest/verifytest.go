// Package verifytest makes keyless signatures for tests: a certificate authority and a
// transparency log of the test's own, shaped like Sigstore's Fulcio and Rekor, so keyless
// verification (Ferry's and cosign's) can run offline against real cryptography.
package verifytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/bundles"
)

// Fulcio's OIDC issuer extensions.
var (
	oidIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
	oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
)

// Sigstore is a certificate authority and a transparency log of the test's own, shaped
// like Fulcio and Rekor, so keyless verification runs offline against real crypto.
type Sigstore struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	logKey            *ecdsa.PrivateKey
	TrustedRoot       []byte
}

// NewSigstore makes a root and intermediate CA, valid five years either side of now, and a
// transparency-log key; TrustedRoot describes them as a Sigstore trusted_root.json.
func NewSigstore(t testing.TB) *Sigstore {
	t.Helper()
	s := &Sigstore{}
	s.rootKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.interKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.logKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := func(cn string, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().AddDate(-5, 0, 0), NotAfter: time.Now().AddDate(5, 0, 0),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	s.root = ca("test fulcio root", s.rootKey, nil, nil)
	s.inter = ca("test fulcio intermediate", s.interKey, s.root, s.rootKey)
	logDER, _ := x509.MarshalPKIXPublicKey(s.logKey.Public())
	logID := sha256.Sum256(logDER)
	start := time.Now().AddDate(-5, 0, 0).UTC().Format(time.RFC3339)
	tr := map[string]any{
		"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
		"tlogs": []any{map[string]any{
			"baseUrl": "https://rekor.test.invalid", "hashAlgorithm": "SHA2_256",
			"publicKey": map[string]any{"rawBytes": logDER, "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": map[string]any{"start": start}},
			"logId":     map[string]any{"keyId": logID[:]},
		}},
		"certificateAuthorities": []any{map[string]any{
			"subject": map[string]any{"organization": "test", "commonName": "test fulcio"},
			"uri":     "https://fulcio.test.invalid",
			"certChain": map[string]any{"certificates": []any{
				map[string]any{"rawBytes": s.inter.Raw}, map[string]any{"rawBytes": s.root.Raw}}},
			"validFor": map[string]any{"start": start},
		}},
		"ctlogs": []any{}, "timestampAuthorities": []any{},
	}
	s.TrustedRoot, _ = json.Marshal(tr)
	return s
}

// Sign makes a keyless signature over payload: a 10-minute certificate for subject from
// issuer, valid at signedAt, and a log entry recording it at loggedAt.
func (s *Sigstore) Sign(t testing.TB, payload []byte, subject, issuer string, signedAt, loggedAt time.Time) (string, map[string]string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(subject)
	issuerExt, _ := asn1.MarshalWithParams(issuer, "utf8") // Fulcio writes a UTF8String
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore: signedAt.Add(-time.Minute), NotAfter: signedAt.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		URIs: []*url.URL{u}, ExtraExtensions: []pkix.Extension{
			{Id: oidIssuerV1, Value: []byte(issuer)}, // Fulcio writes both: the deprecated raw one
			{Id: oidIssuerV2, Value: issuerExt},      // and the DER UTF8String one
		}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.inter, key.Public(), s.interKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	sig, _ := ecdsa.SignASN1(rand.Reader, key, sum[:])
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	body, _ := json.Marshal(map[string]any{"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": map[string]any{
		"data":      map[string]any{"hash": map[string]any{"algorithm": "sha256", "value": hex.EncodeToString(sum[:])}},
		"signature": map[string]any{"content": sig, "publicKey": map[string]any{"content": certPEM}},
	}})
	logDER, _ := x509.MarshalPKIXPublicKey(s.logKey.Public())
	logID := sha256.Sum256(logDER)
	entry := struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogID          string `json:"logID"`
		LogIndex       int64  `json:"logIndex"`
	}{base64.StdEncoding.EncodeToString(body), loggedAt.Unix(), hex.EncodeToString(logID[:]), 42}
	canonical, _ := json.Marshal(entry)
	csum := sha256.Sum256(canonical)
	set, _ := ecdsa.SignASN1(rand.Reader, s.logKey, csum[:])
	bundle, _ := json.Marshal(map[string]any{"SignedEntryTimestamp": set, "Payload": entry})
	return base64.StdEncoding.EncodeToString(sig), map[string]string{
		bundles.CertificateAnnotation: string(certPEM),
		bundles.ChainAnnotation:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.inter.Raw})),
		bundles.BundleAnnotation:      string(bundle),
	}
}
