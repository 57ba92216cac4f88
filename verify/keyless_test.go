package verify

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/bundles"
)

// sigstoreLike is a certificate authority and a transparency log of the test's own, shaped
// like Fulcio and Rekor, so keyless verification runs offline against real crypto.
type sigstoreLike struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	logKey            *ecdsa.PrivateKey
	trustedRoot       []byte
}

func newSigstoreLike(t *testing.T) *sigstoreLike {
	t.Helper()
	s := &sigstoreLike{}
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
	tr := map[string]any{
		"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
		"tlogs":     []any{map[string]any{"publicKey": map[string]any{"rawBytes": logDER}}},
		"certificateAuthorities": []any{map[string]any{"certChain": map[string]any{"certificates": []any{
			map[string]any{"rawBytes": s.inter.Raw}, map[string]any{"rawBytes": s.root.Raw}}}}},
	}
	s.trustedRoot, _ = json.Marshal(tr)
	return s
}

// sign makes a keyless signature over payload: a 10-minute certificate for subject from
// issuer, valid at signedAt, and a log entry recording it at loggedAt.
func (s *sigstoreLike) sign(t *testing.T, payload []byte, subject, issuer string, signedAt, loggedAt time.Time) (string, map[string]string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(subject)
	issuerExt, _ := asn1.Marshal(issuer)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore: signedAt.Add(-time.Minute), NotAfter: signedAt.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		URIs: []*url.URL{u}, ExtraExtensions: []pkix.Extension{{Id: oidIssuerV2, Value: issuerExt}}}
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

func keylessPolicy(t *testing.T, s *sigstoreLike, identities string) Policy {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "trusted_root.json"), s.trustedRoot, 0o644)
	path := filepath.Join(dir, "policy.yaml")
	os.WriteFile(path, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeyless:\n  trustedRoot: trusted_root.json\n  identities:\n"+identities), 0o644)
	p, err := LoadPolicy(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	ciSubject = "https://github.com/example/site/.github/workflows/release.yml@refs/heads/main"
	ciIssuer  = "https://token.actions.githubusercontent.com"
)

func TestKeylessSignatureVerifiesOffline(t *testing.T) {
	s := newSigstoreLike(t)
	policy := keylessPolicy(t, s, "    - issuer: "+ciIssuer+"\n      subjectRegExp: ^https://github\\.com/example/site/\n")
	store, d := aBundle(t)
	payload := bundles.NewPayload("site", d.Digest)
	// Signed a year ago: the certificate expired long since, but the log proves it was valid
	// when the signature was made.
	when := time.Now().AddDate(-1, 0, 0)
	b64, ann := s.sign(t, payload, ciSubject, ciIssuer, when, when.Add(time.Minute))
	if _, err := bundles.AppendSignatureWith(t.Context(), store, d, payload, b64, ann); err != nil {
		t.Fatal(err)
	}
	res, err := Bundle(t.Context(), store, d, policy)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Signers) != 1 || !strings.Contains(res.Signers[0].KeyID, ciSubject) {
		t.Fatalf("signers %+v", res.Signers)
	}
}

func TestKeylessRefusals(t *testing.T) {
	s := newSigstoreLike(t)
	other := newSigstoreLike(t)
	good := "    - issuer: " + ciIssuer + "\n      subject: " + ciSubject + "\n"
	when := time.Now().AddDate(0, -1, 0)
	tests := []struct {
		name   string
		signer *sigstoreLike
		policy string
		mutate func(payload []byte, b64 string, ann map[string]string) (string, map[string]string)
		sub    string
		logged time.Time
		want   string
	}{
		{"untrusted CA and log", other, good, nil, ciSubject, when, "not in the trusted root"},
		{"other subject", s, good, nil, "https://github.com/attacker/fork/.github/workflows/x.yml@refs/heads/main", when, "not allowed by the policy"},
		{"other issuer", s, "    - issuer: https://accounts.google.com\n      subject: " + ciSubject + "\n", nil, ciSubject, when, "not allowed by the policy"},
		{"logged after the certificate expired", s, good, nil, ciSubject, when.Add(time.Hour), "certificate at"},
		{"no log entry", s, good, func(p []byte, b string, a map[string]string) (string, map[string]string) {
			delete(a, bundles.BundleAnnotation)
			return b, a
		}, ciSubject, when, "cannot be dated offline"},
		{"forged log timestamp", s, good, func(p []byte, b string, a map[string]string) (string, map[string]string) {
			a[bundles.BundleAnnotation] = strings.Replace(a[bundles.BundleAnnotation], `"logIndex":42`, `"logIndex":43`, 1)
			return b, a
		}, ciSubject, when, "does not verify"},
		{"log entry for another signature", s, good, func(p []byte, b string, a map[string]string) (string, map[string]string) {
			b2, a2 := s.sign(t, p, ciSubject, ciIssuer, when, when)
			a[bundles.BundleAnnotation] = a2[bundles.BundleAnnotation]
			_ = b2
			return b, a
		}, ciSubject, when, "another"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policy := keylessPolicy(t, s, tt.policy)
			store, d := aBundle(t)
			payload := bundles.NewPayload("site", d.Digest)
			b64, ann := tt.signer.sign(t, payload, tt.sub, ciIssuer, when, tt.logged)
			if tt.mutate != nil {
				b64, ann = tt.mutate(payload, b64, ann)
			}
			bundles.AppendSignatureWith(t.Context(), store, d, payload, b64, ann)
			_, err := Bundle(t.Context(), store, d, policy)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
