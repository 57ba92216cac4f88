package verify

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/verify/verifytest"
)

func keylessPolicy(t *testing.T, s *verifytest.Sigstore, identities string) Policy {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "trusted_root.json"), s.TrustedRoot, 0o644)
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
	s := verifytest.NewSigstore(t)
	policy := keylessPolicy(t, s, "    - issuer: "+ciIssuer+"\n      subjectRegExp: ^https://github\\.com/example/site/\n")
	store, d := aBundle(t)
	payload := bundles.NewPayload("site", d.Digest)
	// Signed a year ago: the certificate expired long since, but the log proves it was valid
	// when the signature was made.
	when := time.Now().AddDate(-1, 0, 0)
	b64, ann := s.Sign(t, payload, ciSubject, ciIssuer, when, when.Add(time.Minute))
	if _, err := bundles.AppendSignatureWith(t.Context(), store, d, payload, b64, ann); err != nil {
		t.Fatal(err)
	}
	res, err := Bundle(t.Context(), store, d, policy)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Signers) != 1 || res.Signers[0].KeyID != "keyless:0" || !strings.Contains(res.Signers[0].KeySource, ciSubject) {
		t.Fatalf("signers %+v", res.Signers)
	}
}

func TestKeylessRefusals(t *testing.T) {
	s := verifytest.NewSigstore(t)
	other := verifytest.NewSigstore(t)
	good := "    - issuer: " + ciIssuer + "\n      subject: " + ciSubject + "\n"
	when := time.Now().AddDate(0, -1, 0)
	tests := []struct {
		name   string
		signer *verifytest.Sigstore
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
			b2, a2 := s.Sign(t, p, ciSubject, ciIssuer, when, when)
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
			b64, ann := tt.signer.Sign(t, payload, tt.sub, ciIssuer, when, tt.logged)
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

// Found in review: an identity given only as a pattern must not match an empty SAN, and one
// policy identity is one signer however many certificates match it.
func TestKeylessIdentityCountsOnceAndNeedsASubject(t *testing.T) {
	s := verifytest.NewSigstore(t)
	when := time.Now().AddDate(0, -1, 0)
	policy := keylessPolicy(t, s, "    - issuer: "+ciIssuer+"\n      subjectRegExp: ^https://github\\.com/example/site/\n")
	store, d := aBundle(t)
	payload := bundles.NewPayload("site", d.Digest)
	b64, ann := s.Sign(t, payload, "", ciIssuer, when, when)
	bundles.AppendSignatureWith(t.Context(), store, d, payload, b64, ann)
	if _, err := Bundle(t.Context(), store, d, policy); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("empty SAN: err = %v", err)
	}

	store, d = aBundle(t)
	payload = bundles.NewPayload("site", d.Digest)
	for _, wf := range []string{"w0.yml", "w1.yml"} {
		b64, ann := s.Sign(t, payload, "https://github.com/example/site/.github/workflows/"+wf+"@refs/heads/main", ciIssuer, when, when)
		bundles.AppendSignatureWith(t.Context(), store, d, payload, b64, ann)
	}
	policy.Threshold = 2
	if _, err := Bundle(t.Context(), store, d, policy); err == nil || !strings.Contains(err.Error(), "1 of 2") {
		t.Fatalf("two certificates of one identity met a threshold of 2: err = %v", err)
	}
}

func TestKeylessRespectsTrustedRootValidity(t *testing.T) {
	s := verifytest.NewSigstore(t)
	var tr map[string]any
	json.Unmarshal(s.TrustedRoot, &tr)
	tlog := tr["tlogs"].([]any)[0].(map[string]any)["publicKey"].(map[string]any)
	tlog["validFor"] = map[string]any{"start": time.Now().AddDate(-5, 0, 0).Format(time.RFC3339), "end": time.Now().AddDate(0, -2, 0).Format(time.RFC3339)}
	s.TrustedRoot, _ = json.Marshal(tr)
	policy := keylessPolicy(t, s, "    - issuer: "+ciIssuer+"\n      subject: "+ciSubject+"\n")
	store, d := aBundle(t)
	payload := bundles.NewPayload("site", d.Digest)
	when := time.Now().AddDate(0, -1, 0) // after the log was retired
	b64, ann := s.Sign(t, payload, ciSubject, ciIssuer, when, when)
	bundles.AppendSignatureWith(t.Context(), store, d, payload, b64, ann)
	if _, err := Bundle(t.Context(), store, d, policy); err == nil || !strings.Contains(err.Error(), "was not trusted at") {
		t.Fatalf("err = %v, want the retired log refused", err)
	}
}
