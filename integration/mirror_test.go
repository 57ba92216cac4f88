package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/verify"
)

// TestMirrorBetweenEveryKindOfPlace: a bundle carrying an image, signed by ferry and by the
// real cosign (a signature and an attestation under cosign's tag scheme), goes registry →
// stick → site registry → S3 prefix (--all) → layout (--all). At the end cosign, oras and
// skopeo read the site registry's copy as the original, ferry verifies the layout's, and a
// second mirror sends nothing.
func TestMirrorBetweenEveryKindOfPlace(t *testing.T) {
	ctx := t.Context()
	work := t.TempDir()
	web := pushImage(t, "mirror/apps/web", "1.0")
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: shop}\nspec:\n  version: 1.0.0\n  images: {carry: true}\n" +
			"  components:\n  - name: web\n    kustomize: {path: ./web}\n",
		"web/kustomization.yaml": "resources: [deploy.yaml]\n",
		"web/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n" +
			"    spec: {containers: [{name: web, image: " + tb.Registry + "/mirror/apps/web:1.0}]}\n",
	}, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC))
	built := memory.New()
	res, err := bundler.Build(ctx, built, bundler.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	hq := "oci://" + tb.Registry + "/mirror/hq:1.0.0"
	hqAddr, _ := bundles.ParseAddress(hq)
	if _, err := bundles.Copy(ctx, memSrc{built}, res.Descriptor, hqAddr, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	// Signed by the real cosign, with an attestation beside the signature.
	if out, err := cosign(t, work, "generate-key-pair", "--output-key-prefix", filepath.Join(work, "ci")); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	pub := filepath.Join(work, "ci.pub")
	digestRef := tb.Registry + "/mirror/hq@" + res.Descriptor.Digest.String()
	if out, err := cosign(t, work, "sign", "--key", filepath.Join(work, "ci.key"), "--tlog-upload=false", "--allow-http-registry", "--yes", digestRef); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	predicate := filepath.Join(work, "predicate.json")
	writeFile(t, predicate, []byte(`{"checked":"mirror"}`))
	if out, err := cosign(t, work, "attest", "--key", filepath.Join(work, "ci.key"), "--type", "custom", "--predicate", predicate,
		"--tlog-upload=false", "--allow-http-registry", "--yes", digestRef); err != nil {
		t.Fatalf("cosign attest: %v\n%s", err, out)
	}
	// Not every tag of a repository is a bundle: an image beside it is left alone.
	pushImage(t, "mirror/hq", "not-a-bundle")

	stick := filepath.Join(work, "stick", "shop.tar")
	os.MkdirAll(filepath.Dir(stick), 0o755)
	site := "oci://" + tb.Registry + "/mirror/site"
	s3 := "s3://" + tb.S3.Bucket + "/mirror"
	layout := filepath.Join(work, "layout")
	o := s3Options()
	o.StagingDir = filepath.Join(work, "staging")
	hops := []struct {
		from, to string
		all      bool
	}{
		{hq, stick, false},
		{stick, site, false},
		{site, s3, true},
		{s3, layout, true},
	}
	for _, h := range hops {
		from, _ := bundles.ParseAddress(h.from)
		to, _ := bundles.ParseAddress(h.to)
		got, err := bundles.Mirror(ctx, from, to, o, bundles.MirrorOptions{All: h.all})
		if err != nil {
			t.Fatalf("mirror %s → %s: %v", h.from, h.to, err)
		}
		if len(got.Placed) != 1 || got.Placed[0].Digest != res.Descriptor.Digest.String() || got.Placed[0].Tag != "1.0.0" {
			t.Fatalf("mirror %s → %s placed %+v", h.from, h.to, got.Placed)
		}
		if h.from == site && len(got.Skipped) != 0 {
			t.Fatalf("site holds only the bundle, skipped %v", got.Skipped)
		}
	}
	// --all over the headquarters' repository skips the image tag and says so.
	hqRepo, _ := bundles.ParseAddress("oci://" + tb.Registry + "/mirror/hq")
	all, err := bundles.Mirror(ctx, hqRepo, mustAddress(t, filepath.Join(work, "all.tar")), o, bundles.MirrorOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Placed) != 1 || !slices.ContainsFunc(all.Skipped, func(s string) bool { return strings.HasSuffix(s, ":not-a-bundle") }) {
		t.Fatalf("--all placed %+v, skipped %v", all.Placed, all.Skipped)
	}

	// The site registry's copy, read by the real tools.
	siteRef := tb.Registry + "/mirror/site:1.0.0"
	if out, err := cosign(t, work, "verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-http-registry", siteRef); err != nil {
		t.Fatalf("cosign verify of the mirrored bundle: %v\n%s", err, out)
	}
	if out, err := cosign(t, work, "verify-attestation", "--key", pub, "--type", "custom", "--insecure-ignore-tlog=true", "--allow-http-registry", siteRef); err != nil {
		t.Fatalf("cosign verify-attestation of the mirrored bundle: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, tb.Bin("oras"), "resolve", "--plain-http", siteRef).Output()
	if err != nil || strings.TrimSpace(string(out)) != res.Descriptor.Digest.String() {
		t.Fatalf("oras resolve: %q, %v", out, err)
	}
	raw, err := exec.CommandContext(ctx, "skopeo", "inspect", "--raw", "--tls-verify=false",
		"docker://"+tb.Registry+"/mirror/site@"+web.Digest.String()).Output()
	if err != nil {
		t.Fatalf("skopeo inspect of the carried image: %v", err)
	}
	var m struct{ Layers []json.RawMessage }
	if json.Unmarshal(raw, &m) != nil || len(m.Layers) != 1 {
		t.Fatalf("skopeo reads %s", raw)
	}

	// The layout at the end of the chain verifies as the original: signatures, every blob.
	pubPEM, _ := os.ReadFile(pub)
	key, err := verify.ParsePublicKey("ci.pub", pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	src, desc, err := bundles.OpenSource(ctx, mustAddress(t, layout), bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := verify.Bundle(ctx, src, desc, verify.Policy{Keys: []verify.Key{key}}); err != nil {
		t.Fatalf("the mirrored layout does not verify: %v", err)
	}
	b, err := bundles.Open(ctx, src, desc)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx, src); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Resolve(ctx, bundles.AttestationTag(desc)); err != nil {
		t.Fatalf("the attestation did not travel: %v", err)
	}

	// Mirroring again sends nothing: the destination has every blob.
	again, err := bundles.Mirror(ctx, mustAddress(t, stick), mustAddress(t, site), o, bundles.MirrorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Placed[0].Bytes != 0 {
		t.Fatalf("a second mirror sent %d bytes", again.Placed[0].Bytes)
	}
}

func mustAddress(t *testing.T, s string) bundles.Address {
	t.Helper()
	a, err := bundles.ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
