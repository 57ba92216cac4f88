package integration

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/verify"
)

// sourceTree writes a committed Git tree with ferry.yaml and two components.
func sourceTree(t *testing.T, extra map[string]string) string {
	t.Helper()
	files := map[string]string{
		"ferry.yaml": `apiVersion: ferry.dev/v1
kind: Bundle
metadata:
  name: edge-apps
spec:
  version: 1.4.0
  components:
    - name: infra
      kustomize:
        path: ./infra
    - name: web
      kustomize:
        path: ./apps/web
        prune: true
        dependsOn: [{name: infra}]
`,
		"infra/kustomization.yaml":    "resources: [ns.yaml]\n",
		"infra/ns.yaml":               "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n",
		"apps/web/kustomization.yaml": "resources: [deploy.yaml]\n",
		"apps/web/deploy.yaml":        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: web}\n",
	}
	for k, v := range extra {
		files[k] = v
	}
	dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC))
	return dir
}

// buildLayout builds the tree into a fresh OCI layout directory and returns its address.
func buildLayout(t *testing.T, dir string) (bundles.Address, *bundler.Result) {
	t.Helper()
	out := t.TempDir()
	store, err := oci.New(out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := bundler.Build(t.Context(), store, bundler.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := bundles.ParseAddress(out)
	if err != nil {
		t.Fatal(err)
	}
	return addr, res
}

func s3Options() bundles.Options {
	return bundles.Options{S3Endpoint: tb.S3.URL, S3Region: tb.S3.Region, S3AccessKey: tb.S3.AccessKey, S3SecretKey: tb.S3.SecretKey}
}

// TestBundleRoundTrips builds and signs a bundle, then copies it layout → registry → tar →
// S3 → layout, and at every place checks that the digest is the same and that the signature
// came along and verifies; at the end the bundle opens and reads.
func TestBundleRoundTrips(t *testing.T) {
	ctx := t.Context()
	o := s3Options()
	layout, res := buildLayout(t, sourceTree(t, nil))
	privPEM, pubPEM, err := bundler.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ci.key")
	os.WriteFile(keyFile, privPEM, 0o600)
	signer, err := bundler.LoadPrivateKey(keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	target, desc0, err := bundles.OpenTarget(ctx, layout, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(ctx, target, desc0, signer, "edge-apps"); err != nil {
		t.Fatal(err)
	}
	pub, err := verify.ParsePublicKey("ci.pub", pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	policy := verify.Policy{Keys: []verify.Key{pub}}
	hops := []string{
		"oci://" + tb.Registry + "/site/edge-apps:1.4.0",
		filepath.Join(t.TempDir(), "usb", "edge-apps.tar"),
		"s3://" + tb.S3.Bucket + "/site",
		filepath.Join(t.TempDir(), "edge") + ":1.4.0",
	}
	if err := os.MkdirAll(filepath.Dir(hops[1]), 0o755); err != nil {
		t.Fatal(err)
	}
	from := layout
	for _, hop := range hops {
		dst, err := bundles.ParseAddress(hop)
		if err != nil {
			t.Fatal(err)
		}
		src, desc, err := bundles.OpenSource(ctx, from, o)
		if err != nil {
			t.Fatalf("open %s: %v", from, err)
		}
		where, err := bundles.Copy(ctx, src, desc, dst, o)
		src.Close()
		if err != nil {
			t.Fatalf("copy %s -> %s: %v", from, hop, err)
		}
		if desc.Digest != res.Descriptor.Digest {
			t.Fatalf("at %s the digest is %s, built %s", from, desc.Digest, res.Descriptor.Digest)
		}
		if dst.Kind == bundles.KindS3 {
			if where != "s3://"+tb.S3.Bucket+"/site/edge-apps-1.4.0.tar" {
				t.Fatalf("uploaded to %s", where)
			}
			hop = where
		}
		if from, err = bundles.ParseAddress(hop); err != nil {
			t.Fatal(err)
		}
		there, d, err := bundles.OpenSource(ctx, from, o)
		if err != nil {
			t.Fatalf("open %s: %v", hop, err)
		}
		_, err = verify.Bundle(ctx, there, d, policy)
		there.Close()
		if err != nil {
			t.Fatalf("at %s: %v", hop, err)
		}
	}
	files := layerFiles(t, from, o, 1)
	if f, ok := files.Get("deploy.yaml"); !ok || !strings.Contains(string(f.Data), "kind: Deployment") {
		t.Fatalf("web layer after four hops: %+v", files)
	}
}

// TestOrasReadsFerryBundles: any OCI tool can read what Ferry pushed.
func TestOrasReadsFerryBundles(t *testing.T) {
	ctx := t.Context()
	layout, res := buildLayout(t, sourceTree(t, nil))
	ref := tb.Registry + "/interop/edge-apps:1.4.0"
	dst, _ := bundles.ParseAddress("oci://" + ref)
	src, desc, err := bundles.OpenSource(ctx, layout, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := bundles.Copy(ctx, src, desc, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, tb.Bin("oras"), "manifest", "fetch", "--plain-http", ref).Output()
	if err != nil {
		t.Fatalf("oras manifest fetch: %v", err)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(out, &man); err != nil {
		t.Fatal(err)
	}
	if man.ArtifactType != bundles.ArtifactType || len(man.Layers) != 4 || man.Annotations[bundles.AnnotationVersion] != "1.4.0" {
		t.Fatalf("oras sees %+v", man)
	}
	pulled := t.TempDir()
	cmd := exec.CommandContext(ctx, tb.Bin("oras"), "pull", "--plain-http", "-o", pulled, ref)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("oras pull: %v\n%s", err, b)
	}
	// oras pull names each layer by its title annotation: the component name.
	layer, err := os.ReadFile(filepath.Join(pulled, "web"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := bundles.ReadLayer(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := files.Get("deploy.yaml"); !ok {
		t.Fatalf("layer pulled by oras: %+v", files)
	}
	// The rendered layer is its own file, the component's build output, gzip-compressed.
	gz, err := os.ReadFile(filepath.Join(pulled, bundles.RenderedTitle("web")))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	y, err := io.ReadAll(zr)
	if err != nil || !strings.Contains(string(y), "kind: Deployment") {
		t.Fatalf("rendered layer pulled by oras: %v\n%s", err, y)
	}
	_ = res
}

// TestS3CredentialsFromAFile: the CLI uploads to and verifies from S3 with credentials from an
// AWS shared credentials file (a flag), and is refused with wrong ones.
func TestS3CredentialsFromAFile(t *testing.T) {
	ctx := t.Context()
	layout, res := buildLayout(t, sourceTree(t, nil))
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("[default]\naws_access_key_id = "+tb.S3.AccessKey+"\naws_secret_access_key = "+tb.S3.SecretKey+"\n"), 0o600)
	os.WriteFile(bad, []byte("[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n"), 0o600)
	dst, _ := bundles.ParseAddress("s3://" + tb.S3.Bucket + "/creds-test")
	for _, tt := range []struct {
		file string
		ok   bool
	}{{bad, false}, {good, true}} {
		o := bundles.Options{S3Endpoint: tb.S3.URL, S3Region: tb.S3.Region, S3CredentialsFile: tt.file}
		src, desc, err := bundles.OpenSource(ctx, layout, o)
		if err != nil {
			t.Fatal(err)
		}
		where, err := bundles.Copy(ctx, src, desc, dst, o)
		src.Close()
		if tt.ok != (err == nil) {
			t.Fatalf("credentials %s: err = %v", filepath.Base(tt.file), err)
		}
		if tt.ok {
			back, _ := bundles.ParseAddress(where)
			s, d, err := bundles.OpenSource(ctx, back, o)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if d.Digest != res.Descriptor.Digest {
				t.Fatalf("read back %s, uploaded %s", d.Digest, res.Descriptor.Digest)
			}
		}
	}
}

// layerFiles opens the bundle at addr and reads component i's layer, every step checked.
func layerFiles(t *testing.T, addr bundles.Address, o bundles.Options, i int) bundles.Files {
	t.Helper()
	src, desc, err := bundles.OpenSource(t.Context(), addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	b, err := bundles.Open(t.Context(), src, desc)
	if err != nil {
		t.Fatal(err)
	}
	files, err := b.Layer(t.Context(), src, i)
	if err != nil {
		t.Fatal(err)
	}
	return files
}
