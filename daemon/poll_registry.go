package daemon

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// manifestAccept is what the HEAD on a followed tag accepts: the manifest types oras-go's
// Resolve asks for by default (a bundle is an OCI image manifest with an artifactType).
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// resolved is a registry's last answer for a tag: the digest and the ETag it came with.
type resolved struct {
	tag    string
	etag   string
	digest digest.Digest
}

// resolveTag resolves tag in repo with one HEAD, as oras-go's Resolve does, but conditional:
// when last is the answer for the same tag and came with an ETag, the HEAD carries
// If-None-Match with it (RFC 9110 §13.1.2) and a 304 keeps last. distribution answers that 304
// from the tag's link alone, before it reads and parses the manifest (registry/handlers/
// manifests.go, etagMatch), which halves its CPU for an idle poll (docs/BENCHMARKS.md, "A
// fleet polling one mirror"). A registry that sends no ETag gets the plain HEAD every time.
//
// Only the digest is taken from the answer: the candidate is read by that digest later, with
// every check oras-go makes, so a registry that lies here only changes what is verified.
func resolveTag(ctx context.Context, repo *remote.Repository, tag string, last resolved) (resolved, error) {
	ref, err := repo.ParseReference(tag)
	if err != nil {
		return resolved{}, err
	}
	scheme := "https"
	if repo.PlainHTTP {
		scheme = "http"
	}
	url := fmt.Sprintf("%s://%s/v2/%s/manifests/%s", scheme, ref.Host(), ref.Repository, ref.Reference)
	req, err := http.NewRequestWithContext(auth.AppendRepositoryScope(ctx, ref, auth.ActionPull), http.MethodHead, url, nil)
	if err != nil {
		return resolved{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	conditional := last.etag != "" && last.tag == tag
	if conditional {
		req.Header.Set("If-None-Match", last.etag)
	}
	var client remote.Client = http.DefaultClient
	if repo.Client != nil {
		client = repo.Client
	}
	resp, err := client.Do(req)
	if err != nil {
		return resolved{}, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
		if err != nil {
			return resolved{}, fmt.Errorf("HEAD %q: invalid Docker-Content-Digest: %w", url, err)
		}
		return resolved{tag: tag, etag: resp.Header.Get("ETag"), digest: d}, nil
	case http.StatusNotModified:
		if conditional {
			return last, nil
		}
	case http.StatusNotFound:
		return resolved{}, fmt.Errorf("%s: %w", ref, errdef.ErrNotFound)
	}
	return resolved{}, &errcode.ErrorResponse{Method: req.Method, URL: req.URL, StatusCode: resp.StatusCode}
}
