package bundles

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
)

// Kind says where a bundle lives (SPEC §7).
type Kind int

const (
	// KindRegistry is oci://host/repo:tag or oci://host/repo@sha256:….
	KindRegistry Kind = iota + 1
	// KindLayout is an OCI image layout directory.
	KindLayout
	// KindTar is an OCI image layout in a tar file.
	KindTar
	// KindS3 is s3://bucket/key.tar, or s3://bucket/prefix as a destination.
	KindS3
)

func (k Kind) String() string {
	return [...]string{"", "registry", "layout", "tar", "s3"}[k]
}

// Address is a parsed bundle address.
type Address struct {
	Kind Kind
	Raw  string
	// Registry: the repository reference; its Reference part is the tag or digest ("" none).
	Ref registry.Reference
	// Layout and tar: the path.
	Path string
	// Reference is the tag or digest the address names ("" none), for every kind but S3.
	Reference string
	// S3: bucket and key (a key ending in .tar names an object, otherwise it is a prefix).
	Bucket, Key string
}

// ParseAddress parses one of the address forms of SPEC §7.
func ParseAddress(s string) (Address, error) {
	a := Address{Raw: s}
	switch {
	case s == "":
		return a, fmt.Errorf("empty bundle address")
	case strings.HasPrefix(s, "oci://"):
		ref, err := registry.ParseReference(strings.TrimPrefix(s, "oci://"))
		if err != nil {
			return a, fmt.Errorf("address %q: %w", s, err)
		}
		a.Kind, a.Ref, a.Reference = KindRegistry, ref, ref.Reference
	case strings.HasPrefix(s, "s3://"):
		rest := strings.TrimPrefix(s, "s3://")
		bucket, key, _ := strings.Cut(rest, "/")
		if bucket == "" || strings.Contains(key, "..") || strings.HasPrefix(key, "/") {
			return a, fmt.Errorf("address %q: want s3://bucket[/prefix or /key.tar]", s)
		}
		a.Kind, a.Bucket, a.Key = KindS3, bucket, strings.TrimSuffix(key, "/")
	case strings.Contains(s, "://"):
		return a, fmt.Errorf("address %q: unknown scheme (want oci://, s3://, a .tar file or a directory)", s)
	default:
		a.Path = s
		// A path that exists as given is the whole address; otherwise a trailing @digest or
		// :tag after the last path element selects a manifest inside it.
		if _, err := os.Stat(s); err != nil {
			base := filepath.Base(s)
			if i := strings.LastIndex(base, "@"); i > 0 {
				a.Path, a.Reference = s[:len(s)-len(base)+i], base[i+1:]
				if _, err := digest.Parse(a.Reference); err != nil {
					return a, fmt.Errorf("address %q: %q is not a digest", s, a.Reference)
				}
			} else if i := strings.LastIndex(base, ":"); i > 0 {
				a.Path, a.Reference = s[:len(s)-len(base)+i], base[i+1:]
			}
		}
		a.Kind = KindLayout
		if strings.HasSuffix(a.Path, ".tar") {
			a.Kind = KindTar
		}
	}
	return a, nil
}

func (a Address) String() string { return a.Raw }
