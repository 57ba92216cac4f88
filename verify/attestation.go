package verify

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferrygitops/ferry/bundles"
)

// ErrNoProvenance is wrapped (with ErrUntrusted) when a signer's scope requires provenance
// the bundle does not carry.
var ErrNoProvenance = errors.New("required provenance missing")

// Provenance is an SLSA provenance attestation that verified: signed by a key of the policy,
// about this bundle, and naming the source its config names. It is stored with the revision.
type Provenance struct {
	// Attestors are the policy's names of the keys whose signatures of the envelope
	// verified, KeyIDs their IDs.
	Attestors []string `json:"attestors"`
	KeyIDs    []string `json:"keyIDs"`
	// Envelope is the digest of the attestation layer (the DSSE envelope).
	Envelope   string                   `json:"envelope"`
	BuilderID  string                   `json:"builderID"`
	Repository string                   `json:"repository"`
	Commit     string                   `json:"commit"`
	Verified   *bundles.CommitSignature `json:"verified,omitempty"`
}

// attested reads the SLSA provenance attestations stored beside d in src and returns those
// signed by a key of p, about d and consistent with m's source, with why the others did not
// count. A bundle without attestations gives none and no error.
func attested(ctx context.Context, src Source, d ocispec.Descriptor, p Policy, m *bundles.Metadata) ([]Provenance, []ocispec.Descriptor, *bundles.Signatures, []error, error) {
	found, err := bundles.ReadAttestations(ctx, src, d)
	if errors.Is(err, bundles.ErrNoSignatures) {
		return nil, nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w: %s: %w", ErrUntrusted, d.Digest, err)
	}
	var out []Provenance
	var layers []ocispec.Descriptor
	var problems []error
	for i, l := range found.Layers {
		pv, err := checkAttestation(l, d, p, m)
		if err != nil {
			problems = append(problems, fmt.Errorf("attestation %d (%s): %w", i, l.Descriptor.Digest, err))
			continue
		}
		if pv != nil {
			out = append(out, *pv)
			layers = append(layers, l.Descriptor)
		}
	}
	return out, layers, found, problems, nil
}

// checkAttestation verifies one attestation layer; it returns nil, nil for a statement of
// another predicate type (not provenance, so not wrong).
func checkAttestation(l bundles.SignatureLayer, d ocispec.Descriptor, p Policy, m *bundles.Metadata) (*Provenance, error) {
	env, payload, st, err := bundles.ParseEnvelope(l.Payload)
	if err != nil {
		return nil, err
	}
	if st.PredicateType != bundles.SLSAProvenanceV1 {
		return nil, nil
	}
	pae := bundles.PAE(env.PayloadType, payload)
	var by []*Key
	for i := range p.Keys {
		k := &p.Keys[i]
		for _, s := range env.Signatures {
			if raw, err := base64.StdEncoding.DecodeString(s.Sig); err == nil && verifySignature(k.Public, pae, raw) {
				by = append(by, k)
				break
			}
		}
	}
	if len(by) == 0 {
		return nil, errors.New("signed by no trusted key")
	}
	if m.Source.Dirty {
		return nil, errors.New("the bundle's config says it was built from a tree with uncommitted changes, which no commit describes")
	}
	// Only now is the statement believed.
	if !st.About(d) {
		return nil, fmt.Errorf("its subject is not bundle %s", d.Digest)
	}
	prov, err := bundles.ParseSLSAProvenance(st)
	if err != nil {
		return nil, err
	}
	src := prov.BuildDefinition.ExternalParameters.Source
	if src.Commit != m.Source.Commit || src.Repository != m.Source.URL {
		return nil, fmt.Errorf("it names %s @ %s, the bundle's config %s @ %s", orNone(src.Repository), orNone(src.Commit), orNone(m.Source.URL), orNone(m.Source.Commit))
	}
	pv := &Provenance{Envelope: l.Descriptor.Digest.String(), BuilderID: prov.RunDetails.Builder.ID,
		Repository: src.Repository, Commit: src.Commit, Verified: src.Verified}
	for _, k := range by {
		pv.Attestors, pv.KeyIDs = append(pv.Attestors, k.Source), append(pv.KeyIDs, k.ID)
	}
	return pv, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// meets reports whether provenance pv satisfies rule r, or says why not.
func meets(r *bundles.ProvenanceRule, pv Provenance) error {
	named := false
	for _, a := range pv.Attestors {
		named = named || slices.Contains(r.Attestors, a)
	}
	if !named {
		return fmt.Errorf("attested by %s, not %s", strings.Join(pv.Attestors, ","), strings.Join(r.Attestors, ","))
	}
	if len(r.Repositories) > 0 && !glob(r.Repositories, pv.Repository) {
		return fmt.Errorf("source repository %s is not %s", orNone(pv.Repository), strings.Join(r.Repositories, ","))
	}
	if len(r.Builders) > 0 && !glob(r.Builders, pv.BuilderID) {
		return fmt.Errorf("builder %s is not %s", pv.BuilderID, strings.Join(r.Builders, ","))
	}
	if len(r.CommitSigners) > 0 {
		var signers []*bundles.Signer
		if v := pv.Verified; v != nil {
			signers = append(signers, v.Commit, v.Tag)
		}
		for _, s := range signers {
			if s != nil && s.SignedByAny(r.CommitSigners) {
				return nil
			}
		}
		return fmt.Errorf("commit %s was not verified signed by %s", orNone(pv.Commit), strings.Join(r.CommitSigners, ","))
	}
	return nil
}

func glob(pats []string, s string) bool {
	for _, p := range pats {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

// Attested checks the provenance the signers' scopes require (ProvenanceRule) against the
// SLSA attestations stored beside d in src, and records every provenance attestation that
// verified. A signer whose rule no attestation meets does not count, as one out of scope;
// too few left is ErrNoProvenance, naming each rule and why it was not met. Call it after
// Scoped, with the verified bundle's config m.
func (r *Result) Attested(ctx context.Context, src Source, d ocispec.Descriptor, p Policy, m *bundles.Metadata) error {
	provs, layers, found, problems, err := attested(ctx, src, d, p, m)
	if err != nil {
		// Attestations that cannot be read (damaged, over a limit) refuse only a bundle whose
		// signers need them: anyone who can write beside a bundle could add such a tag.
		required := false
		for _, s := range r.Signers {
			required = required || ruleOf(s.Scope) != nil
		}
		if !required {
			return nil
		}
		problems = append(problems, err)
	}
	r.Provenance = provs
	r.attestations, r.attested = found, layers
	var keep []Signer
	var why []string
	for _, s := range r.Signers {
		rule := ruleOf(s.Scope)
		if rule == nil {
			keep = append(keep, s)
			continue
		}
		var reasons []string
		ok := false
		for _, pv := range provs {
			err := meets(rule, pv)
			if err == nil {
				ok = true
				break
			}
			reasons = append(reasons, err.Error())
		}
		if ok {
			keep = append(keep, s)
			continue
		}
		for _, p := range problems {
			reasons = append(reasons, p.Error())
		}
		if len(reasons) == 0 {
			reasons = []string{"the bundle carries no SLSA provenance attestation"}
		}
		why = append(why, fmt.Sprintf("%s requires provenance %s: %s", s.KeySource, rule, strings.Join(reasons, "; ")))
	}
	if len(keep) < r.Threshold {
		return fmt.Errorf("%w: %w: bundle %s: %d of %d required signatures count: %s",
			ErrUntrusted, ErrNoProvenance, m.Name, len(keep), r.Threshold, strings.Join(why, "; "))
	}
	r.Signers = keep
	return nil
}

// ruleOf is the scope's provenance rule, nil for none (or no scope).
func ruleOf(s *bundles.Scope) *bundles.ProvenanceRule {
	if s == nil {
		return nil
	}
	return s.Provenance
}
