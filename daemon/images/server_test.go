package images

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

// image is a test image pushed to a memory store: a manifest, its config and layers.
type image struct {
	manifest ocispec.Descriptor
	config   ocispec.Descriptor
	layers   []ocispec.Descriptor
}

func push(t *testing.T, mem *memory.Store, mediaType string, b []byte) ocispec.Descriptor {
	t.Helper()
	d := content.NewDescriptorFromBytes(mediaType, b)
	if err := mem.Push(t.Context(), d, bytes.NewReader(b)); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	return d
}

// makeImage pushes an image with random layers of the given sizes for one platform.
func makeImage(t *testing.T, mem *memory.Store, arch string, sizes ...int) image {
	t.Helper()
	var im image
	for _, n := range sizes {
		b := make([]byte, n)
		rand.Read(b)
		im.layers = append(im.layers, push(t, mem, ocispec.MediaTypeImageLayerGzip, b))
	}
	im.config = push(t, mem, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"`+arch+`","os":"linux"}`))
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: im.config, Layers: im.layers}
	man.SchemaVersion = 2
	b, _ := json.Marshal(man)
	im.manifest = push(t, mem, ocispec.MediaTypeImageManifest, b)
	return im
}

// makeIndex pushes an index over images.
func makeIndex(t *testing.T, mem *memory.Store, ims ...image) ocispec.Descriptor {
	t.Helper()
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for i, im := range ims {
		d := im.manifest
		d.Platform = &ocispec.Platform{OS: "linux", Architecture: []string{"amd64", "arm64"}[i%2]}
		idx.Manifests = append(idx.Manifests, d)
	}
	b, _ := json.Marshal(idx)
	return push(t, mem, ocispec.MediaTypeImageIndex, b)
}

// admit packs a bundle carrying imgs (name → root descriptor) into mem and admits it.
func admit(t *testing.T, st *store.Store, mem *memory.Store, name string, rev uint64, imgs map[string]ocispec.Descriptor) {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources: []\n"), 0o644)
	var layer bytes.Buffer
	if err := bundles.PackDir(dir, &layer); err != nil {
		t.Fatal(err)
	}
	m := &bundles.Metadata{SchemaVersion: bundles.SchemaVersion, Name: name, Version: fmt.Sprintf("1.0.%d", rev), Revision: rev,
		Created:    time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		Components: []bundles.Component{{Name: "app", Type: bundles.TypeKustomize, Kustomize: &bundles.KustomizeSpec{Path: "."}}}}
	var blobs []ocispec.Descriptor
	for n, d := range imgs {
		m.Images = append(m.Images, bundles.Image{Name: n, Descriptor: d})
		g, err := bundles.ImageBlobs(ctx, mem, d)
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, g...)
	}
	desc, err := bundles.Pack(ctx, mem, m, [][]byte{layer.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(ctx, mem, desc)
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, b.Manifest.Config)
	blobs = append(blobs, b.Manifest.Layers...)
	if _, err := st.Admit(ctx, mem, store.Admission{Name: name, Revision: rev, Version: m.Version, Manifest: desc, Blobs: blobs, Source: "test"}); err != nil {
		t.Fatal(err)
	}
}

// healthy records rev as rolled out and healthy, as the engine does.
func healthy(t *testing.T, st *store.Store, name string, rev uint64) {
	t.Helper()
	if err := st.Begin(name, rev, time.Now().Add(time.Hour), "test"); err != nil {
		t.Fatal(err)
	}
	if err := st.SetState(name, rev, store.StateHealthy, "test"); err != nil {
		t.Fatal(err)
	}
}

type fixture struct {
	st      *store.Store
	mem     *memory.Store
	srv     *httptest.Server
	host    string // 127.0.0.1:port
	web     image  // docker.io/library/web:1.0 in revision 1
	web2    image  // docker.io/library/web:1.0 in revision 2
	multi   ocispec.Descriptor
	multiIm []image
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, mem: memory.New()}
	f.web = makeImage(t, f.mem, "amd64", 4096, 70000)
	f.web2 = makeImage(t, f.mem, "amd64", 5000)
	f.multiIm = []image{makeImage(t, f.mem, "amd64", 3000), makeImage(t, f.mem, "arm64", 3001)}
	f.multi = makeIndex(t, f.mem, f.multiIm...)
	admit(t, st, f.mem, "shop", 1, map[string]ocispec.Descriptor{"web:1.0": f.web.manifest, "ghcr.io/org/app:2": f.multi})
	healthy(t, st, "shop", 1)
	f.srv = httptest.NewServer(NewServer(st, nil))
	t.Cleanup(f.srv.Close)
	f.host = strings.TrimPrefix(f.srv.URL, "http://")
	return f
}

func (f *fixture) get(t *testing.T, method, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (f *fixture) blob(t *testing.T, d ocispec.Descriptor) []byte {
	t.Helper()
	rc, err := f.mem.Fetch(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return b
}

// errorCode reads the distribution spec's error body.
func errorCode(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(b, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("error body %q is not the distribution spec's", b)
	}
	return e.Errors[0].Code
}

func TestManifestsByTagAndDigest(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{
		"/v2/library/web/manifests/1.0?ns=docker.io", // as containerd asks a mirror
		"/v2/docker.io/library/web/manifests/1.0",    // host as the first element
		"/v2/library/web/manifests/" + f.web.manifest.Digest.String() + "?ns=docker.io",
	} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, body := f.get(t, method, path)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != ocispec.MediaTypeImageManifest {
				t.Errorf("%s %s: Content-Type %q", method, path, ct)
			}
			if dg := resp.Header.Get("Docker-Content-Digest"); dg != f.web.manifest.Digest.String() {
				t.Errorf("%s %s: Docker-Content-Digest %q", method, path, dg)
			}
			if cl := resp.Header.Get("Content-Length"); cl != fmt.Sprint(f.web.manifest.Size) {
				t.Errorf("%s %s: Content-Length %q, want %d", method, path, cl, f.web.manifest.Size)
			}
			if method == "GET" && !bytes.Equal(body, f.blob(t, f.web.manifest)) {
				t.Errorf("%s: body is not the stored manifest", path)
			}
			if method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD %s: a body of %d bytes", path, len(body))
			}
		}
	}
	// The multi-arch index by tag, and a child manifest by digest, with their media types.
	resp, _ := f.get(t, "GET", "/v2/org/app/manifests/2?ns=ghcr.io")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Fatalf("index by tag: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, _ = f.get(t, "GET", "/v2/org/app/manifests/"+f.multiIm[1].manifest.Digest.String()+"?ns=ghcr.io")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest {
		t.Fatalf("child manifest: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestBlobsWithRange(t *testing.T) {
	f := newFixture(t)
	l := f.web.layers[1]
	want := f.blob(t, l)
	path := "/v2/library/web/blobs/" + l.Digest.String() + "?ns=docker.io"
	resp, body := f.get(t, "GET", path)
	if resp.StatusCode != 200 || !bytes.Equal(body, want) || resp.Header.Get("Docker-Content-Digest") != l.Digest.String() {
		t.Fatalf("GET blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = f.get(t, "HEAD", path)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != fmt.Sprint(l.Size) || len(body) != 0 {
		t.Fatalf("HEAD blob: %d, Content-Length %q", resp.StatusCode, resp.Header.Get("Content-Length"))
	}
	resp, body = f.get(t, "GET", path, "Range", "bytes=100-199")
	if resp.StatusCode != 206 || !bytes.Equal(body, want[100:200]) {
		t.Fatalf("Range: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = f.get(t, "GET", path, "Range", "bytes=69000-")
	if resp.StatusCode != 206 || !bytes.Equal(body, want[69000:]) {
		t.Fatalf("open Range: %d, %d bytes", resp.StatusCode, len(body))
	}
	for _, huge := range []string{"bytes=99999999999999999999-", "bytes=70000-80000", "bytes=-99999999999999999999999", "bytes=0-1,2-3,4-5,6-7,8-9,10-11,12-13,14-15,16-17,18-19,20-21,22-23,24-25,26-27,28-29,30-31,32-33"} {
		resp, body = f.get(t, "GET", path, "Range", huge)
		if resp.StatusCode == 200 && !bytes.Equal(body, want) || resp.StatusCode == 206 && len(body) > len(want)*2 {
			t.Errorf("Range %s: %d, %d bytes", huge, resp.StatusCode, len(body))
		}
		if resp.StatusCode != 416 && resp.StatusCode != 206 && resp.StatusCode != 200 {
			t.Errorf("Range %s: status %d", huge, resp.StatusCode)
		}
	}
	resp, _ = f.get(t, "GET", "/v2/docker.io/library/web/blobs/"+l.Digest.String(), "If-None-Match", `"`+l.Digest.String()+`"`)
	if resp.StatusCode != 304 {
		t.Errorf("If-None-Match with the digest: %d, want 304", resp.StatusCode)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	// A bundle's own config blob is in the store but is not part of any image graph.
	bs, _ := f.st.Revisions("shop")
	bun, err := bundles.Open(t.Context(), f.st, bs[0].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	other := f.multiIm[0].layers[0] // a blob of another repository
	missing := digest.FromString("nothing")
	cases := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown tag", "GET", "/v2/library/web/manifests/2.0?ns=docker.io", 404, "MANIFEST_UNKNOWN"},
		{"unknown repository", "GET", "/v2/library/db/manifests/1.0?ns=docker.io", 404, "NAME_UNKNOWN"},
		{"missing manifest digest", "GET", "/v2/library/web/manifests/" + missing.String() + "?ns=docker.io", 404, "MANIFEST_UNKNOWN"},
		{"missing blob", "GET", "/v2/library/web/blobs/" + missing.String() + "?ns=docker.io", 404, "BLOB_UNKNOWN"},
		{"bundle config is not served", "GET", "/v2/library/web/blobs/" + bun.Manifest.Config.Digest.String() + "?ns=docker.io", 404, "BLOB_UNKNOWN"},
		{"bundle manifest is not served", "GET", "/v2/library/web/manifests/" + bs[0].Manifest.Digest.String() + "?ns=docker.io", 404, "MANIFEST_UNKNOWN"},
		{"another repository's blob", "GET", "/v2/library/web/blobs/" + other.Digest.String() + "?ns=docker.io", 404, "BLOB_UNKNOWN"},
		{"bad digest", "GET", "/v2/library/web/blobs/sha256:xyz?ns=docker.io", 400, "DIGEST_INVALID"},
		{"bad tag", "GET", "/v2/library/web/manifests/-x?ns=docker.io", 400, "TAG_INVALID"},
		{"traversal", "GET", "/v2/../library/web/manifests/1.0?ns=docker.io", 400, "NAME_INVALID"},
		{"traversal in name", "GET", "/v2/library/../web/manifests/1.0?ns=docker.io", 400, "NAME_INVALID"},
		{"dot component", "GET", "/v2/docker.io/./library/web/manifests/1.0", 400, "NAME_INVALID"},
		{"encoded traversal", "GET", "/v2/library/%2e%2e/web/manifests/1.0?ns=docker.io", 400, "NAME_INVALID"},
		{"no host, path held nowhere", "GET", "/v2/library/db/manifests/1.0", 404, "NAME_UNKNOWN"},
		{"bad ns", "GET", "/v2/library/web/manifests/1.0?ns=docker.io/../x", 400, "NAME_INVALID"},
		{"upper case", "GET", "/v2/docker.io/Library/web/manifests/1.0", 400, "NAME_INVALID"},
		{"long name", "GET", "/v2/docker.io/" + strings.Repeat("a/", 200) + "web/manifests/1.0", 400, "NAME_INVALID"},
		{"push start", "POST", "/v2/library/web/blobs/uploads/?ns=docker.io", 405, "UNSUPPORTED"},
		{"manifest put", "PUT", "/v2/library/web/manifests/1.0?ns=docker.io", 405, "UNSUPPORTED"},
		{"delete", "DELETE", "/v2/library/web/manifests/" + f.web.manifest.Digest.String() + "?ns=docker.io", 405, "UNSUPPORTED"},
		{"patch", "PATCH", "/v2/library/web/blobs/uploads/x?ns=docker.io", 405, "UNSUPPORTED"},
		{"not /v2", "GET", "/etc/passwd", 404, "NOT_FOUND"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := f.get(t, c.method, c.path)
			if resp.StatusCode != c.status {
				t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, resp.StatusCode, body, c.status)
			}
			if code := errorCode(t, body); code != c.code {
				t.Errorf("code %s, want %s", code, c.code)
			}
			if c.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("405 without Allow: GET, HEAD")
			}
		})
	}
}

// A damaged content file (its size differs from the graph's) is never served as the digest.
func TestDamagedBlobNotServed(t *testing.T) {
	f := newFixture(t)
	l := f.web.layers[0]
	p := filepath.Join(f.st.Dir(), "blobs", "sha256", l.Digest.Encoded())
	if err := os.Truncate(p, 10); err != nil {
		t.Fatal(err)
	}
	resp, body := f.get(t, "GET", "/v2/library/web/blobs/"+l.Digest.String()+"?ns=docker.io")
	if resp.StatusCode != 500 || bytes.Contains(body, f.blob(t, l)[:10]) {
		t.Fatalf("damaged blob: %d %q", resp.StatusCode, body)
	}
}

// Tags follow the bundle's current and healthy revisions; digests of every kept revision
// stay served, so a rollback pulls nothing from outside.
func TestTagsFollowRevisionStates(t *testing.T) {
	f := newFixture(t)
	tagDigest := func() string {
		resp, body := f.get(t, "HEAD", "/v2/library/web/manifests/1.0?ns=docker.io")
		if resp.StatusCode != 200 {
			t.Fatalf("tag: %d %s", resp.StatusCode, body)
		}
		return resp.Header.Get("Docker-Content-Digest")
	}
	admit(t, f.st, f.mem, "shop", 2, map[string]ocispec.Descriptor{"docker.io/library/web:1.0": f.web2.manifest})
	if got := tagDigest(); got != f.web.manifest.Digest.String() {
		t.Fatalf("revision 2 only verified: tag resolves to %s, want revision 1's", got)
	}
	resp, _ := f.get(t, "HEAD", "/v2/library/web/manifests/"+f.web2.manifest.Digest.String()+"?ns=docker.io")
	if resp.StatusCode != 200 {
		t.Fatalf("revision 2's image by digest before rollout: %d", resp.StatusCode)
	}
	if err := f.st.Begin("shop", 2, time.Now().Add(time.Hour), "test"); err != nil {
		t.Fatal(err)
	}
	if got := tagDigest(); got != f.web2.manifest.Digest.String() {
		t.Fatalf("revision 2 current: tag resolves to %s, want revision 2's", got)
	}
	// Revision 2 fails and revision 1 is current again: the tag goes back.
	if err := f.st.SetState("shop", 2, store.StateFailed, "test"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Begin("shop", 1, time.Now().Add(time.Hour), "rollback"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.SetState("shop", 1, store.StateHealthy, "test"); err != nil {
		t.Fatal(err)
	}
	if got := tagDigest(); got != f.web.manifest.Digest.String() {
		t.Fatalf("after rollback: tag resolves to %s, want revision 1's", got)
	}
	held, err := NewServer(f.st, nil).Held(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, h := range held {
		lines = append(lines, fmt.Sprintf("%s %s %v %v", h.Name, h.Digest[:15], h.Served, h.Revisions))
	}
	want := []string{
		"docker.io/library/web:1.0 " + f.web.manifest.Digest.String()[:15] + " true [shop/1]",
		"docker.io/library/web:1.0 " + f.web2.manifest.Digest.String()[:15] + " false [shop/2]",
		"ghcr.io/org/app:2 " + f.multi.Digest.String()[:15] + " true [shop/1]",
	}
	if len(lines) != 3 || !sameSet(lines, want) {
		t.Errorf("held:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// oras-go's registry client copies the images out whole, by tag, with digests checked.
func TestOrasCopiesFromEndpoint(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		repo, tag string
		root      ocispec.Descriptor
	}{{"docker.io/library/web", "1.0", f.web.manifest}, {"ghcr.io/org/app", "2", f.multi}} {
		r, err := remote.NewRepository(f.host + "/" + c.repo)
		if err != nil {
			t.Fatal(err)
		}
		r.PlainHTTP = true
		dst := memory.New()
		got, err := oras.Copy(t.Context(), r, c.tag, dst, c.tag, oras.DefaultCopyOptions)
		if err != nil {
			t.Fatalf("%s:%s: %v", c.repo, c.tag, err)
		}
		if got.Digest != c.root.Digest {
			t.Errorf("%s:%s resolved to %s, want %s", c.repo, c.tag, got.Digest, c.root.Digest)
		}
		want, _ := bundles.ImageBlobs(t.Context(), f.mem, c.root)
		for _, d := range want {
			if ok, _ := dst.Exists(t.Context(), d); !ok {
				t.Errorf("%s: %s not copied", c.repo, d.Digest)
			}
		}
		tags, err := registryTags(t.Context(), r)
		if err != nil || len(tags) != 1 || tags[0] != c.tag {
			t.Errorf("tags of %s: %v %v", c.repo, tags, err)
		}
	}
}

func registryTags(ctx context.Context, r *remote.Repository) ([]string, error) {
	var out []string
	err := r.Tags(ctx, "", func(t []string) error { out = append(out, t...); return nil })
	return out, err
}

// Many pulls at once all get the right bytes.
func TestConcurrentPulls(t *testing.T) {
	f := newFixture(t)
	l := f.web.layers[1]
	want := f.blob(t, l)
	var wg sync.WaitGroup
	errs := make(chan error, 96)
	for range 96 {
		wg.Go(func() {
			resp, err := http.Get(f.srv.URL + "/v2/library/web/blobs/" + l.Digest.String() + "?ns=docker.io")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !bytes.Equal(b, want) {
				errs <- fmt.Errorf("status %d, %d bytes", resp.StatusCode, len(b))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Run bounds connections: beyond MaxConnections, clients wait rather than being served in
// parallel, and the server stops when its context ends.
func TestRunStops(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewServer(f.st, nil).Run(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/v2/")
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("/v2/: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func FuzzRepoName(f *testing.F) {
	for _, s := range []string{"library/nginx", "docker.io/library/nginx", "../x", "a/./b", "ghcr.io/org/app", "localhost:5000/x"} {
		f.Add(s, "")
		f.Add(s, "docker.io")
	}
	f.Fuzz(func(t *testing.T, name, ns string) {
		full, err := repoName(name, ns)
		if err != nil {
			return
		}
		if strings.Contains(full, "..") || strings.Contains(full, "//") || strings.HasPrefix(full, "/") ||
			strings.ContainsAny(full, "%?#\\ \x00") || len(full) > maxNameLength {
			t.Fatalf("repoName(%q, %q) = %q accepted", name, ns, full)
		}
	})
}

// A path without a registry is served only while one registry alone holds it.
func TestAmbiguousPathRefused(t *testing.T) {
	f := newFixture(t)
	admit(t, f.st, f.mem, "other", 1, map[string]ocispec.Descriptor{"quay.io/library/web:1.0": f.web2.manifest})
	healthy(t, f.st, "other", 1)
	resp, body := f.get(t, "GET", "/v2/library/web/manifests/1.0")
	if resp.StatusCode != 404 || errorCode(t, body) != "NAME_UNKNOWN" || !strings.Contains(string(body), "docker.io/library/web, quay.io/library/web") {
		t.Fatalf("ambiguous path: %d %s", resp.StatusCode, body)
	}
	resp, _ = f.get(t, "HEAD", "/v2/library/web/manifests/1.0?ns=quay.io")
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != f.web2.manifest.Digest.String() {
		t.Fatalf("quay.io by ns: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
}

func TestHolds(t *testing.T) {
	f := newFixture(t)
	s := NewServer(f.st, nil)
	for im, want := range map[string]bool{
		"web:1.0": true, "docker.io/library/web:1.0": true, "index.docker.io/library/web:1.0": true,
		"docker.io/library/web@" + f.web.manifest.Digest.String(): true,
		"ghcr.io/org/app:2": true,
		"web:2.0":           false, "ghcr.io/org/other:2": false, "docker.io/library/web@" + digest.FromString("x").String(): false,
		"NOT A NAME": false,
	} {
		if got := s.Holds(t.Context(), im); got != want {
			t.Errorf("Holds(%s) = %v, want %v", im, got, want)
		}
	}
}

// A content file damaged without changing its size is never served whole under its digest:
// the connection is cut before the end; one that is gone is BLOB_UNKNOWN.
func TestDamagedContentNotServedWhole(t *testing.T) {
	f := newFixture(t)
	l := f.web.layers[1]
	p := filepath.Join(f.st.Dir(), "blobs", "sha256", l.Digest.Encoded())
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0xff
	os.Chmod(p, 0o600)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var got []byte
	resp, err := http.Get(f.srv.URL + "/v2/library/web/blobs/" + l.Digest.String() + "?ns=docker.io")
	if err == nil { // the headers may come before the cut, or not at all
		got, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil || int64(len(got)) >= l.Size {
		t.Fatalf("damaged blob: read %d of %d bytes, err %v; want the connection cut short", len(got), l.Size, err)
	}
	// The same for a manifest.
	mp := filepath.Join(f.st.Dir(), "blobs", "sha256", f.web.manifest.Digest.Encoded())
	mb, _ := os.ReadFile(mp)
	mb[10] ^= 0x01
	os.WriteFile(mp, mb, 0o600)
	resp, err = http.Get(f.srv.URL + "/v2/library/web/manifests/1.0?ns=docker.io")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a damaged manifest was served whole")
	}
	// A blob whose file is gone.
	gone := f.web.layers[0]
	os.Remove(filepath.Join(f.st.Dir(), "blobs", "sha256", gone.Digest.Encoded()))
	r2, body := f.get(t, "GET", "/v2/library/web/blobs/"+gone.Digest.String()+"?ns=docker.io")
	if r2.StatusCode != 404 || errorCode(t, body) != "BLOB_UNKNOWN" {
		t.Fatalf("missing blob file: %d %s", r2.StatusCode, body)
	}
}

// 96 pulls of a 32 MiB layer at once allocate a small fraction of what they move: blobs are
// streamed through pooled buffers, never held whole.
func TestConcurrentPullsMemoryBounded(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mem := memory.New()
	big := makeImage(t, mem, "amd64", 32<<20)
	admit(t, st, mem, "big", 1, map[string]ocispec.Descriptor{"ghcr.io/org/big:1": big.manifest})
	healthy(t, st, "big", 1)
	srv := httptest.NewServer(NewServer(st, nil))
	defer srv.Close()
	url := srv.URL + "/v2/org/big/blobs/" + big.layers[0].Digest.String() + "?ns=ghcr.io"
	const pulls = 96
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	errs := make(chan error, pulls)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: pulls}}
	for range pulls {
		wg.Go(func() {
			resp, err := client.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || n != big.layers[0].Size || resp.StatusCode != 200 {
				errs <- fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, n, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	moved := uint64(pulls) * uint64(big.layers[0].Size)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d pulls moving %d MiB allocated %d MiB", pulls, moved>>20, alloc>>20)
	if alloc > moved/8 {
		t.Errorf("%d pulls moving %d MiB allocated %d MiB", pulls, moved>>20, alloc>>20)
	}
}

// Retention: an image stays served while a kept revision names it, and goes with the last
// revision that did.
func TestImagesFollowRetention(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{SpaceMargin: 1, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mem := memory.New()
	var ims []image
	for rev := uint64(1); rev <= 3; rev++ {
		im := makeImage(t, mem, "amd64", 1000+int(rev))
		ims = append(ims, im)
		admit(t, st, mem, "shop", rev, map[string]ocispec.Descriptor{"ghcr.io/org/app:1": im.manifest})
		if rev < 3 {
			healthy(t, st, "shop", rev) // 3 stays admitted only: 2 is current and last good
		}
	}
	if _, err := st.GC(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(st, nil))
	defer srv.Close()
	for i, want := range []int{404, 200, 200} { // revision 1 went; 2 is current; 3 is the newest
		resp, err := http.Head(srv.URL + "/v2/org/app/blobs/" + ims[i].layers[0].Digest.String() + "?ns=ghcr.io")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("revision %d's layer after GC: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
}

// A store write that changes no revision (an event, an inventory) rebuilds the index from the
// cache: no bundle manifest is read again.
func TestIndexRebuildUsesCache(t *testing.T) {
	f := newFixture(t)
	c := &countingStore{Store: f.st}
	s := NewServer(c, nil)
	if !s.Holds(t.Context(), "web:1.0") {
		t.Fatal("web:1.0 not held")
	}
	first := c.fetches
	if err := f.st.AddEvent(store.Event{Bundle: "shop", Reason: "Test"}); err != nil {
		t.Fatal(err)
	}
	if !s.Holds(t.Context(), "web:1.0") {
		t.Fatal("web:1.0 not held after an event")
	}
	if c.fetches != first {
		t.Errorf("the rebuild after an event read %d blobs again", c.fetches-first)
	}
}

type countingStore struct {
	*store.Store
	fetches int
}

func (c *countingStore) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	c.fetches++
	return c.Store.Fetch(ctx, d)
}
