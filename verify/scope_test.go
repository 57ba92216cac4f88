package verify

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

// TestScopedSignatures: a key scoped to some bundles counts only towards those; with a
// threshold of two, one out-of-scope signer is enough to refuse; the scopes of the signers
// that count are recorded with the result.
func TestScopedSignatures(t *testing.T) {
	store, d := aBundle(t)
	platform, team := newSigner(t, "ecdsa"), newSigner(t, "ed25519")
	platform.key.Source = "platform"
	team.key.Source, team.key.Scope = "team-a", &bundles.Scope{Bundles: []string{"team-a-*"}, Namespaces: []string{"team-a"}, ServiceAccount: "deployer"}
	p := bundles.NewPayload("x", d.Digest)
	for _, s := range []signer{platform, team} {
		if _, err := bundles.AppendSignature(t.Context(), store, d, p, s.sign(t, p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		keys      []Key
		threshold int
		bundle    string
		want      error
		signers   int
	}{
		{"in scope", []Key{team.key}, 1, "team-a-apps", nil, 1},
		{"out of scope", []Key{team.key}, 1, "platform", ErrOutOfScope, 0},
		{"one of two out of scope", []Key{platform.key, team.key}, 2, "platform", ErrOutOfScope, 0},
		{"unscoped key counts alone", []Key{platform.key, team.key}, 1, "platform", nil, 1},
		{"both count", []Key{platform.key, team.key}, 2, "team-a-web", nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Bundle(t.Context(), store, d, Policy{Keys: tc.keys, Threshold: tc.threshold})
			if err != nil {
				t.Fatal(err)
			}
			err = res.Scoped(tc.bundle)
			if !errors.Is(err, tc.want) || (err != nil && !errors.Is(err, ErrUntrusted)) {
				t.Fatalf("Scoped(%q) = %v, want %v", tc.bundle, err, tc.want)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "team-a (bundles team-a-*") {
					t.Fatalf("the refusal does not name the key and its scope: %v", err)
				}
				return
			}
			if len(res.Signers) != tc.signers {
				t.Fatalf("signers %+v", res.Signers)
			}
			b, _ := json.Marshal(res)
			if scoped := strings.Contains(string(b), `"serviceAccount":"deployer"`); scoped != strings.HasPrefix(tc.bundle, "team-a") {
				t.Fatalf("recorded scopes: %s", b)
			}
		})
	}
}

// TestPolicyScopes: scopes are read from the policy, validated field by field, and change
// the policy's fingerprint.
func TestPolicyScopes(t *testing.T) {
	dir := t.TempDir()
	pub := filepath.Join(dir, "team.pub")
	if err := os.WriteFile(pub, []byte(pubPEM(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	policy := func(scope string) string {
		return "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: team-a\n    path: team.pub\n" + scope
	}
	scoped, err := ParsePolicy(filepath.Join(dir, "p.yaml"), []byte(policy("    scope: {bundles: [team-a-*], namespaces: [team-a], serviceAccount: deployer}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if sc := scoped.Keys[0].Scope; sc == nil || sc.ServiceAccount != "deployer" || !sc.AllowsBundle("team-a-x") || sc.AllowsBundle("team-b") {
		t.Fatalf("scope %+v", sc)
	}
	plain, err := ParsePolicy(filepath.Join(dir, "p.yaml"), []byte(policy("")))
	if err != nil {
		t.Fatal(err)
	}
	if plain.Fingerprint() == scoped.Fingerprint() {
		t.Fatal("a scope does not change the policy's fingerprint")
	}
	for _, bad := range []struct{ scope, field string }{
		{"    scope: {bundles: [\"[\"]}\n", "keys[0].scope.bundles[0]"},
		{"    scope: {namespaces: [a/b]}\n", "keys[0].scope.namespaces[0]"},
		{"    scope: {serviceAccount: \"Not Valid\"}\n", "keys[0].scope.serviceAccount"},
		{"    scope: {bundle: [x]}\n", "keys[0].scope.bundle: unknown field (did you mean bundles?)"},
	} {
		_, err := ParsePolicy(filepath.Join(dir, "p.yaml"), []byte(policy(bad.scope)))
		if err == nil || !strings.Contains(err.Error(), bad.field) {
			t.Errorf("scope %q: want an error naming %s, got %v", bad.scope, bad.field, err)
		}
	}
}
