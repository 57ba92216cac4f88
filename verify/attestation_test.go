package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/ferrygitops/ferry/bundles"
)

// signTarget is where tests store signatures and attestations.
type signTarget interface {
	content.Storage
	content.Resolver
	content.Tagger
}

const (
	teamRepo   = "https://git.example.com/team-a/site.git"
	teamCommit = "0123456789abcdef0123456789abcdef01234567"
	otherRepo  = "https://git.example.com/team-b/site.git"
)

// provenanceOf is an SLSA statement about d as Ferry's builder writes one; change edits it
// before it is signed.
func provenanceOf(t *testing.T, d ocispec.Descriptor, change func(*bundles.SLSAProvenance, *bundles.Statement)) *bundles.Statement {
	t.Helper()
	var p bundles.SLSAProvenance
	p.BuildDefinition.BuildType = bundles.BuildTypeV1
	p.BuildDefinition.ExternalParameters.Source = bundles.BuildSource{Repository: teamRepo, Commit: teamCommit,
		Verified: &bundles.CommitSignature{Mode: "HEAD", Commit: &bundles.Signer{Format: "ssh", Key: "SHA256:abc", Identities: []string{"release@example.com"}}}}
	p.RunDetails.Builder.ID = "https://ci.example.com/runners/release"
	st := &bundles.Statement{Type: bundles.StatementV1, PredicateType: bundles.SLSAProvenanceV1,
		Subject: []bundles.Subject{{Name: "team-a-web", Digest: map[string]string{"sha256": d.Digest.Encoded()}}}}
	if change != nil {
		change(&p, st)
	}
	pred, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	st.Predicate = pred
	return st
}

// attest signs st with s as a DSSE envelope and stores it beside d; alter changes the
// payload after signing.
func attest(t *testing.T, store signTarget, d ocispec.Descriptor, s signer, st *bundles.Statement, alter func([]byte) []byte) {
	t.Helper()
	payload, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	sig := s.sign(t, bundles.PAE(bundles.InTotoPayloadType, payload))
	if alter != nil {
		payload = alter(payload)
	}
	env, err := json.Marshal(bundles.Envelope{PayloadType: bundles.InTotoPayloadType, Payload: base64.StdEncoding.EncodeToString(payload),
		Signatures: []bundles.EnvelopeSignature{{Sig: sig}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.AppendAttestation(t.Context(), store, d, env, st.PredicateType); err != nil {
		t.Fatal(err)
	}
}

// TestAttestedProvenance: a key scoped to require provenance counts only with an SLSA
// attestation by a named attestor, about this bundle, from the named repository, of a commit
// signed by a named signer; each way of failing that is refused naming the rule and why.
func TestAttestedProvenance(t *testing.T) {
	team, ci, stranger := newSigner(t, "ecdsa"), newSigner(t, "ecdsa"), newSigner(t, "ed25519")
	rule := &bundles.ProvenanceRule{Attestors: []string{"ci"}, Repositories: []string{"https://git.example.com/team-a/*"}, CommitSigners: []string{"release@example.com"}}
	team.key.Source, team.key.Scope = "team-a", &bundles.Scope{Bundles: []string{"team-a-*"}, Provenance: rule}
	ci.key.Source = "ci"
	other := newSigner(t, "ecdsa")
	other.key.Source = "platform"
	policy := Policy{Keys: []Key{team.key, ci.key, other.key}}
	meta := &bundles.Metadata{Name: "team-a-web", Source: bundles.Provenance{URL: teamRepo, Commit: teamCommit}}

	for _, c := range []struct {
		name  string
		setup func(*testing.T, signTarget, ocispec.Descriptor)
		want  string // "" admits
	}{
		{"attested as required", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, nil), nil)
		}, ""},
		{"an in-toto v0.1 statement, as cosign writes, beside a custom attestation", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			custom := provenanceOf(t, d, func(_ *bundles.SLSAProvenance, st *bundles.Statement) {
				st.PredicateType = "https://cosign.sigstore.dev/attestation/v1"
			})
			attest(t, s, d, ci, custom, nil)
			attest(t, s, d, ci, provenanceOf(t, d, func(_ *bundles.SLSAProvenance, st *bundles.Statement) { st.Type = bundles.StatementV01 }), nil)
		}, ""},
		{"an envelope signed by another policy key and by the attestor", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			st := provenanceOf(t, d, nil)
			payload, _ := json.Marshal(st)
			pae := bundles.PAE(bundles.InTotoPayloadType, payload)
			env, _ := json.Marshal(bundles.Envelope{PayloadType: bundles.InTotoPayloadType, Payload: base64.StdEncoding.EncodeToString(payload),
				Signatures: []bundles.EnvelopeSignature{{Sig: other.sign(t, pae)}, {Sig: ci.sign(t, pae)}}})
			if _, err := bundles.AppendAttestation(t.Context(), s, d, env, st.PredicateType); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"a bundle built from a dirty tree", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, nil), nil)
		}, "uncommitted changes"},
		{"no attestation", func(*testing.T, signTarget, ocispec.Descriptor) {}, "carries no SLSA provenance attestation"},
		{"a predicate altered after signing", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, nil), func(b []byte) []byte {
				return []byte(strings.Replace(string(b), "team-a/site.git", "team-a/evil.git", 1))
			})
		}, "signed by no trusted key"},
		{"an attestation about another bundle", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, func(_ *bundles.SLSAProvenance, st *bundles.Statement) {
				st.Subject[0].Digest["sha256"] = strings.Repeat("0", 64)
			}), nil)
		}, "its subject is not bundle"},
		{"an attestation by a key outside the policy", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, stranger, provenanceOf(t, d, nil), nil)
		}, "signed by no trusted key"},
		{"an attestation by a policy key that is not an attestor", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, other, provenanceOf(t, d, nil), nil)
		}, "attested by platform, not ci"},
		{"an attestation naming another repository than the config", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, func(p *bundles.SLSAProvenance, _ *bundles.Statement) {
				p.BuildDefinition.ExternalParameters.Source.Repository = "https://git.example.com/team-b/site.git"
			}), nil)
		}, "the bundle's config " + teamRepo},
		{"another repository, in config and attestation alike", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, func(p *bundles.SLSAProvenance, _ *bundles.Statement) {
				p.BuildDefinition.ExternalParameters.Source.Repository = otherRepo
			}), nil)
		}, "source repository " + otherRepo + " is not https://git.example.com/team-a/*"},
		{"a commit signed by someone else", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, func(p *bundles.SLSAProvenance, _ *bundles.Statement) {
				p.BuildDefinition.ExternalParameters.Source.Verified.Commit.Identities = []string{"intern@example.com"}
			}), nil)
		}, "was not verified signed by release@example.com"},
		{"an unverified commit", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, func(p *bundles.SLSAProvenance, _ *bundles.Statement) {
				p.BuildDefinition.ExternalParameters.Source.Verified = nil
			}), nil)
		}, "was not verified signed by release@example.com"},
		{"no builder id", func(t *testing.T, s signTarget, d ocispec.Descriptor) {
			attest(t, s, d, ci, provenanceOf(t, d, func(p *bundles.SLSAProvenance, _ *bundles.Statement) { p.RunDetails.Builder.ID = "" }), nil)
		}, "runDetails.builder.id is empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			store, d := aBundle(t)
			p := bundles.NewPayload("team-a-web", d.Digest)
			if _, err := bundles.AppendSignature(t.Context(), store, d, p, team.sign(t, p)); err != nil {
				t.Fatal(err)
			}
			c.setup(t, store, d)
			res, err := Bundle(t.Context(), store, d, policy)
			if err != nil {
				t.Fatal(err)
			}
			if err := res.Scoped(meta.Name); err != nil {
				t.Fatal(err)
			}
			m := *meta
			if strings.Contains(c.name, "alike") {
				m.Source.URL = otherRepo
			}
			m.Source.Dirty = strings.Contains(c.name, "dirty")
			err = res.Attested(t.Context(), store, d, policy, &m)
			if c.want != "" {
				if !errors.Is(err, ErrNoProvenance) || !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "team-a requires provenance attested by ci") {
					t.Fatalf("got %v, want ErrNoProvenance naming the rule and %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The admitted provenance is part of the record, and reads back typed.
			b, _ := json.Marshal(res)
			rec, err := ParseRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.Provenance) != 1 || !slices.Contains(rec.Provenance[0].Attestors, "ci") || rec.Provenance[0].Commit != teamCommit || rec.Provenance[0].Verified.Commit.Identities[0] != "release@example.com" {
				t.Fatalf("recorded provenance %+v", rec.Provenance)
			}
			// What the node keeps includes the attestation it believed.
			kept := false
			for _, blob := range res.SignatureBlobs() {
				kept = kept || blob.Digest.String() == rec.Provenance[0].Envelope
			}
			if !kept {
				t.Fatal("the verified attestation is not among the blobs kept with the revision")
			}
		})
	}

	// A key without a provenance rule is not held to one.
	store, d := aBundle(t)
	p := bundles.NewPayload("platform", d.Digest)
	if _, err := bundles.AppendSignature(t.Context(), store, d, p, other.sign(t, p)); err != nil {
		t.Fatal(err)
	}
	res, err := Bundle(t.Context(), store, d, policy)
	if err == nil {
		err = res.Attested(t.Context(), store, d, policy, &bundles.Metadata{Name: "platform"})
	}
	if err != nil {
		t.Fatalf("an unscoped key: %v", err)
	}
}

// TestPolicyProvenanceRules: a provenance rule names attestors among the policy's keys.
func TestPolicyProvenanceRules(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"ci.pub", "team.pub"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pubPEM(t)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	policy := func(attestor, repo string) string {
		return "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n- name: ci\n  path: ci.pub\n- name: team-a\n  path: team.pub\n  scope:\n    bundles: [team-a-*]\n    provenance:\n      attestors: [" + attestor + "]\n      repositories: [" + repo + "]\n"
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(policy("ci", "https://git.example.com/team-a/*")), 0o644)
	p, err := LoadPolicy(good)
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Keys[1].Scope.Provenance; r == nil || r.Attestors[0] != "ci" {
		t.Fatalf("rule %+v", r)
	}
	for _, c := range []struct{ attestor, repo, want string }{
		{"nobody", "x", "keys[1].scope.provenance.attestors[0]: \"nobody\" is not the name of a key of this policy"},
		{"", "x", "keys[1].scope.provenance.attestors: names no key"},
		{"ci", "'['", "keys[1].scope.provenance.repositories[0]"},
	} {
		f := filepath.Join(dir, "bad.yaml")
		os.WriteFile(f, []byte(policy(c.attestor, c.repo)), 0o644)
		if _, err := LoadPolicy(f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("attestor %q repo %q: %v, want %q", c.attestor, c.repo, err, c.want)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"","sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, st, err := bundles.ParseEnvelope(b); err == nil && st.Type != bundles.StatementV1 && st.Type != bundles.StatementV01 {
			t.Fatalf("accepted statement type %q", st.Type)
		}
	})
}

// Attestations that cannot be read refuse only bundles whose signers require provenance.
func TestUnreadableAttestations(t *testing.T) {
	store, d := aBundle(t)
	platform, team := newSigner(t, "ecdsa"), newSigner(t, "ecdsa")
	platform.key.Source = "platform"
	team.key.Source, team.key.Scope = "team-a", &bundles.Scope{Provenance: &bundles.ProvenanceRule{Attestors: []string{"platform"}}}
	p := bundles.NewPayload("x", d.Digest)
	for _, s := range []signer{platform, team} {
		if _, err := bundles.AppendSignature(t.Context(), store, d, p, s.sign(t, p)); err != nil {
			t.Fatal(err)
		}
	}
	// An .att tag on a manifest whose layer is over the envelope limit.
	big := make([]byte, bundles.MaxEnvelopeBytes+1)
	ld := content.NewDescriptorFromBytes(bundles.DSSEType, big)
	if err := store.Push(t.Context(), ld, bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	man, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{ld}})
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, man)
	if err := store.Push(t.Context(), md, bytes.NewReader(man)); err != nil {
		t.Fatal(err)
	}
	if err := store.Tag(t.Context(), md, bundles.AttestationTag(d)); err != nil {
		t.Fatal(err)
	}
	meta := &bundles.Metadata{Name: "x"}
	res, err := Bundle(t.Context(), store, d, Policy{Keys: []Key{platform.key}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Attested(t.Context(), store, d, Policy{Keys: []Key{platform.key}}, meta); err != nil {
		t.Fatalf("a bundle needing no provenance was refused for an unreadable attestation: %v", err)
	}
	strict := Policy{Keys: []Key{team.key, platform.key}}
	res, err = Bundle(t.Context(), store, d, strict)
	if err != nil {
		t.Fatal(err)
	}
	res.Threshold = 2
	if err := res.Attested(t.Context(), store, d, strict, meta); !errors.Is(err, ErrNoProvenance) || !strings.Contains(err.Error(), "over the") {
		t.Fatalf("a bundle needing provenance: %v", err)
	}
}
