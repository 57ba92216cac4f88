package bundles

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of the bundle format (SPEC §1).
const (
	ArtifactType   = "application/vnd.ferry.bundle.v1+json"
	ConfigType     = "application/vnd.ferry.bundle.config.v1+json"
	ComponentType  = "application/vnd.ferry.component.v1.tar+gzip"
	SchemaVersion  = 1
	MaxConfigBytes = 1 << 20
	MaxComponents  = 256
	MaxImages      = 4096
)

// Docker's manifest media types, which registries still serve for many images.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// Annotation keys on the bundle manifest (SPEC §4).
const (
	AnnotationTitle       = "org.opencontainers.image.title"
	AnnotationVersion     = "org.opencontainers.image.version"
	AnnotationVCSRevision = "org.opencontainers.image.revision"
	AnnotationSource      = "org.opencontainers.image.source"
	AnnotationCreated     = "org.opencontainers.image.created"
	AnnotationRevision    = "dev.ferry.bundle.revision"
)

// Metadata is the bundle's signed config blob (SPEC §2).
type Metadata struct {
	SchemaVersion int         `json:"schemaVersion"`
	Name          string      `json:"name"`
	Version       string      `json:"version"`
	Revision      uint64      `json:"revision"`
	Created       time.Time   `json:"created"`
	Source        Provenance  `json:"source"`
	Components    []Component `json:"components"`
	Images        []Image     `json:"images"`
}

// Provenance says where the tree a bundle was built from came from.
type Provenance struct {
	URL    string `json:"url"`
	Commit string `json:"commit"`
	Dirty  bool   `json:"dirty"`
	// Spec is the digest of the ferry.yaml built (or of the spec made from a Flux
	// directory, as YAML).
	Spec string `json:"spec,omitempty"`
	// Verified is the commit's (and tag's) signature as the builder verified it
	// (--verify-commit); nil when nothing was verified.
	Verified *CommitSignature `json:"verified,omitempty"`
}

// CommitSignature is what `ferry bundle build --verify-commit` verified of the commit a
// bundle was built from: in mode HEAD its signer, in mode Tag the signer of an annotated tag
// pointing at it, in TagAndHEAD both.
type CommitSignature struct {
	Mode    string  `json:"mode"`
	Commit  *Signer `json:"commit,omitempty"`
	TagName string  `json:"tagName,omitempty"`
	Tag     *Signer `json:"tag,omitempty"`
}

// Signer is a key that signed a commit or tag, and who it stands for.
type Signer struct {
	// Format is "openpgp" or "ssh".
	Format string `json:"format"`
	// Key is the key's fingerprint: OpenPGP's in hex, SSH's as SHA256:base64.
	Key string `json:"key"`
	// Identities are the OpenPGP key's user ID emails, or the principals of the
	// allowed-signers line that admitted the SSH key.
	Identities []string `json:"identities,omitempty"`
}

// SignedByAny reports whether one of names is s's key or one of its identities. An OpenPGP
// fingerprint matches in any case and with spaces; an SSH SHA256: fingerprint exactly
// (base64 is case-sensitive). Identities match exactly, ignoring case: an allowed-signers
// line for *@example.com names no one in particular, so it does not stand for
// bob@example.com.
func (s *Signer) SignedByAny(names []string) bool {
	for _, a := range names {
		a = strings.TrimSpace(a)
		if a == s.Key || s.Format == "openpgp" && strings.EqualFold(strings.ReplaceAll(a, " ", ""), s.Key) {
			return true
		}
		for _, id := range s.Identities {
			if strings.EqualFold(a, id) {
				return true
			}
		}
	}
	return false
}

// Image is a container image a bundle carries: the name the manifests use and the image
// manifest (or index) it was resolved to when the bundle was built. The descriptor is inside
// the signed config, so the image's whole graph is covered by the bundle's signature.
type Image struct {
	Name       string             `json:"name"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
}

// Component types.
const (
	TypeKustomize = "kustomize"
	TypeHelm      = "helm"
)

// Component is one entry of Metadata.Components; its files are the layer at the same index.
// Exactly the spec matching Type is set.
type Component struct {
	Name      string         `json:"name"`
	Type      string         `json:"type"`
	Kustomize *KustomizeSpec `json:"kustomize,omitempty"`
	Helm      *HelmSpec      `json:"helm,omitempty"`
	// Rendered says the bundle carries the component's kustomize build output as a rendered
	// layer (SPEC §3), which the node applies instead of building the component again.
	Rendered bool `json:"rendered,omitempty"`
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// semverRE is the regular expression semver.org suggests for SemVer 2.0.0.
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
	commitRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
)

// HomeNamespace is the namespace the component lives in (its namespace field), "" when it
// sets none.
func (c Component) HomeNamespace() string { return homeNamespace(c.Kustomize, c.Helm) }

// TargetNamespace is where the component's namespaced objects go, "" when it sets none.
func (c Component) TargetNamespace() string {
	switch {
	case c.Kustomize != nil:
		return c.Kustomize.TargetNamespace
	case c.Helm != nil:
		return c.Helm.TargetNamespace
	}
	return ""
}

// ServiceAccountName is the service account the component runs as, "" when it names none.
func (c Component) ServiceAccountName() string {
	switch {
	case c.Kustomize != nil:
		return c.Kustomize.ServiceAccountName
	case c.Helm != nil:
		return c.Helm.ServiceAccountName
	}
	return ""
}

// DependsOn returns the names of the components c depends on.
func (c Component) DependsOn() []string {
	var refs []DependencyRef
	switch {
	case c.Kustomize != nil:
		refs = c.Kustomize.DependsOn
	case c.Helm != nil:
		refs = c.Helm.DependsOn
	}
	out := make([]string, len(refs))
	for i, d := range refs {
		out[i] = d.Name
	}
	return out
}

// Order returns the indexes of m's components in the order they are applied: each after the
// components it depends on (dependsOn), otherwise as listed. A dependency on a component the
// bundle does not have, or a cycle, is an error; the signed config is checked again here
// because the node must not trust the bundler's checks.
func (m *Metadata) Order() ([]int, error) {
	index := map[string]int{}
	names := make([]string, len(m.Components))
	for i, c := range m.Components {
		index[c.Name], names[i] = i, c.Name
	}
	deps := map[string][]string{}
	for _, c := range m.Components {
		for _, d := range c.DependsOn() {
			if _, ok := index[d]; !ok || d == c.Name {
				return nil, &FieldError{Field: "components." + c.Name + ".dependsOn", Msg: fmt.Sprintf("%q is not another component of this bundle", d)}
			}
			deps[c.Name] = append(deps[c.Name], d)
		}
	}
	order, err := dependencyOrder(names, deps)
	if err != nil {
		return nil, &FieldError{Field: "components", Msg: err.Error()}
	}
	out := make([]int, len(order))
	for i, n := range order {
		out[i] = index[n]
	}
	return out, nil
}

// Validate returns every problem with m, joined, each naming its field.
func (m *Metadata) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	if m.SchemaVersion != SchemaVersion {
		bad("schemaVersion", "is %d, this Ferry reads %d", m.SchemaVersion, SchemaVersion)
	}
	checkNameVersion(bad, "name", m.Name, "version", m.Version)
	if m.Revision == 0 {
		bad("revision", "must be a positive integer")
	}
	if m.Created.IsZero() || m.Created.Location() != time.UTC || m.Created.Nanosecond() != 0 {
		bad("created", "must be a UTC time in whole seconds")
	}
	if m.Source.Commit != "" && !commitRE.MatchString(m.Source.Commit) {
		bad("source.commit", "%q is not a full commit hash", m.Source.Commit)
	}
	if len(m.Components) == 0 || len(m.Components) > MaxComponents {
		bad("components", "has %d entries, want 1 to %d", len(m.Components), MaxComponents)
	}
	seen := map[string]bool{}
	for i, c := range m.Components {
		f := fmt.Sprintf("components[%d]", i)
		if !dnsLabel.MatchString(c.Name) {
			bad(f+".name", "%q is not a DNS label", c.Name)
		}
		if seen[c.Name] {
			bad(f+".name", "%q appears twice", c.Name)
		}
		seen[c.Name] = true
		switch {
		case c.Type == TypeKustomize && c.Kustomize != nil && c.Helm == nil:
		case c.Type == TypeHelm && c.Helm != nil && c.Kustomize == nil:
		case c.Type != TypeKustomize && c.Type != TypeHelm:
			bad(f+".type", "%q is not a component type this Ferry knows (kustomize, helm)", c.Type)
		default:
			bad(f, "type %q needs exactly its own spec", c.Type)
		}
		if c.Rendered && !c.CanRender() {
			bad(f+".rendered", "only a kustomize component without decryption carries a rendered layer")
		}
	}
	if len(m.Images) > MaxImages {
		bad("images", "has %d entries, over the limit of %d", len(m.Images), MaxImages)
	}
	for i, im := range m.Images {
		d := im.Descriptor
		if im.Name == "" || d.Digest.Validate() != nil || d.Size <= 0 || d.Size > MaxManifestBytes ||
			(d.MediaType != ocispec.MediaTypeImageManifest && d.MediaType != ocispec.MediaTypeImageIndex &&
				d.MediaType != mediaTypeDockerManifest && d.MediaType != mediaTypeDockerManifestList) {
			bad(fmt.Sprintf("images[%d]", i), "needs a name and an image manifest or index descriptor (digest, size, media type)")
		}
	}
	return errors.Join(errs...)
}

// checkNameVersion checks a bundle name and version, wherever they are written (SPEC §2).
func checkNameVersion(bad func(field, format string, a ...any), nameField, name, versionField, version string) {
	if !dnsLabel.MatchString(name) || len(name) > 63 {
		bad(nameField, "%q is not a DNS label (lower case letters, digits, '-', at most 63)", name)
	}
	if !semverRE.MatchString(version) {
		bad(versionField, "%q is not a semantic version (like 1.4.0)", version)
	}
}

// ValidateNameVersion checks a bundle name and version given outside a document (flags).
func ValidateNameVersion(name, version string) error {
	var errs []error
	checkNameVersion(func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}, "--name", name, "--version", version)
	return errors.Join(errs...)
}

// FieldError is a problem with one field of a document.
type FieldError struct {
	File  string // may be empty
	Line  int    // 0 when unknown
	Field string // path such as spec.components[0].kustomize.path
	Msg   string
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if loc != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
	}
	return e.Field + ": " + e.Msg
}

// Marshal encodes m deterministically (SPEC §5).
func (m *Metadata) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("bundle metadata: %w", err)
	}
	if m.Images == nil {
		m.Images = []Image{}
	}
	return json.Marshal(m)
}

// ParseMetadata decodes and validates a config blob read from outside. Unknown fields,
// trailing data and blobs over MaxConfigBytes are refused.
func ParseMetadata(b []byte) (*Metadata, error) {
	if len(b) > MaxConfigBytes {
		return nil, fmt.Errorf("bundle config: %d bytes, over the %d-byte limit", len(b), MaxConfigBytes)
	}
	if err := checkJSON(b); err != nil {
		return nil, fmt.Errorf("bundle config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Metadata
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("bundle config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("bundle config: data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("bundle config: %w", err)
	}
	return &m, nil
}

// Annotations returns the manifest annotations for m (SPEC §4).
func (m *Metadata) Annotations() map[string]string {
	a := map[string]string{
		AnnotationTitle:    m.Name,
		AnnotationVersion:  m.Version,
		AnnotationCreated:  m.Created.Format(time.RFC3339),
		AnnotationRevision: strconv.FormatUint(m.Revision, 10),
	}
	if m.Source.Commit != "" {
		a[AnnotationVCSRevision] = m.Source.Commit
	}
	if m.Source.URL != "" {
		a[AnnotationSource] = m.Source.URL
	}
	return a
}
