package bundles

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Attestations, the way `cosign attest` stores them: each a DSSE envelope around an in-toto
// statement, one layer of the manifest tagged sha256-<digest>.att (AttestationTag), and the
// same layer as an OCI 1.1 referrer of the bundle.
const (
	// DSSEType is the media type of an attestation layer: its content is the envelope.
	DSSEType = "application/vnd.dsse.envelope.v1+json"
	// AttestationArtifactType is the artifact type of an attestation stored as a referrer
	// (cosign's WriteAttestationsReferrer uses the same; cosign attest itself, up to v2.6,
	// writes only the tag).
	AttestationArtifactType = "application/vnd.in-toto+json"
	// PredicateTypeAnnotation names the statement's predicate type on its layer.
	PredicateTypeAnnotation = "predicateType"
	// InTotoPayloadType is the DSSE payload type of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	// StatementV1 and StatementV01 are the in-toto statement types accepted (cosign writes
	// v0.1, Ferry v1; both have the same fields).
	StatementV1  = "https://in-toto.io/Statement/v1"
	StatementV01 = "https://in-toto.io/Statement/v0.1"
	// SLSAProvenanceV1 is the predicate type of SLSA v1 provenance (cosign --type
	// slsaprovenance1).
	SLSAProvenanceV1 = "https://slsa.dev/provenance/v1"
	// MaxEnvelopeBytes bounds one attestation envelope.
	MaxEnvelopeBytes = 1 << 20
)

// Envelope is a DSSE envelope (github.com/secure-systems-lab/dsse).
type Envelope struct {
	PayloadType string              `json:"payloadType"`
	Payload     string              `json:"payload"` // base64
	Signatures  []EnvelopeSignature `json:"signatures"`
}

// EnvelopeSignature is one signature of an envelope, over PAE(payloadType, payload).
type EnvelopeSignature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"` // base64
}

// PAE is DSSE's pre-authentication encoding, what an envelope's signatures sign.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// Statement is an in-toto statement.
type Statement struct {
	Type          string          `json:"_type"`
	Subject       []Subject       `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// Subject is what a statement is about: for a bundle, its manifest digest.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// ParseEnvelope reads an attestation layer from outside: a DSSE envelope of an in-toto
// statement, with at least one signature, and the statement in it. It does not check any
// signature.
func ParseEnvelope(b []byte) (*Envelope, []byte, *Statement, error) {
	if len(b) > MaxEnvelopeBytes {
		return nil, nil, nil, fmt.Errorf("envelope: %d bytes, over the %d-byte limit", len(b), MaxEnvelopeBytes)
	}
	if err := checkJSON(b); err != nil {
		return nil, nil, nil, fmt.Errorf("envelope: %w", err)
	}
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, nil, nil, fmt.Errorf("envelope: %w", err)
	}
	if env.PayloadType != InTotoPayloadType {
		return nil, nil, nil, fmt.Errorf("envelope: payloadType %q, want %s", env.PayloadType, InTotoPayloadType)
	}
	if len(env.Signatures) == 0 || len(env.Signatures) > MaxSignatures {
		return nil, nil, nil, fmt.Errorf("envelope: %d signatures, want 1 to %d", len(env.Signatures), MaxSignatures)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("envelope: payload is not base64: %w", err)
	}
	if err := checkJSON(payload); err != nil {
		return nil, nil, nil, fmt.Errorf("statement: %w", err)
	}
	var st Statement
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, nil, nil, fmt.Errorf("statement: %w", err)
	}
	if st.Type != StatementV1 && st.Type != StatementV01 {
		return nil, nil, nil, fmt.Errorf("statement: _type %q is not an in-toto statement", st.Type)
	}
	return &env, payload, &st, nil
}

// About reports whether the statement's subjects include manifest digest d.
func (s *Statement) About(d ocispec.Descriptor) bool {
	for _, sub := range s.Subject {
		if sub.Digest[d.Digest.Algorithm().String()] == d.Digest.Encoded() {
			return true
		}
	}
	return false
}

// ReadAttestations fetches the attestations stored beside bundle d in src (tag scheme and
// referrers), each layer's envelope digest- and size-checked. It returns ErrNoSignatures when
// there is none.
func ReadAttestations(ctx context.Context, src interface {
	content.Fetcher
	content.Resolver
}, d ocispec.Descriptor) (*Signatures, error) {
	return readAll(ctx, src, d, attestationKind)
}

// AppendAttestation stores envelope (a DSSE envelope of a statement with predicateType) for
// bundle d in dst, beside any attestations already there, as cosign attest does.
func AppendAttestation(ctx context.Context, dst interface {
	content.Storage
	content.Resolver
	content.Tagger
}, d ocispec.Descriptor, envelope []byte, predicateType string) (ocispec.Descriptor, error) {
	if _, _, _, err := ParseEnvelope(envelope); err != nil {
		return ocispec.Descriptor{}, err
	}
	// cosign verify-attestation requires the signature annotation on each layer, empty: the
	// signature is inside the envelope.
	return appendLayer(ctx, dst, d, attestationKind, envelope, map[string]string{PredicateTypeAnnotation: predicateType, SignatureAnnotation: ""})
}

// SLSA v1 provenance (https://slsa.dev/spec/v1.0/provenance), the fields Ferry writes and
// reads. A predicate made by another tool may carry more; those are ignored.
type SLSAProvenance struct {
	BuildDefinition SLSABuildDefinition `json:"buildDefinition"`
	RunDetails      SLSARunDetails      `json:"runDetails"`
}

// SLSABuildDefinition says what was built, from what.
type SLSABuildDefinition struct {
	BuildType            string                   `json:"buildType"`
	ExternalParameters   BuildParameters          `json:"externalParameters"`
	InternalParameters   map[string]any           `json:"internalParameters,omitempty"`
	ResolvedDependencies []SLSAResourceDescriptor `json:"resolvedDependencies,omitempty"`
}

// BuildParameters are Ferry's external parameters: the source and the spec built.
type BuildParameters struct {
	Source BuildSource `json:"source"`
	// Spec is the digest of the ferry.yaml (or of the spec made from a Flux directory).
	Spec string `json:"spec,omitempty"`
	// Bundle names what was built.
	Bundle struct {
		Name     string `json:"name"`
		Version  string `json:"version"`
		Revision uint64 `json:"revision"`
	} `json:"bundle"`
}

// BuildSource is the repository and commit built, and the commit's verified signature.
type BuildSource struct {
	Repository string           `json:"repository"`
	Commit     string           `json:"commit"`
	Verified   *CommitSignature `json:"verified,omitempty"`
}

// SLSAResourceDescriptor is a resolved dependency: a component's layer, a chart, an image.
type SLSAResourceDescriptor struct {
	URI    string            `json:"uri,omitempty"`
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

// SLSARunDetails says who built it, and when.
type SLSARunDetails struct {
	Builder  SLSABuilder   `json:"builder"`
	Metadata *SLSAMetadata `json:"metadata,omitempty"`
}

// SLSABuilder identifies the build platform.
type SLSABuilder struct {
	ID string `json:"id"`
}

// SLSAMetadata is the build's invocation.
type SLSAMetadata struct {
	InvocationID string     `json:"invocationId,omitempty"`
	StartedOn    *time.Time `json:"startedOn,omitempty"`
	FinishedOn   *time.Time `json:"finishedOn,omitempty"`
}

// BuildTypeV1 is the buildType of provenance Ferry writes for `ferry bundle build`.
const BuildTypeV1 = "https://ferry.dev/bundle/build/v1"

// ParseSLSAProvenance reads a SLSA v1 predicate from a statement.
func ParseSLSAProvenance(st *Statement) (*SLSAProvenance, error) {
	if st.PredicateType != SLSAProvenanceV1 {
		return nil, fmt.Errorf("predicate type %q, want %s", st.PredicateType, SLSAProvenanceV1)
	}
	var p SLSAProvenance
	if err := json.Unmarshal(st.Predicate, &p); err != nil {
		return nil, fmt.Errorf("SLSA provenance: %w", err)
	}
	if p.RunDetails.Builder.ID == "" {
		return nil, errors.New("SLSA provenance: runDetails.builder.id is empty")
	}
	return &p, nil
}
