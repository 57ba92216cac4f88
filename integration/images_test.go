package integration

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// pushImage pushes a small OCI image (config + one random layer) to the testbed registry
// and returns its manifest descriptor.
func pushImage(t *testing.T, repo, tag string) ocispec.Descriptor {
	t.Helper()
	ctx := t.Context()
	addr, _ := bundles.ParseAddress("oci://" + tb.Registry + "/" + repo + ":" + tag)
	r, err := bundles.Options{}.Repository(addr)
	if err != nil {
		t.Fatal(err)
	}
	layer := make([]byte, 64<<10)
	rand.Read(layer)
	ld := content.NewDescriptorFromBytes(ocispec.MediaTypeImageLayerGzip, layer)
	if err := r.Push(ctx, ld, bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfg)
	if err := r.Push(ctx, cd, bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	md, err := oras.PackManifest(ctx, r, oras.PackManifestVersion1_1, "", oras.PackManifestOptions{
		ConfigDescriptor: &cd, Layers: []ocispec.Descriptor{ld},
		ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: "2026-01-01T00:00:00Z"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Tag(ctx, md, tag); err != nil {
		t.Fatal(err)
	}
	return md
}

// TestBundleCarriesImages: images the components run (and extra ones) are resolved to digests
// at build time, travel in the bundle to a stick, and are admitted into a node's store.
func TestBundleCarriesImages(t *testing.T) {
	ctx := t.Context()
	web := pushImage(t, "apps/web", "1.0")
	tool := pushImage(t, "tools/busybox", "1.36")
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: shop}\nspec:\n  version: 1.0.0\n" +
			"  images:\n    carry: true\n    include: [" + tb.Registry + "/tools/busybox:1.36]\n" +
			"  components:\n  - name: web\n    kustomize: {path: ./web}\n",
		"web/kustomization.yaml": "resources: [deploy.yaml]\n",
		"web/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n" +
			"    spec: {containers: [{name: web, image: " + tb.Registry + "/apps/web:1.0}]}\n",
	}, time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))

	built := memory.New()
	res, err := bundler.Build(ctx, built, bundler.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, im := range res.Metadata.Images {
		got[im.Name] = im.Descriptor.Digest.String()
	}
	if got[tb.Registry+"/apps/web:1.0"] != web.Digest.String() || got[tb.Registry+"/tools/busybox:1.36"] != tool.Digest.String() || len(got) != 2 {
		t.Fatalf("carried images %v", got)
	}

	// Sign, put on a stick, and admit on a node: the image blobs arrive in the store.
	privPEM, pubPEM, _ := bundler.GenerateKeyPair(nil)
	keyDir := t.TempDir()
	writeFile(t, filepath.Join(keyDir, "k.key"), privPEM)
	signer, err := bundler.LoadPrivateKey(filepath.Join(keyDir, "k.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(ctx, built, res.Descriptor, signer, "shop"); err != nil {
		t.Fatal(err)
	}
	stick := filepath.Join(t.TempDir(), "shop.tar")
	dst, _ := bundles.ParseAddress(stick)
	if _, err := bundles.Copy(ctx, memSrc{built}, res.Descriptor, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	src, desc, err := bundles.OpenSource(ctx, dst, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// What ferry bundle verify reads: every blob, the image layers included.
	opened, err := bundles.Open(ctx, src, desc)
	if err != nil {
		t.Fatal(err)
	}
	if err := opened.Check(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := damagedImageLayerRefused(t, stick, web); err != nil {
		t.Fatal(err)
	}
	pub, _ := verify.ParsePublicKey("k.pub", pubPEM)
	st, err := store.Open(filepath.Join(t.TempDir(), "state"), store.Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = daemon.Ingest(ctx, st, src, desc, verify.Policy{Keys: []verify.Key{pub}}, stick)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []ocispec.Descriptor{web, tool} {
		blobs, err := bundles.ImageBlobs(ctx, st, im)
		if err != nil {
			t.Fatalf("image %s not whole in the node's store: %v", im.Digest, err)
		}
		for _, b := range blobs {
			if !st.HasBlob(b.Digest) {
				t.Fatalf("blob %s of image %s missing", b.Digest, im.Digest)
			}
		}
	}
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestBundleRefusesAnImageItCannotResolve(t *testing.T) {
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml":             "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: shop}\nspec:\n  version: 1.0.0\n  images: {include: [" + tb.Registry + "/missing/image:9.9]}\n  components:\n  - name: web\n    kustomize: {path: ./web}\n",
		"web/kustomization.yaml": "resources: []\n",
	}, time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	_, err := bundler.Build(t.Context(), memory.New(), bundler.Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "missing/image:9.9") {
		t.Fatalf("err = %v, want the unresolvable image named", err)
	}
}

type memSrc struct{ *memory.Store }

func (memSrc) Close() error { return nil }

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// With an image mirror, the images of a registry CI cannot reach are resolved and copied from
// the mirror; the bundle keeps the names the manifests use and the digests the mirror served.
func TestBundleCarriesImagesFromMirror(t *testing.T) {
	web := pushImage(t, "mirrored/web", "2.0")
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: shop}\nspec:\n  version: 1.0.0\n  images: {carry: true}\n" +
			"  components:\n  - name: web\n    kustomize: {path: ./web}\n",
		"web/kustomization.yaml": "resources: [deploy.yaml]\n",
		"web/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n" +
			"    spec: {containers: [{name: web, image: registry.ferry.invalid/mirrored/web:2.0}]}\n",
	}, time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	if _, err := bundler.Build(t.Context(), memory.New(), bundler.Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "registry.ferry.invalid/mirrored/web:2.0") {
		t.Fatalf("without a mirror: %v", err)
	}
	built := memory.New()
	res, err := bundler.Build(t.Context(), built, bundler.Options{Dir: dir, ImageMirrors: map[string]string{"registry.ferry.invalid": tb.Registry}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Metadata.Images) != 1 || res.Metadata.Images[0].Name != "registry.ferry.invalid/mirrored/web:2.0" || res.Metadata.Images[0].Descriptor.Digest != web.Digest {
		t.Fatalf("carried %+v, want registry.ferry.invalid/mirrored/web:2.0 at %s", res.Metadata.Images, web.Digest)
	}
	if _, err := bundles.ImageBlobs(t.Context(), built, web); err != nil {
		t.Fatalf("the image is not whole in the bundle: %v", err)
	}
}

// damagedImageLayerRefused flips a byte of the image's layer inside a copy of the tar and
// checks that the bundle's Check refuses the copy, naming the layer.
func damagedImageLayerRefused(t *testing.T, tarPath string, im ocispec.Descriptor) error {
	t.Helper()
	ctx := t.Context()
	graph, err := bundles.ImageBlobs(ctx, mustSource(t, tarPath), im)
	if err != nil {
		return err
	}
	var layer ocispec.Descriptor
	for _, d := range graph {
		if d.MediaType == ocispec.MediaTypeImageLayerGzip {
			layer = d
		}
	}
	b, err := os.ReadFile(tarPath)
	if err != nil {
		return err
	}
	orig, err := mustSource(t, tarPath).Fetch(ctx, layer)
	if err != nil {
		return err
	}
	head := make([]byte, 64)
	io.ReadFull(orig, head)
	orig.Close()
	i := bytes.Index(b, head)
	if i < 0 {
		return errors.New("layer not found in the tar")
	}
	b[i+10] ^= 0xff
	damaged := filepath.Join(t.TempDir(), "damaged.tar")
	if err := os.WriteFile(damaged, b, 0o644); err != nil {
		return err
	}
	src := mustSource(t, damaged)
	_, desc, err := bundles.OpenSource(ctx, mustAddr(damaged), bundles.Options{})
	if err != nil {
		return err
	}
	opened, err := bundles.Open(ctx, src, desc)
	if err != nil {
		return err
	}
	if err := opened.Check(ctx, src); err == nil || !strings.Contains(err.Error(), layer.Digest.String()) {
		return fmt.Errorf("a damaged image layer: Check returned %v", err)
	}
	return nil
}

func mustAddr(p string) bundles.Address {
	a, err := bundles.ParseAddress(p)
	if err != nil {
		panic(err)
	}
	return a
}

func mustSource(t *testing.T, p string) bundles.Source {
	t.Helper()
	src, _, err := bundles.OpenSource(t.Context(), mustAddr(p), bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}
