package bundler

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/internal/cosignkey"
)

// ProvenanceOptions describe the build platform that vouches for a bundle.
type ProvenanceOptions struct {
	// BuilderID identifies the build platform (SLSA runDetails.builder.id): a CI system's
	// workflow or runner URI.
	BuilderID string
	// InvocationID identifies this run (a CI job URL); optional.
	InvocationID string
	// Repository is the name the subject is given: where the bundle is published.
	Repository string
}

// Provenance is the SLSA v1 statement for bundle d, built from its signed config: the source
// repository, commit and verified commit signature, the spec's digest, and every component
// layer, chart and carried image as a resolved dependency.
func Provenance(d ocispec.Descriptor, b *bundles.Bundle, o ProvenanceOptions) (*bundles.Statement, error) {
	if o.BuilderID == "" {
		return nil, errors.New("provenance: a builder id is required (--builder-id)")
	}
	m := b.Metadata
	if m.Source.Dirty {
		return nil, fmt.Errorf("provenance: %s was built from a tree with uncommitted changes, which no commit describes: build it from a clean commit", m.Name)
	}
	p := bundles.SLSAProvenance{}
	p.BuildDefinition.BuildType = bundles.BuildTypeV1
	ep := &p.BuildDefinition.ExternalParameters
	ep.Source = bundles.BuildSource{Repository: m.Source.URL, Commit: m.Source.Commit, Verified: m.Source.Verified}
	ep.Spec = m.Source.Spec
	ep.Bundle.Name, ep.Bundle.Version, ep.Bundle.Revision = m.Name, m.Version, m.Revision
	if m.Source.Commit != "" {
		p.BuildDefinition.ResolvedDependencies = append(p.BuildDefinition.ResolvedDependencies, bundles.SLSAResourceDescriptor{
			URI: gitURI(m.Source.URL), Digest: map[string]string{"gitCommit": m.Source.Commit}})
	}
	for i, c := range m.Components {
		l := b.Manifest.Layers[i]
		rd := bundles.SLSAResourceDescriptor{Name: "component/" + c.Name, Digest: map[string]string{l.Digest.Algorithm().String(): l.Digest.Encoded()}}
		if c.Helm != nil {
			rd.URI = c.Helm.Chart
		}
		p.BuildDefinition.ResolvedDependencies = append(p.BuildDefinition.ResolvedDependencies, rd)
	}
	for _, im := range m.Images {
		p.BuildDefinition.ResolvedDependencies = append(p.BuildDefinition.ResolvedDependencies, bundles.SLSAResourceDescriptor{
			URI: "docker://" + im.Name, Name: "image/" + im.Name,
			Digest: map[string]string{im.Descriptor.Digest.Algorithm().String(): im.Descriptor.Digest.Encoded()}})
	}
	now := time.Now().UTC().Truncate(time.Second)
	started := m.Created.UTC()
	p.RunDetails.Builder.ID = o.BuilderID
	p.RunDetails.Metadata = &bundles.SLSAMetadata{InvocationID: o.InvocationID, StartedOn: &started, FinishedOn: &now}
	pred, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	name := o.Repository
	if name == "" {
		name = m.Name
	}
	return &bundles.Statement{Type: bundles.StatementV1, PredicateType: bundles.SLSAProvenanceV1, Predicate: pred,
		Subject: []bundles.Subject{{Name: name, Digest: map[string]string{d.Digest.Algorithm().String(): d.Digest.Encoded()}}}}, nil
}

// gitURI names a repository as SLSA's resolved dependencies do (git+https://…).
func gitURI(url string) string {
	if url == "" {
		return ""
	}
	return "git+" + url
}

// Attest signs statement st with key as a DSSE envelope and stores it beside bundle d in dst
// the way cosign attest does (bundles.AppendAttestation).
func Attest(ctx context.Context, dst SignTarget, d ocispec.Descriptor, st *bundles.Statement, key crypto.Signer) (ocispec.Descriptor, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	sig, err := cosignkey.Sign(key, bundles.PAE(bundles.InTotoPayloadType, payload))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	env, err := json.Marshal(bundles.Envelope{PayloadType: bundles.InTotoPayloadType, Payload: base64.StdEncoding.EncodeToString(payload),
		Signatures: []bundles.EnvelopeSignature{{Sig: base64.StdEncoding.EncodeToString(sig)}}})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return bundles.AppendAttestation(ctx, dst, d, env, st.PredicateType)
}
