package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/net/netutil"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

// Limits of the endpoint.
const (
	// MaxConnections bounds the connections served at once; more wait in the kernel's
	// accept queue. Blobs stream from their files, so each costs a socket and a file, not
	// memory in proportion to its size.
	MaxConnections = 256
	// maxNameLength is the distribution spec's bound on a repository name with its host.
	maxNameLength = 255
)

// The distribution spec's grammar (distribution-spec, "Pulling manifests"): path components
// of lower-case alphanumerics with single separators, a tag of at most 128 characters.
var (
	pathComponent = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
	tagPattern    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	// A registry host as containerd's ns query and the first path element name it.
	hostPattern = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]{1,5})?$`)
)

// Server is the image endpoint over one store.
type Server struct {
	st  Store
	log *slog.Logger

	mu    sync.Mutex
	gen   uint64
	idx   *index
	cache map[digest.Digest][]carriedImage // by bundle manifest digest
}

// NewServer returns the endpoint for st; log may be nil.
func NewServer(st Store, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{st: st, log: log, cache: map[digest.Digest][]carriedImage{}}
}

// Run serves the endpoint on ln until ctx is done.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10}
	ln = netutil.LimitListener(ln, MaxConnections)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Held lists the images the node holds, for `ferry images list` and the status page.
func (s *Server) Held(ctx context.Context) ([]Held, error) {
	idx, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return idx.held, nil
}

// current returns the index for the store's generation, rebuilding it when that moved.
func (s *Server) current(ctx context.Context) (*index, error) {
	gen, err := s.st.Generation()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx != nil && gen == s.gen {
		return s.idx, nil
	}
	idx, errs := buildIndex(ctx, s.st, s.cache)
	for _, e := range errs {
		s.log.Warn("image endpoint: revision not served", "err", e)
	}
	s.idx, s.gen = idx, gen
	return idx, nil
}

// ServeHTTP answers the read side of the OCI distribution API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this node's image endpoint is read-only")
		return
	}
	p := r.URL.Path
	if p == "/v2" || p == "/v2/" {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "not an OCI distribution path")
		return
	}
	var name, kind, ref string
	switch {
	case strings.HasSuffix(rest, "/tags/list"):
		name, kind = strings.TrimSuffix(rest, "/tags/list"), "tags"
	case strings.Contains(rest, "/manifests/"):
		i := strings.LastIndex(rest, "/manifests/")
		name, kind, ref = rest[:i], "manifests", rest[i+len("/manifests/"):]
	case strings.Contains(rest, "/blobs/"):
		i := strings.LastIndex(rest, "/blobs/")
		name, kind, ref = rest[:i], "blobs", rest[i+len("/blobs/"):]
	default:
		writeError(w, http.StatusNotFound, "NOT_FOUND", "not an OCI distribution path")
		return
	}
	full, err := repoName(name, r.URL.Query().Get("ns"))
	if err != nil && !errors.Is(err, errNoHost) {
		writeError(w, http.StatusBadRequest, "NAME_INVALID", err.Error())
		return
	}
	idx, ierr := s.current(r.Context())
	if ierr != nil {
		s.log.Error("image endpoint: store", "err", ierr)
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the node's store cannot be read")
		return
	}
	if err != nil {
		// No registry named: a repository path that one registry alone holds on this node is
		// unambiguous (skopeo inspect docker://127.0.0.1:9796/org/app:1).
		switch c := idx.paths[name]; len(c) {
		case 1:
			full = c[0]
		case 0:
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", fmt.Sprintf("repository %s is not on this node", name))
			return
		default:
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", fmt.Sprintf("repository %s is held from %d registries (%s): name one with ?ns= or as the first path element", name, len(c), strings.Join(c, ", ")))
			return
		}
	}
	rp := idx.repos[full]
	if rp == nil {
		writeError(w, http.StatusNotFound, "NAME_UNKNOWN", fmt.Sprintf("repository %s is not on this node", full))
		return
	}
	switch kind {
	case "tags":
		s.tags(w, full, rp)
	case "manifests":
		s.manifest(w, r, full, rp, ref)
	case "blobs":
		s.blob(w, r, full, rp, ref)
	}
}

// repoName is the full name (registry host/repository) a request asks for: containerd names
// the upstream registry in the ns query; without it, the first path element is the host, or
// errNoHost when it is not one.
func repoName(name, ns string) (string, error) {
	if ns != "" {
		if !hostPattern.MatchString(ns) {
			return "", fmt.Errorf("ns %q is not a registry host", ns)
		}
		if ns == "index.docker.io" || ns == "registry-1.docker.io" {
			ns = "docker.io"
		}
		name = strings.ToLower(ns) + "/" + name
	}
	if len(name) > maxNameLength {
		return "", fmt.Errorf("repository name longer than %d characters", maxNameLength)
	}
	host, path, ok := strings.Cut(name, "/")
	if !ok || !hostPattern.MatchString(host) || (!strings.ContainsAny(host, ".:") && host != "localhost") {
		host, path = "", name
	}
	for _, c := range strings.Split(path, "/") {
		if !pathComponent.MatchString(c) {
			return "", fmt.Errorf("repository %q: path component %q is not valid", name, c)
		}
	}
	if host == "" {
		return "", errNoHost
	}
	return name, nil
}

// errNoHost: a valid repository path that names no registry host.
var errNoHost = errors.New("no registry host")

func (s *Server) tags(w http.ResponseWriter, full string, rp *repo) {
	tags := make([]string, 0, len(rp.tags))
	for t := range rp.tags {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	_, path, _ := strings.Cut(full, "/")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"name": path, "tags": tags})
}

func (s *Server) manifest(w http.ResponseWriter, r *http.Request, full string, rp *repo, ref string) {
	var d digest.Digest
	if strings.Contains(ref, ":") {
		d = digest.Digest(ref)
		if d.Validate() != nil {
			writeError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("%q is not a digest", ref))
			return
		}
	} else {
		if !tagPattern.MatchString(ref) {
			writeError(w, http.StatusBadRequest, "TAG_INVALID", fmt.Sprintf("%q is not a tag", ref))
			return
		}
		t, ok := rp.tags[ref]
		if !ok {
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("%s:%s is not carried by a healthy or current revision on this node", full, ref))
			return
		}
		d = t.desc.Digest
	}
	desc, ok := rp.manifests[d]
	if !ok {
		writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("%s@%s is not on this node", full, d))
		return
	}
	w.Header().Set("Content-Type", desc.MediaType)
	s.serveFile(w, r, full, d, desc.Size, "MANIFEST_UNKNOWN")
}

func (s *Server) blob(w http.ResponseWriter, r *http.Request, full string, rp *repo, ref string) {
	d := digest.Digest(ref)
	if d.Validate() != nil {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("%q is not a digest", ref))
		return
	}
	size, ok := rp.blobs[d]
	if desc, isManifest := rp.manifests[d]; isManifest { // a manifest is a blob too
		size, ok = desc.Size, true
	}
	if !ok {
		writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", fmt.Sprintf("%s@%s is not on this node", full, d))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	s.serveFile(w, r, full, d, size, "BLOB_UNKNOWN")
}

// serveFile streams the content file of d; ServeContent answers HEAD, Range (416 for a range
// past the end), If-None-Match against the digest's ETag, and Content-Length.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, full string, d digest.Digest, size int64, code string) {
	f, err := s.st.OpenBlob(d)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, code, fmt.Sprintf("%s@%s is not on this node", full, d))
		return
	}
	if err != nil {
		s.log.Error("image endpoint: open blob", "digest", d, "err", err)
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "the blob cannot be read")
		return
	}
	defer f.Close()
	// The size the graph records is the size CI signed; a content file of another size is
	// damaged and must not be served as this digest.
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		s.log.Error("image endpoint: content file has the wrong size", "digest", d)
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "the blob on this node is damaged")
		return
	}
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("ETag", `"`+d.String()+`"`)
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" && r.Header.Get("If-None-Match") == "" {
		s.serveVerified(w, f, d, size)
		return
	}
	// HEAD, a Range (a resumed pull) or a conditional request: the file as it is. A whole
	// GET, below, is what a pull reads.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// verifyBuffer is the unit serveVerified reads, hashes and writes; two are held per request.
const verifyBuffer = 256 << 10

var bufferPool = sync.Pool{New: func() any { b := make([]byte, verifyBuffer); return &b }}

// serveVerified streams a whole blob, hashing it as it goes, and holds the last buffer back
// until the digest is known: content damaged on this node's disk is never served complete
// under its digest. The client sees the connection cut short of Content-Length instead.
func (s *Server) serveVerified(w http.ResponseWriter, f *os.File, d digest.Digest, size int64) {
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	a, b := bufferPool.Get().(*[]byte), bufferPool.Get().(*[]byte)
	defer bufferPool.Put(a)
	defer bufferPool.Put(b)
	v := d.Verifier()
	held := 0 // bytes of *a waiting to be written
	var total int64
	for {
		n, err := io.ReadFull(f, *b)
		if n > 0 {
			v.Write((*b)[:n])
			total += int64(n)
			if held > 0 {
				if _, werr := w.Write((*a)[:held]); werr != nil {
					return // the client went away
				}
			}
			a, b = b, a
			held = n
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			s.log.Error("image endpoint: read blob", "digest", d, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	if total != size || !v.Verified() {
		s.log.Error("image endpoint: a stored blob does not match its digest; not served", "digest", d)
		panic(http.ErrAbortHandler)
	}
	if held > 0 {
		w.Write((*a)[:held])
	}
}

// writeError writes the distribution spec's error body: {"errors":[{"code","message"}]}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// Holds reports whether any kept revision carries image (as a manifest names it: by tag or
// digest), so the node can serve it once that revision runs. It is apply.ImageHolder.
func (s *Server) Holds(ctx context.Context, image string) bool {
	ref, err := bundles.NormalizeImage(image)
	if err != nil {
		return false
	}
	idx, err := s.current(ctx)
	if err != nil {
		return false
	}
	rp := idx.repos[ref.Registry+"/"+ref.Repository]
	if rp == nil {
		return false
	}
	if d, err := ref.Digest(); err == nil {
		_, ok := rp.manifests[d]
		return ok
	}
	return rp.carried[ref.Reference]
}
