package bundles

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestNormalizeImage(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                       "docker.io/library/nginx:latest",
		"nginx:1.25":                  "docker.io/library/nginx:1.25",
		"bitnami/redis:7":             "docker.io/bitnami/redis:7",
		"ghcr.io/org/app:v1":          "ghcr.io/org/app:v1",
		"localhost/app:1":             "localhost/app:1",
		"127.0.0.1:5000/site/web:1.0": "127.0.0.1:5000/site/web:1.0",
		"registry.local/a/b/c@sha256:" + strings.Repeat("0", 64): "registry.local/a/b/c@sha256:" + strings.Repeat("0", 64),
	} {
		r, err := NormalizeImage(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := r.String(); got != want {
			t.Errorf("NormalizeImage(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := NormalizeImage("UPPER/Case:1"); err == nil {
		t.Error("accepted an invalid repository name")
	}
}

func TestMetadataRefusesBadImages(t *testing.T) {
	m := testMetadata()
	m.Images = []Image{{Name: "web:1", Descriptor: ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), Size: 10}}}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "images[0]") {
		t.Fatalf("err = %v", err)
	}
	m.Images[0].Descriptor.MediaType = ocispec.MediaTypeImageManifest
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
}
