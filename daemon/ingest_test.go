package daemon

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/internal/cosignkey"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// keyPair is a signing key and the policy that trusts it.
type keyPair struct {
	signer crypto.Signer
	policy verify.Policy
}

func newKey(t testing.TB) keyPair {
	t.Helper()
	privPEM, pubPEM, err := bundler.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k.key"), privPEM, 0o600)
	signer, err := bundler.LoadPrivateKey(filepath.Join(dir, "k.key"), []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := verify.ParsePublicKey("k.pub", pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{signer: signer, policy: verify.Policy{Keys: []verify.Key{pub}}}
}

type memSource struct{ *memory.Store }

func (memSource) Close() error { return nil }

// makeBundle packs a one-component bundle of the given revision into src; payload varies the
// layer's content (and size).
func makeBundle(t testing.TB, src *memory.Store, name string, revision uint64, payload string) ocispec.Descriptor {
	t.Helper()
	dir := bundlertest.WriteTree(t, map[string]string{
		"kustomization.yaml": "resources: [cm.yaml]\n",
		"cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {v: " + fmt.Sprintf("%q", payload) + "}\n",
	})
	var layer bytes.Buffer
	if err := bundles.PackDir(dir, &layer); err != nil {
		t.Fatal(err)
	}
	m := &bundles.Metadata{
		SchemaVersion: bundles.SchemaVersion, Name: name, Version: fmt.Sprintf("1.0.%d", revision), Revision: revision,
		Created:    time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		Components: []bundles.Component{{Name: "app", Type: "kustomize", Kustomize: &bundles.KustomizeSpec{Path: "."}}},
	}
	desc, err := bundles.Pack(t.Context(), src, m, [][]byte{layer.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Tag(t.Context(), desc, m.Version); err != nil {
		t.Fatal(err)
	}
	return desc
}

func sign(t testing.TB, src *memory.Store, desc ocispec.Descriptor, k keyPair) {
	t.Helper()
	if _, err := bundler.Sign(context.Background(), src, desc, k.signer, "test"); err != nil {
		t.Fatal(err)
	}
}

func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// snapshot describes everything the store holds: bundle records, revisions and blob files.
func snapshot(t *testing.T, st *store.Store, names ...string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		rec, err := st.GetBundle(n)
		if err != nil {
			t.Fatal(err)
		}
		revs, err := st.Revisions(n)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%+v\n", rec)
		for _, r := range revs {
			fmt.Fprintf(&b, "%s %d %s %s\n", r.Name, r.Revision, r.Manifest.Digest, r.State)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(st.Dir(), "blobs", "sha256"))
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	sort.Strings(files)
	fmt.Fprintf(&b, "blobs: %s\n", strings.Join(files, ","))
	return b.String()
}

func TestIngestAdmitsVerifiedBundle(t *testing.T) {
	k := newKey(t)
	src := memory.New()
	desc := makeBundle(t, src, "site", 3, "hello")
	sign(t, src, desc, k)
	st := openStore(t, t.TempDir())
	defer st.Close()

	rev, err := Ingest(t.Context(), st, memSource{src}, desc, k.policy, "test")
	if err != nil {
		t.Fatal(err)
	}
	if rev.State != store.StateVerified || rev.Revision != 3 || len(rev.Verification) == 0 {
		t.Fatalf("revision %+v", rev)
	}
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
	// What was admitted reads back from the store as a bundle, layer included.
	b, err := bundles.Open(t.Context(), st, desc)
	if err != nil {
		t.Fatal(err)
	}
	files, err := b.Layer(t.Context(), st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := files.Get("cm.yaml"); !ok || !strings.Contains(string(f.Data), "hello") {
		t.Fatalf("layer %+v", files)
	}
	// Admitting the same bundle again is a downgrade (not newer), and changes nothing.
	before := snapshot(t, st, "site")
	if _, err := Ingest(t.Context(), st, memSource{src}, desc, k.policy, "test"); !errors.Is(err, store.ErrDowngrade) {
		t.Fatalf("re-ingest: err = %v, want ErrDowngrade", err)
	}
	if after := snapshot(t, st, "site"); after != before {
		t.Fatalf("store changed:\n%s\n---\n%s", before, after)
	}
}

// forging serves other bytes for one digest, as a corrupted stick or hostile mirror would.
type forging struct {
	memSource
	digest digest.Digest
	data   []byte
}

func (f forging) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.Digest == f.digest {
		return io.NopCloser(bytes.NewReader(f.data)), nil
	}
	return f.memSource.Fetch(ctx, d)
}

func TestIngestRefusalsLeaveStoreUnchanged(t *testing.T) {
	trusted, stranger := newKey(t), newKey(t)
	tests := []struct {
		name string
		// run offers something to a store that already holds revision 5 of "site".
		run  func(t *testing.T, st *store.Store) error
		want error
		msg  string
	}{
		{"no signature", func(t *testing.T, st *store.Store) error {
			src := memory.New()
			d := makeBundle(t, src, "site", 6, "unsigned")
			return ingestErr(t, st, src, d, trusted)
		}, verify.ErrUntrusted, "not signed"},
		{"untrusted key", func(t *testing.T, st *store.Store) error {
			src := memory.New()
			d := makeBundle(t, src, "site", 6, "stranger")
			sign(t, src, d, stranger)
			return ingestErr(t, st, src, d, trusted)
		}, verify.ErrUntrusted, "no trusted key"},
		{"signature over another digest", func(t *testing.T, st *store.Store) error {
			src := memory.New()
			a := makeBundle(t, src, "site", 6, "bundle A")
			b := makeBundle(t, src, "site", 7, "bundle B")
			sign(t, src, a, trusted)
			// Bundle A's genuine signature manifest, stored under B's signature tag.
			sigA, err := src.Resolve(t.Context(), bundles.SignatureTag(a))
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Tag(t.Context(), sigA, bundles.SignatureTag(b)); err != nil {
				t.Fatal(err)
			}
			return ingestErr(t, st, src, b, trusted)
		}, verify.ErrUntrusted, "not this bundle"},
		{"layer differs from its digest", func(t *testing.T, st *store.Store) error {
			src := memory.New()
			d := makeBundle(t, src, "site", 6, "genuine")
			sign(t, src, d, trusted)
			b, err := bundles.Open(t.Context(), src, d)
			if err != nil {
				t.Fatal(err)
			}
			layer := b.Manifest.Layers[0]
			evil := make([]byte, layer.Size)
			_, err = Ingest(t.Context(), st, forging{memSource{src}, layer.Digest, evil}, d, trusted.policy, "test")
			return err
		}, content.ErrMismatchedDigest, "digest"}, // caught by the layer check, before the store
		{"downgrade", func(t *testing.T, st *store.Store) error {
			src := memory.New()
			d := makeBundle(t, src, "site", 4, "old but validly signed")
			sign(t, src, d, trusted)
			return ingestErr(t, st, src, d, trusted)
		}, store.ErrDowngrade, "revision 4"},
		{"equivocation", func(t *testing.T, st *store.Store) error {
			src := memory.New()
			d := makeBundle(t, src, "site", 5, "same number, other content")
			sign(t, src, d, trusted)
			return ingestErr(t, st, src, d, trusted)
		}, store.ErrEquivocation, "revision 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStore(t, t.TempDir())
			defer st.Close()
			src := memory.New()
			d := makeBundle(t, src, "site", 5, "current")
			sign(t, src, d, trusted)
			if _, err := Ingest(t.Context(), st, memSource{src}, d, trusted.policy, "test"); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, st, "site")
			err := tt.run(t, st)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
			if after := snapshot(t, st, "site"); after != before {
				t.Fatalf("refused ingest changed the store:\n%s\n---\n%s", before, after)
			}
			if err := st.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func ingestErr(t *testing.T, st *store.Store, src *memory.Store, d ocispec.Descriptor, k keyPair) error {
	t.Helper()
	rev, err := Ingest(t.Context(), st, memSource{src}, d, k.policy, "test")
	if err == nil {
		t.Fatalf("admitted %+v", rev)
	}
	return err
}

// TestHostileArchivesAreRefusedBeforeIngest: a stick's tar is checked as a whole before any
// of it is opened, so none of these reach verification or the store.
func TestHostileArchivesAreRefusedBeforeIngest(t *testing.T) {
	entry := func(name string, typ byte, data string) func(*tar.Writer) {
		return func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Size: int64(len(data)), Mode: 0o644, Linkname: "/etc/passwd"})
			tw.Write([]byte(data))
		}
	}
	layout := entry("oci-layout", tar.TypeReg, `{"imageLayoutVersion":"1.0.0"}`)
	tests := []struct {
		name    string
		entries []func(*tar.Writer)
		cut     int // bytes to drop from the end
		want    string
	}{
		{"dotdot path", []func(*tar.Writer){layout, entry("../../etc/cron.d/x", tar.TypeReg, "x")}, 0, "unsafe path"},
		{"absolute path", []func(*tar.Writer){layout, entry("/etc/passwd", tar.TypeReg, "x")}, 0, "absolute"},
		{"symlink out", []func(*tar.Writer){layout, entry("blobs/sha256/aa", tar.TypeSymlink, "")}, 0, "not allowed"},
		{"hardlink out", []func(*tar.Writer){layout, entry("blobs/sha256/aa", tar.TypeLink, "")}, 0, "not allowed"},
		{"device", []func(*tar.Writer){layout, entry("blobs/dev", tar.TypeBlock, "")}, 0, "not allowed"},
		{"foreign file", []func(*tar.Writer){layout, entry("install.sh", tar.TypeReg, "rm -rf /")}, 0, "not part of an OCI layout"},
		{"truncated", []func(*tar.Writer){layout, entry("index.json", tar.TypeReg, strings.Repeat("{}", 600))}, 1500, "truncated"},
		{"two index.json", []func(*tar.Writer){layout, entry("index.json", tar.TypeReg, `{"manifests":[]}`), entry("index.json", tar.TypeReg, `{"manifests":[]}`)}, 0, "appears twice"},
		{"two index.json, one with ./", []func(*tar.Writer){layout, entry("./index.json", tar.TypeReg, `{}`), entry("index.json", tar.TypeReg, `{}`)}, 0, "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range tt.entries {
				e(tw)
			}
			tw.Close()
			b := buf.Bytes()[:buf.Len()-tt.cut]
			path := filepath.Join(t.TempDir(), "stick.tar")
			os.WriteFile(path, b, 0o644)
			addr, _ := bundles.ParseAddress(path)
			src, _, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
			if err == nil {
				src.Close()
				t.Fatal("archive accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

var _ content.Fetcher = (*store.Store)(nil)

// Found in review: a signature manifest may list layers nobody checks (wrong type, no
// signature, huge or missing). Ingest keeps only the signature manifests and the payloads that
// verified, so such layers neither fill the disk nor block a correctly signed bundle.
func TestIngestKeepsOnlyVerifiedSignatureBlobs(t *testing.T) {
	k := newKey(t)
	src := memory.New()
	desc := makeBundle(t, src, "site", 1, "x")
	sign(t, src, desc, k)
	sigDesc, err := src.Resolve(t.Context(), bundles.SignatureTag(desc))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := content.FetchAll(t.Context(), src, sigDesc)
	var man ocispec.Manifest
	json.Unmarshal(raw, &man)
	junk := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromString("never stored"), Size: 5 << 30}
	man.Layers = append(man.Layers, junk)
	b, _ := json.Marshal(man)
	nd := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
	src.Push(t.Context(), nd, bytes.NewReader(b))
	src.Tag(t.Context(), nd, bundles.SignatureTag(desc))

	st := openStore(t, t.TempDir())
	defer st.Close()
	rev, err := Ingest(t.Context(), st, memSource{src}, desc, k.policy, "test")
	if err != nil {
		t.Fatalf("a signed bundle was refused because of an unchecked layer: %v", err)
	}
	for _, b := range rev.Blobs {
		if b.Digest == junk.Digest {
			t.Fatal("an unchecked signature-manifest layer was stored")
		}
	}
}

// TestIngestRefusesBundlesOutsideTheKeyScope: a key scoped to team-a's bundles signs a
// bundle named platform: refused before anything is stored; its own bundle is admitted,
// with the key's scope in the verification record for the engine to enforce.
func TestIngestRefusesBundlesOutsideTheKeyScope(t *testing.T) {
	k := newKey(t)
	k.policy.Keys[0].Scope = &bundles.Scope{Bundles: []string{"team-a-*"}, Namespaces: []string{"team-a"}}
	src := memory.New()
	st := openStore(t, t.TempDir())
	defer st.Close()
	other := makeBundle(t, src, "platform", 1, "x")
	sign(t, src, other, k)
	before := snapshot(t, st, "platform")
	if err := ingestErr(t, st, src, other, k); !errors.Is(err, verify.ErrOutOfScope) || !errors.Is(err, verify.ErrUntrusted) {
		t.Fatalf("want an out-of-scope refusal, got %v", err)
	}
	if after := snapshot(t, st, "platform"); after != before {
		t.Fatalf("the store changed:\n%s\n%s", before, after)
	}
	own := makeBundle(t, src, "team-a-web", 1, "x")
	sign(t, src, own, k)
	rev, err := Ingest(t.Context(), st, memSource{src}, own, k.policy, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rev.Verification), `"namespaces":["team-a"]`) {
		t.Fatalf("the scope is not recorded: %s", rev.Verification)
	}
}

// Hostile layers signed by a trusted key are refused at ingest, before anything is written,
// by the same reader render uses: a symlink entry, a non-UTF-8 name, a path that leaves the
// layer, a duplicate.
func TestIngestRefusesHostileLayersOfASignedBundle(t *testing.T) {
	k := newKey(t)
	gz := func(entries ...*tar.Header) []byte {
		var raw bytes.Buffer
		zw := gzip.NewWriter(&raw)
		tw := tar.NewWriter(zw)
		for _, h := range entries {
			if h.Typeflag == tar.TypeReg {
				h.Size = 2
			}
			tw.WriteHeader(h)
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte("{}"))
			}
		}
		tw.Close()
		zw.Close()
		return raw.Bytes()
	}
	kust := &tar.Header{Name: "kustomization.yaml", Typeflag: tar.TypeReg, Mode: 0o644}
	for name, tc := range map[string]struct {
		layer []byte
		want  string
	}{
		"symlink":   {gz(kust, &tar.Header{Name: "cm.yaml", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}), "not allowed"},
		"non-UTF-8": {gz(kust, &tar.Header{Name: "bad-\xff\xfe.yaml", Typeflag: tar.TypeReg, Mode: 0o644}), "not UTF-8"},
		"dotdot":    {gz(kust, &tar.Header{Name: "../escape.yaml", Typeflag: tar.TypeReg, Mode: 0o644}), "unsafe path"},
		"duplicate": {gz(kust, &tar.Header{Name: "kustomization.yaml", Typeflag: tar.TypeReg, Mode: 0o644}), "duplicate"},
		"not gzip":  {[]byte("plain text, not a layer"), "not gzip"},
	} {
		t.Run(name, func(t *testing.T) {
			src := memory.New()
			m := &bundles.Metadata{SchemaVersion: bundles.SchemaVersion, Name: "hostile", Version: "1.0.1", Revision: 1,
				Created:    time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
				Components: []bundles.Component{{Name: "app", Type: "kustomize", Kustomize: &bundles.KustomizeSpec{Path: "."}}}}
			desc, err := bundles.Pack(t.Context(), src, m, [][]byte{tc.layer})
			if err != nil {
				t.Fatal(err)
			}
			sign(t, src, desc, k)
			st := openStore(t, t.TempDir())
			defer st.Close()
			before := snapshot(t, st, "hostile")
			err = ingestErr(t, st, src, desc, k)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "component app") {
				t.Fatalf("err = %v, want the component named and %q", err, tc.want)
			}
			if name == "non-UTF-8" && strings.Contains(err.Error(), "\xff") {
				t.Errorf("raw non-UTF-8 bytes in the error: %q", err)
			}
			if after := snapshot(t, st, "hostile"); after != before {
				t.Fatalf("the store changed:\n%s\n%s", before, after)
			}
		})
	}
}

// The import's progress counts the bytes copied into the store, of the total the store
// lacked: all of them for a new bundle, none of what it already held for the next.
func TestIngestCountsProgress(t *testing.T) {
	k := newKey(t)
	src := memory.New()
	d1 := makeBundle(t, src, "site", 1, "payload one")
	sign(t, src, d1, k)
	st := openStore(t, t.TempDir())
	defer st.Close()
	p := bundles.NewProgress(io.Discard, "import", 0)
	rev, err := IngestCounted(t.Context(), st, memSource{src}, d1, k.policy, "test", p)
	if err != nil {
		t.Fatal(err)
	}
	var all int64
	for _, b := range rev.Blobs {
		all += b.Size
	}
	if done, total := p.Snapshot(); total != all || done != total {
		t.Fatalf("progress %d of %d, want %d of %d", done, total, all, all)
	}
	// The same layer again in revision 2: only what is new is counted.
	d2 := makeBundle(t, src, "site", 2, "payload one")
	sign(t, src, d2, k)
	p2 := bundles.NewProgress(io.Discard, "import", 0)
	if _, err := IngestCounted(t.Context(), st, memSource{src}, d2, k.policy, "test", p2); err != nil {
		t.Fatal(err)
	}
	if done, total := p2.Snapshot(); total >= all || done != total || total == 0 {
		t.Fatalf("second import: progress %d of %d (first was %d)", done, total, all)
	}
}

// provenanceKey is a key named ci whose scope requires provenance it attested itself, by one
// of builders (any when nil).
func provenanceKey(t *testing.T, builders []string) keyPair {
	k := newKey(t)
	k.policy.Keys[0].Source = "ci"
	k.policy.Keys[0].Scope = &bundles.Scope{Provenance: &bundles.ProvenanceRule{Attestors: []string{"ci"}, Builders: builders}}
	return k
}

// signedForProvenance is bundle web revision 1 signed by k in a fresh source, and an empty
// store, closed when the test ends.
func signedForProvenance(t *testing.T, k keyPair) (*memory.Store, *store.Store, ocispec.Descriptor, *bundles.Bundle) {
	t.Helper()
	src := memory.New()
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	desc := makeBundle(t, src, "web", 1, "x")
	sign(t, src, desc, k)
	b, err := bundles.Open(t.Context(), src, desc)
	if err != nil {
		t.Fatal(err)
	}
	return src, st, desc, b
}

// Each way an attestation can fail a provenance rule is refused at ingest, the rule named,
// the store unchanged: none at all, a predicate altered after signing, one about another
// bundle, one signed by a key the node does not trust, one naming another repository than the
// bundle's config.
func TestIngestRefusesEachBadProvenance(t *testing.T) {
	k, stranger := provenanceKey(t, nil), newKey(t)
	// envelope signs st with key and stores it beside desc; alter changes the payload after.
	envelope := func(t *testing.T, src *memory.Store, desc ocispec.Descriptor, st *bundles.Statement, key crypto.Signer, alter func([]byte) []byte) {
		t.Helper()
		payload, _ := json.Marshal(st)
		sig, err := cosignkey.Sign(key, bundles.PAE(bundles.InTotoPayloadType, payload))
		if err != nil {
			t.Fatal(err)
		}
		if alter != nil {
			payload = alter(payload)
		}
		env, _ := json.Marshal(bundles.Envelope{PayloadType: bundles.InTotoPayloadType, Payload: base64.StdEncoding.EncodeToString(payload),
			Signatures: []bundles.EnvelopeSignature{{Sig: base64.StdEncoding.EncodeToString(sig)}}})
		if _, err := bundles.AppendAttestation(t.Context(), src, desc, env, st.PredicateType); err != nil {
			t.Fatal(err)
		}
	}
	statement := func(t *testing.T, desc ocispec.Descriptor, b *bundles.Bundle) *bundles.Statement {
		st, err := bundler.Provenance(desc, b, bundler.ProvenanceOptions{BuilderID: "https://ci.example.com/release"})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, c := range []struct {
		name, want string
		attach     func(*testing.T, *memory.Store, ocispec.Descriptor, *bundles.Bundle)
	}{
		{"none", "carries no SLSA provenance attestation", func(*testing.T, *memory.Store, ocispec.Descriptor, *bundles.Bundle) {}},
		{"a predicate altered after signing", "signed by no trusted key", func(t *testing.T, src *memory.Store, d ocispec.Descriptor, b *bundles.Bundle) {
			envelope(t, src, d, statement(t, d, b), k.signer, func(p []byte) []byte {
				return bytes.Replace(p, []byte("ci.example.com"), []byte("ci.evil.example"), 1)
			})
		}},
		{"an attestation about another bundle", "its subject is not bundle", func(t *testing.T, src *memory.Store, d ocispec.Descriptor, b *bundles.Bundle) {
			other := makeBundle(t, src, "web", 2, "y")
			envelope(t, src, d, statement(t, other, b), k.signer, nil)
		}},
		{"an attestation by an untrusted key", "signed by no trusted key", func(t *testing.T, src *memory.Store, d ocispec.Descriptor, b *bundles.Bundle) {
			envelope(t, src, d, statement(t, d, b), stranger.signer, nil)
		}},
		{"an attestation naming another repository", "it names https://git.example.com/other.git", func(t *testing.T, src *memory.Store, d ocispec.Descriptor, b *bundles.Bundle) {
			st := statement(t, d, b)
			var p bundles.SLSAProvenance
			json.Unmarshal(st.Predicate, &p)
			p.BuildDefinition.ExternalParameters.Source.Repository = "https://git.example.com/other.git"
			st.Predicate, _ = json.Marshal(p)
			envelope(t, src, d, st, k.signer, nil)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, st, desc, b := signedForProvenance(t, k)
			c.attach(t, src, desc, b)
			before := snapshot(t, st, "web")
			err := ingestErr(t, st, src, desc, k)
			if !errors.Is(err, verify.ErrNoProvenance) || !strings.Contains(err.Error(), "ci requires provenance attested by ci") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want the rule named and %q", err, c.want)
			}
			if after := snapshot(t, st, "web"); after != before {
				t.Fatalf("the store changed:\n%s\n%s", before, after)
			}
		})
	}
}

// A key whose scope requires SLSA provenance admits only with an attestation that meets its
// rule: without one, or with one naming another builder, the bundle is refused before
// anything is written, naming the rule; with it, the provenance is kept with the revision
// and its attestation among the revision's blobs.
func TestIngestRequiresProvenanceWhereTheScopeDoes(t *testing.T) {
	k := provenanceKey(t, []string{"https://ci.example.com/*"})
	src, st, desc, b := signedForProvenance(t, k)
	before := snapshot(t, st, "web")
	if err := ingestErr(t, st, src, desc, k); !errors.Is(err, verify.ErrNoProvenance) || !strings.Contains(err.Error(), "ci requires provenance attested by ci") {
		t.Fatalf("without provenance: %v", err)
	}
	other, err := bundler.Provenance(desc, b, bundler.ProvenanceOptions{BuilderID: "https://laptop.example.com/alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Attest(t.Context(), src, desc, other, k.signer); err != nil {
		t.Fatal(err)
	}
	if err := ingestErr(t, st, src, desc, k); !errors.Is(err, verify.ErrNoProvenance) || !strings.Contains(err.Error(), "builder https://laptop.example.com/alice is not https://ci.example.com/*") {
		t.Fatalf("another builder: %v", err)
	}
	if after := snapshot(t, st, "web"); after != before {
		t.Fatalf("the store changed:\n%s\n%s", before, after)
	}
	good, err := bundler.Provenance(desc, b, bundler.ProvenanceOptions{BuilderID: "https://ci.example.com/release"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Attest(t.Context(), src, desc, good, k.signer); err != nil {
		t.Fatal(err)
	}
	rev, err := Ingest(t.Context(), st, memSource{src}, desc, k.policy, "test")
	if err != nil {
		t.Fatal(err)
	}
	// Every attestation that verified is recorded, the one that met the rule among them.
	rec, err := verify.ParseRecord(rev.Verification)
	if err != nil || len(rec.Provenance) != 2 {
		t.Fatalf("recorded provenance %+v (%v)", rec, err)
	}
	for _, pv := range rec.Provenance {
		kept := false
		for _, blob := range rev.Blobs {
			kept = kept || blob.Digest.String() == pv.Envelope
		}
		if !kept || !st.HasBlob(digest.Digest(pv.Envelope)) {
			t.Fatalf("attestation of %s is not kept with the revision", pv.BuilderID)
		}
	}
}
