package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
)

// TestBundleBuildVerifyCommit: a commit signed by the real git with an SSH key builds, and
// the signer shows in the build's output and in ferry bundle inspect; an unsigned one stops
// the build with exit code 4, naming the commit.
func TestBundleBuildVerifyCommit(t *testing.T) {
	s := bundlertest.NewSigners(t)
	files := map[string]string{
		"ferry.yaml":             "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: demo}\nspec:\n  version: 0.2.0\n  components:\n  - name: web\n    kustomize: {path: ./web}\n",
		"web/kustomization.yaml": "resources: [cm.yaml]\n",
		"web/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {greeting: hello}\n",
	}
	r := s.Repo(t, files)
	r.Commit(s.Bob)
	layout := filepath.Join(t.TempDir(), "layout")
	out, err := runFerry(t, "bundle", "build", r.Dir, "--to", layout, "--verify-commit", "HEAD", "--keyring", s.AllowedSigs, "--allowed-committers", "bob@example.com")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "bob@example.com (ssh key " + s.BobFingerprint + ")"; !strings.Contains(out, want) {
		t.Fatalf("build output lacks %q:\n%s", want, out)
	}
	js, err := runFerry(t, "bundle", "inspect", layout, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Source struct {
			Commit   string
			Verified struct {
				Mode   string
				Commit struct{ Format, Key string }
			}
		}
	}
	if err := json.Unmarshal([]byte(js), &got); err != nil {
		t.Fatal(err)
	}
	if v := got.Source.Verified; got.Source.Commit != r.Head() || v.Mode != "HEAD" || v.Commit.Format != "ssh" || v.Commit.Key != s.BobFingerprint {
		t.Fatalf("inspect: %+v", got.Source)
	}
	if text, err := runFerry(t, "bundle", "inspect", layout); err != nil || !strings.Contains(text, "Commit signed by:") {
		t.Fatalf("inspect text lacks the signer (%v):\n%s", err, text)
	}

	u := s.Repo(t, files)
	u.Commit("")
	_, err = runFerry(t, "bundle", "build", u.Dir, "--to", filepath.Join(t.TempDir(), "l"), "--verify-commit", "HEAD", "--keyring", s.AllowedSigs)
	if exitCode(err) != exitUntrusted || !strings.Contains(err.Error(), u.Head()) {
		t.Fatalf("an unsigned commit: exit %d, %v", exitCode(err), err)
	}
	for _, args := range [][]string{
		{"--keyring", s.AllowedSigs},                                                 // without --verify-commit
		{"--verify-commit", "HEAD"},                                                  // without --keyring
		{"--verify-commit", "head", "--keyring", s.Keyring},                          // an unknown mode
		{"--verify-commit", "HEAD", "--keyring", filepath.Join(r.Dir, "ferry.yaml")}, // not a keyring
	} {
		_, err := runFerry(t, append([]string{"bundle", "build", r.Dir, "--to", filepath.Join(t.TempDir(), "l")}, args...)...)
		if exitCode(err) != exitBadInput {
			t.Errorf("%v: exit %d (%v), want %d", args, exitCode(err), err, exitBadInput)
		}
	}
}

// TestBundleSignProvenance: sign --provenance attests SLSA provenance with the signing key;
// verify under a policy that requires it shows the provenance, and refuses (exit 4) under a
// policy that wants another commit signer; bundle provenance prints the predicate.
func TestBundleSignProvenance(t *testing.T) {
	t.Setenv("COSIGN_PASSWORD", "ci-secret")
	s := bundlertest.NewSigners(t)
	r := s.Repo(t, map[string]string{
		"ferry.yaml":             "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: team-a-web}\nspec:\n  version: 0.2.0\n  components:\n  - name: web\n    kustomize: {path: ./web}\n",
		"web/kustomization.yaml": "resources: [cm.yaml]\n",
		"web/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {greeting: hello}\n",
	})
	r.Commit(s.Bob)
	keys := t.TempDir()
	if _, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(keys, "ci")); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(t.TempDir(), "layout")
	if out, err := runFerry(t, "bundle", "build", r.Dir, "--to", layout, "--verify-commit", "HEAD", "--keyring", s.AllowedSigs); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := runFerry(t, "bundle", "sign", layout, "--key", filepath.Join(keys, "ci.key"), "--provenance"); exitCode(err) != exitBadInput {
		t.Fatalf("--provenance without a builder id: %v", err)
	}
	out, err := runFerry(t, "bundle", "sign", layout, "--key", filepath.Join(keys, "ci.key"), "--provenance", "--builder-id", "https://ci.example.com/release")
	if err != nil || !strings.Contains(out, "attested SLSA provenance as sha256-") {
		t.Fatalf("sign --provenance: %v\n%s", err, out)
	}
	if text, err := runFerry(t, "bundle", "inspect", layout); err != nil || !strings.Contains(text, ".att") {
		t.Fatalf("inspect does not show the attestation (%v):\n%s", err, text)
	}
	js, err := runFerry(t, "bundle", "provenance", layout, "--builder-id", "https://ci.example.com/release")
	if err != nil {
		t.Fatal(err)
	}
	var pred struct {
		BuildDefinition struct {
			ExternalParameters struct {
				Source struct{ Commit string }
				Spec   string
			}
		}
	}
	if err := json.Unmarshal([]byte(js), &pred); err != nil || pred.BuildDefinition.ExternalParameters.Source.Commit != r.Head() || !strings.HasPrefix(pred.BuildDefinition.ExternalParameters.Spec, "sha256:") {
		t.Fatalf("predicate (%v):\n%s", err, js)
	}
	policy := func(signer string) string {
		p := filepath.Join(t.TempDir(), "policy.yaml")
		writeOrFail(t, p, "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n- name: ci\n  path: "+filepath.Join(keys, "ci.pub")+
			"\n  scope:\n    bundles: [team-a-*]\n    provenance: {attestors: [ci], builders: [\"https://ci.example.com/*\"], commitSigners: ["+signer+"]}\n")
		return p
	}
	out, err = runFerry(t, "bundle", "verify", layout, "--policy", policy("bob@example.com"))
	if err != nil || !strings.Contains(out, "attested by ci, built by https://ci.example.com/release") || !strings.Contains(out, "Commit signed by:") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	_, err = runFerry(t, "bundle", "verify", layout, "--policy", policy("alice@example.com"))
	if exitCode(err) != exitUntrusted || !strings.Contains(err.Error(), "was not verified signed by alice@example.com") {
		t.Fatalf("a policy wanting another commit signer: exit %d, %v", exitCode(err), err)
	}
}

func writeOrFail(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
