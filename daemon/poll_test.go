package daemon

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"

	"github.com/ferrygitops/ferry/bundles"
)

// fakeRegistry answers a manifest HEAD of one repository's tags the way distribution does:
// the digest in Docker-Content-Digest and, unless noETag, in a quoted ETag, with a 304 when
// If-None-Match names it. It records the If-None-Match of every HEAD.
type fakeRegistry struct {
	mu     sync.Mutex
	tags   map[string]digest.Digest
	noETag bool
	status int // when set, every HEAD answers it
	sent   []string
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.URL.Path == "/v2/site/app/tags/list":
		var names []string
		for t := range f.tags {
			names = append(names, `"`+t+`"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":"site/app","tags":[` + strings.Join(names, ",") + `]}`))
		return
	case r.Method != http.MethodHead || !strings.HasPrefix(r.URL.Path, "/v2/site/app/manifests/"):
		http.NotFound(w, r)
		return
	}
	f.sent = append(f.sent, r.Header.Get("If-None-Match"))
	if f.status != 0 {
		w.WriteHeader(f.status)
		return
	}
	d, ok := f.tags[strings.TrimPrefix(r.URL.Path, "/v2/site/app/manifests/")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	etag := `"` + d.String() + `"`
	if !f.noETag && r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if !f.noETag {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	w.Header().Set("Content-Length", "123")
}

// head returns what the HEADs sent as If-None-Match since the last call.
func (f *fakeRegistry) head() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sent
	f.sent = nil
	return s
}

func (f *fakeRegistry) set(tag string, d digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tags[tag] = d
}

func newFakeRegistry(t *testing.T, noETag bool) (*fakeRegistry, *registrySource) {
	t.Helper()
	f := &fakeRegistry{tags: map[string]digest.Digest{}, noETag: noETag}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	// No credentials: the Docker config named does not exist.
	cfg := &RegistrySource{Repository: strings.TrimPrefix(srv.URL, "http://") + "/site/app", Tag: "stable",
		DockerConfig: filepath.Join(t.TempDir(), "config.json")}
	return f, newSource(SourceConfig{Registry: cfg}).(*registrySource)
}

// pollKey polls once and returns the one candidate's key.
func pollKey(t *testing.T, r *registrySource) string {
	t.Helper()
	cands, err := r.poll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 1 {
		t.Fatalf("%d candidates, want 1", len(cands))
	}
	if want := "@" + cands[0].key; !strings.HasSuffix(cands[0].addr.Raw, want) {
		t.Errorf("candidate %s does not name its key's digest %s", cands[0].addr.Raw, cands[0].key)
	}
	return cands[0].key
}

var (
	digest1 = digest.FromString("revision 1")
	digest2 = digest.FromString("revision 2")
)

func TestRegistryPollIsConditional(t *testing.T) {
	f, r := newFakeRegistry(t, false)
	f.set("stable", digest1)
	steps := []struct {
		name     string
		move     digest.Digest // the tag moves here before the poll
		wantSent string        // the If-None-Match the HEAD carried
		wantKey  digest.Digest
	}{
		{name: "first poll is plain", wantSent: "", wantKey: digest1},
		{name: "unchanged: 304 keeps the answer", wantSent: `"` + digest1.String() + `"`, wantKey: digest1},
		{name: "still unchanged", wantSent: `"` + digest1.String() + `"`, wantKey: digest1},
		{name: "tag moved: 200 with the new digest", move: digest2, wantSent: `"` + digest1.String() + `"`, wantKey: digest2},
		{name: "conditional on the new ETag", wantSent: `"` + digest2.String() + `"`, wantKey: digest2},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.move != "" {
				f.set("stable", s.move)
			}
			if key := pollKey(t, r); key != s.wantKey.String() {
				t.Errorf("key %s, want %s", key, s.wantKey)
			}
			if sent := f.head(); len(sent) != 1 || sent[0] != s.wantSent {
				t.Errorf("If-None-Match sent %q, want [%q]", sent, s.wantSent)
			}
		})
	}
}

func TestRegistryPollWithoutETagStaysPlain(t *testing.T) {
	f, r := newFakeRegistry(t, true)
	f.set("stable", digest1)
	for range 3 {
		if key := pollKey(t, r); key != digest1.String() {
			t.Fatalf("key %s, want %s", key, digest1)
		}
	}
	if sent := f.head(); len(sent) != 3 || sent[0]+sent[1]+sent[2] != "" {
		t.Errorf("If-None-Match sent %q to a registry that gave no ETag", sent)
	}
}

// A range's highest tag changes: the HEAD of the new tag must not carry the old tag's ETag.
func TestRegistryPollConditionalPerTag(t *testing.T) {
	f, r := newFakeRegistry(t, false)
	r.cfg.Tag, r.cfg.SemVer = "", ">=1.0.0"
	f.set("1.0.1", digest1)
	pollKey(t, r)
	pollKey(t, r)
	f.set("1.0.2", digest2)
	if key := pollKey(t, r); key != digest2.String() {
		t.Fatalf("key %s, want %s", key, digest2)
	}
	want := []string{"", `"` + digest1.String() + `"`, ""}
	if sent := f.head(); strings.Join(sent, "|") != strings.Join(want, "|") {
		t.Errorf("If-None-Match sent %q, want %q", sent, want)
	}
}

func TestRegistryPollRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		missing bool // the tag does not exist
		want    string
		is      error
	}{
		{name: "304 to a plain HEAD", status: http.StatusNotModified, want: "304"},
		{name: "refused", status: http.StatusForbidden, want: "status code 403"},
		{name: "200 without a digest", status: http.StatusOK, want: "invalid Docker-Content-Digest"},
		{name: "unknown tag", missing: true, want: "not found", is: errdef.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, r := newFakeRegistry(t, false)
			f.status = tc.status
			if !tc.missing {
				f.set("stable", digest1)
			}
			cands, err := r.poll(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("poll = %v, %v; want an error with %q", cands, err, tc.want)
			}
			if len(cands) != 0 {
				t.Errorf("candidates %v beside an error", cands)
			}
		})
	}
}

// A Poller admits a new candidate once, with the daemon's own source and Ingest, and then
// only polls. A USB source is the one whose copy a test writes without a server.
func TestPollerAdmitsOnce(t *testing.T) {
	k := newKey(t)
	src := memory.New()
	desc := makeBundle(t, src, "app", 1, "one")
	sign(t, src, desc, k)
	media := t.TempDir()
	stick := filepath.Join(media, "usb0")
	if err := os.MkdirAll(stick, 0o755); err != nil {
		t.Fatal(err)
	}
	dst, err := bundles.ParseAddress(filepath.Join(t.TempDir(), "app.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.Copy(t.Context(), memSource{src}, desc, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst.Path, filepath.Join(stick, "app.tar")); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, t.TempDir())
	defer st.Close()
	p := NewPoller(SourceConfig{Name: "usb", USB: &USBSource{Paths: []string{media}}}, st, k.policy)
	// The USB source offers a file once its size and time held for one scan.
	for pass, want := range []int{0, 1, 0, 0} {
		revs, err := p.Pass(t.Context())
		if err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if len(revs) != want {
			t.Fatalf("pass %d admitted %d revisions, want %d", pass, len(revs), want)
		}
		if want == 1 && (revs[0].Name != "app" || revs[0].Revision != 1 || revs[0].Manifest.Digest != desc.Digest) {
			t.Errorf("admitted %s revision %d (%s), want app revision 1 (%s)", revs[0].Name, revs[0].Revision, revs[0].Manifest.Digest, desc.Digest)
		}
	}
	if p.Interval() <= 0 {
		t.Errorf("interval %s", p.Interval())
	}
}
