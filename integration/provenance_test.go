package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/verify"
)

// provenancePolicy trusts pub as "ci", which may sign anything, and admits only with SLSA
// provenance it attested.
func provenancePolicy(t *testing.T, pub string) verify.Policy {
	t.Helper()
	key, err := verify.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	key.Source = "ci"
	key.Scope = &bundles.Scope{Provenance: &bundles.ProvenanceRule{Attestors: []string{"ci"}, Builders: []string{"https://ci.example.com/*"}}}
	return verify.Policy{Keys: []verify.Key{key}}
}

// admitsWithProvenance runs the node's checks on the bundle at addr: signatures, scope, then
// the provenance the scope requires.
func admitsWithProvenance(t *testing.T, addr bundles.Address, p verify.Policy) (*verify.Result, error) {
	t.Helper()
	src, desc, b := openedBundle(t, addr)
	res, err := verify.Bundle(t.Context(), src, desc, p)
	if err != nil {
		return nil, err
	}
	if err := res.Scoped(b.Metadata.Name); err != nil {
		return nil, err
	}
	return res, res.Attested(t.Context(), src, desc, p, b.Metadata)
}

// TestCosignVerifiesFerryProvenance: what ferry bundle sign --provenance stores, the real
// cosign accepts with verify-attestation --type slsaprovenance1.
func TestCosignVerifiesFerryProvenance(t *testing.T) {
	work := t.TempDir()
	addr, ref := pushed(t, "interop/ferry-attested")
	key, pub := ferryKey(t, work)
	verifyAtt := func() (string, error) {
		return cosign(t, work, "verify-attestation", "--key", pub, "--type", "slsaprovenance1", "--insecure-ignore-tlog=true", "--allow-http-registry", ref)
	}
	if out, err := verifyAtt(); err == nil {
		t.Fatalf("cosign verified an attestation that is not there:\n%s", out)
	}
	target, desc, err := bundles.OpenTarget(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(t.Context(), target, desc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bundler.Provenance(desc, b, bundler.ProvenanceOptions{BuilderID: "https://ci.example.com/release", Repository: addr.Ref.Registry + "/" + addr.Ref.Repository})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(t.Context(), target, desc, key, addr.Ref.Registry+"/"+addr.Ref.Repository); err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Attest(t.Context(), target, desc, st, key); err != nil {
		t.Fatal(err)
	}
	out, err := verifyAtt()
	if err != nil {
		t.Fatalf("cosign verify-attestation of Ferry's provenance: %v\n%s", err, out)
	}
	// cosign prints the envelope it verified: it is Ferry's statement about this digest.
	if _, _, got, err := bundles.ParseEnvelope([]byte(lastJSONLine(out))); err != nil || !got.About(desc) || got.PredicateType != bundles.SLSAProvenanceV1 {
		t.Fatalf("cosign verified %+v (%v):\n%s", got, err, out)
	}
	// And Ferry's own check of it passes, on the same registry.
	res, err := admitsWithProvenance(t, addr, provenancePolicy(t, pub))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Provenance) != 1 || res.Provenance[0].BuilderID != "https://ci.example.com/release" {
		t.Fatalf("provenance %+v", res.Provenance)
	}
}

// TestFerryVerifiesCosignProvenance: an attestation made by the real cosign attest (of the
// predicate ferry bundle provenance prints) admits the bundle under a policy that requires
// provenance; without it the same bundle is refused, naming the rule.
func TestFerryVerifiesCosignProvenance(t *testing.T) {
	work := t.TempDir()
	addr, ref := pushed(t, "interop/cosign-attested")
	if out, err := cosign(t, work, "generate-key-pair", "--output-key-prefix", filepath.Join(work, "ci")); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	pub := filepath.Join(work, "ci.pub")
	if out, err := cosign(t, work, "sign", "--key", filepath.Join(work, "ci.key"), "--tlog-upload=false", "--allow-http-registry", "--yes", ref); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	policy := provenancePolicy(t, pub)
	if _, err := admitsWithProvenance(t, addr, policy); err == nil || !strings.Contains(err.Error(), "ci requires provenance attested by ci") {
		t.Fatalf("admitted without provenance: %v", err)
	}
	_, desc, b := openedBundle(t, addr)
	st, err := bundler.Provenance(desc, b, bundler.ProvenanceOptions{BuilderID: "https://ci.example.com/release", InvocationID: "https://ci.example.com/jobs/7"})
	if err != nil {
		t.Fatal(err)
	}
	predicate := filepath.Join(work, "predicate.json")
	writeFile(t, predicate, st.Predicate)
	if out, err := cosign(t, work, "attest", "--key", filepath.Join(work, "ci.key"), "--type", "slsaprovenance1", "--predicate", predicate,
		"--tlog-upload=false", "--allow-http-registry", "--yes", ref); err != nil {
		t.Fatalf("cosign attest: %v\n%s", err, out)
	}
	res, err := admitsWithProvenance(t, addr, policy)
	if err != nil {
		t.Fatalf("cosign's attestation: %v", err)
	}
	if len(res.Provenance) != 1 || strings.Join(res.Provenance[0].Attestors, ",") != "ci" || res.Provenance[0].Commit != b.Metadata.Source.Commit {
		t.Fatalf("provenance %+v", res.Provenance)
	}
	// Under a policy wanting another builder, cosign's attestation does not count.
	policy.Keys[0].Scope.Provenance.Builders = []string{"https://other.example.com/*"}
	if _, err := admitsWithProvenance(t, addr, policy); err == nil || !strings.Contains(err.Error(), "builder https://ci.example.com/release is not https://other.example.com/*") {
		t.Fatalf("another builder: %v", err)
	}
}

// lastJSONLine is the last line of out that starts a JSON object.
func lastJSONLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			return lines[i]
		}
	}
	return ""
}
