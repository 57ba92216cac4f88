package bundles

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"

	"encoding/json"
	"errors"
	"fmt"
	"github.com/Masterminds/semver/v3"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	orascreds "oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// MaxArchiveBytes bounds a bundle archive fetched from S3 before it is opened.
const MaxArchiveBytes = 8 << 30

// Options say how to reach registries and S3. The zero value uses the Docker credentials
// file, HTTPS for every registry but loopback ones, and the standard AWS environment.
type Options struct {
	// PlainHTTP talks HTTP to every registry. Loopback registries (localhost, 127.0.0.1,
	// ::1) always use plain HTTP, as Docker does.
	PlainHTTP bool
	// DockerConfig is a Docker config.json with registry credentials; "" means the default
	// ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
	DockerConfig string
	// Progress, when set, receives a progress line for long copies (a terminal); nil is quiet,
	// as CI logs want.
	Progress io.Writer
	// S3 endpoint and credentials; empty fields come from AWS_ENDPOINT_URL_S3 (or
	// AWS_ENDPOINT_URL), AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
	S3Endpoint, S3Region, S3AccessKey, S3SecretKey string
	// CAFile is a PEM bundle of certificate authorities trusted for registries, besides
	// the system's (a site mirror with its own CA).
	CAFile string
	// S3CredentialsFile is an AWS shared credentials file (profile from AWS_PROFILE, else
	// "default"), read when the environment has no keys; "" means the AWS defaults
	// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials and ~/.aws/config).
	S3CredentialsFile string
	// StallTimeout bounds each open, stat and read of a layout directory or archive (a USB
	// stick): one that does not answer in time fails with ErrStalled (0 means
	// DefaultStallTimeout). Registries and S3 have their network timeouts instead.
	StallTimeout time.Duration
}

// Source is a store a bundle can be read from.
type Source interface {
	content.ReadOnlyStorage
	content.Resolver
	// Close releases what opening the source took (temporary files).
	Close() error
}

// SignatureTag is the tag cosign stores the signatures of manifest d under (SPEC §8).
func SignatureTag(d ocispec.Descriptor) string {
	return d.Digest.Algorithm().String() + "-" + d.Digest.Encoded() + ".sig"
}

// OpenSource opens the store at a and resolves the bundle manifest it names. A layout or
// tar without a reference must hold exactly one bundle. Reads of a layout or tar are bound to
// ctx as well as to the context of each Fetch, and each has o.StallTimeout to answer.
func OpenSource(ctx context.Context, a Address, o Options) (Source, ocispec.Descriptor, error) {
	var src Source
	ref := a.Reference
	switch a.Kind {
	case KindRegistry:
		repo, err := o.referencedRepository(a)
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		src, ref = nopCloser{repo}, a.Ref.Reference
	case KindLayout:
		s, err := openLayout(ctx, a.Path, NewGuard(o.StallTimeout))
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		src = s
	case KindTar:
		s, err := openArchive(ctx, a.Path, NewGuard(o.StallTimeout))
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		src = s
	case KindS3:
		if !strings.HasSuffix(a.Key, ".tar") {
			return nil, ocispec.Descriptor{}, fmt.Errorf("%s: name the bundle object (s3://bucket/key.tar)", a)
		}
		tmp, err := o.download(ctx, a)
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		s, err := openArchive(ctx, tmp, NewGuard(o.StallTimeout))
		if err != nil {
			os.Remove(tmp)
			return nil, ocispec.Descriptor{}, fmt.Errorf("%s: %w", a, err)
		}
		src = tempSource{s, tmp}
	default:
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: unknown address kind", a)
	}
	if ref == "" {
		var err error
		if ref, err = onlyBundleTag(ctx, src, a); err != nil {
			src.Close()
			return nil, ocispec.Descriptor{}, err
		}
	}
	desc, err := src.Resolve(ctx, ref)
	if err != nil {
		src.Close()
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: resolve %q: %w", a, ref, err)
	}
	return src, desc, nil
}

// MaxArchiveEntries bounds the entries of a bundle archive.
const MaxArchiveEntries = 100_000

// CheckArchive reads a bundle archive (an OCI layout in a tar) once and refuses it unless every
// entry is a directory or regular file with a clean relative name inside the layout
// (oci-layout, index.json, blobs/…), within the size and count limits. Nothing is extracted
// either way: blobs are read from the archive by digest and checked as they are.
func CheckArchive(path string) error {
	f, err := OpenRegular(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	_, err = checkArchive(f, fi.Size(), path)
	return err
}

// checkArchive is CheckArchive of the size bytes of r; it returns where each regular file
// lies in the archive.
func checkArchive(r io.ReadSeeker, size int64, path string) (map[string]archiveEntry, error) {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if size > MaxArchiveBytes {
		return nil, fmt.Errorf("%s: %d bytes, over the %d-byte limit", path, size, int64(MaxArchiveBytes))
	}
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	files := map[string]archiveEntry{}
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return nil, fmt.Errorf("%s: empty archive", path)
			}
			// An archive cut between two entries ends cleanly: it says what it lacks.
			for _, need := range []string{"oci-layout", "index.json"} {
				if _, ok := files[need]; !ok {
					return nil, fmt.Errorf("%s: not a complete bundle archive: no %s entry (copied only in part?)", path, need)
				}
			}
			return files, nil
		}
		switch {
		case errors.Is(err, tar.ErrHeader) && n == 0:
			return nil, fmt.Errorf("%s: not a tar archive (a bundle archive is the tar `ferry bundle export` writes)", path)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%s: truncated: the archive ends inside an entry (copied only in part?)", path)
		case err != nil:
			return nil, fmt.Errorf("%s: not a complete tar archive: %w", path, err)
		}
		if n >= MaxArchiveEntries {
			return nil, fmt.Errorf("%s: more than %d entries", path, MaxArchiveEntries)
		}
		name, err := cleanEntryName(strings.TrimPrefix(hdr.Name, "./"))
		if err != nil {
			return nil, fmt.Errorf("%s: entry %q: %w", path, hdr.Name, err)
		}
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeDir {
			return nil, fmt.Errorf("%s: entry %q: type %q not allowed (regular files and directories only)", path, hdr.Name, string(hdr.Typeflag))
		}
		if name != "oci-layout" && name != "index.json" && name != "blobs" && !strings.HasPrefix(name, "blobs/") {
			return nil, fmt.Errorf("%s: entry %q is not part of an OCI layout", path, hdr.Name)
		}
		// A PAX sparse file's bytes in the archive are not its content: blobs are read from
		// the archive as they lie in it.
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return nil, fmt.Errorf("%s: entry %q: a sparse file (not allowed)", path, hdr.Name)
			}
		}
		// Readers disagree on which of two entries of one name counts (the last, for oras):
		// an archive that says two things is refused.
		key := strings.TrimSuffix(name, "/")
		if seen[key] {
			return nil, fmt.Errorf("%s: entry %q appears twice", path, hdr.Name)
		}
		seen[key] = true
		if hdr.Typeflag == tar.TypeReg {
			// tar.Reader has read the header blocks and nothing of the data.
			off, err := r.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, err
			}
			if hdr.Size < 0 || off+hdr.Size > size {
				return nil, fmt.Errorf("%s: truncated: the archive ends inside an entry (%q ends %d bytes past the end of the file; copied only in part?)", path, hdr.Name, off+hdr.Size-size)
			}
			files[key] = archiveEntry{off: off, size: hdr.Size, info: hdr.FileInfo()}
		}
	}
}

// onlyBundleTag finds the one tag in a layout that is not a signature.
func onlyBundleTag(ctx context.Context, src Source, a Address) (string, error) {
	lister, ok := src.(interface {
		Tags(context.Context, string, func([]string) error) error
	})
	if !ok {
		return "", fmt.Errorf("%s: name a tag or digest", a)
	}
	var tags []string
	err := lister.Tags(ctx, "", func(ts []string) error {
		for _, t := range ts {
			if !strings.HasSuffix(t, ".sig") && !strings.HasSuffix(t, ".att") {
				tags = append(tags, t)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	switch len(tags) {
	case 1:
		return tags[0], nil
	case 0:
		return "", fmt.Errorf("%s: holds no tagged bundle", a)
	default:
		return "", fmt.Errorf("%s: holds %d bundles (%s); add :TAG to choose one", a, len(tags), strings.Join(tags, ", "))
	}
}

type readResolver interface {
	content.ReadOnlyStorage
	content.Resolver
}

type nopCloser struct{ readResolver }

func (nopCloser) Close() error { return nil }

// Predecessors lists what refers to desc (OCI 1.1 referrers) when the wrapped store can.
func (n nopCloser) Predecessors(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if g, ok := n.readResolver.(content.ReadOnlyGraphStorage); ok {
		return g.Predecessors(ctx, desc)
	}
	return nil, nil
}

// Tags lists tags when the wrapped store can.
func (n nopCloser) Tags(ctx context.Context, last string, fn func([]string) error) error {
	if l, ok := n.readResolver.(interface {
		Tags(context.Context, string, func([]string) error) error
	}); ok {
		return l.Tags(ctx, last, fn)
	}
	return errors.New("cannot list tags")
}

// tempSource is a source read from a temporary file, removed when it is closed.
type tempSource struct {
	stickSource
	path string
}

func (t tempSource) Close() error {
	err := t.stickSource.Close()
	if rerr := os.Remove(t.path); err == nil {
		err = rerr
	}
	return err
}

// Copy copies the bundle desc and its signatures from src to the address dst, tagging it
// there with dst's tag or, when dst names none, the bundle's version. It returns where the
// bundle went (for S3, the object key).
func Copy(ctx context.Context, src Source, desc ocispec.Descriptor, dst Address, o Options) (string, error) {
	b, err := Open(ctx, src, desc)
	if err != nil {
		return "", err
	}
	tag := b.Metadata.Version
	switch dst.Kind {
	case KindRegistry:
		repo, err := o.Repository(dst)
		if err != nil {
			return "", err
		}
		if r := dst.Ref.Reference; r != "" {
			if strings.Contains(r, ":") {
				return "", fmt.Errorf("%s: a destination takes a tag, not a digest", dst)
			}
			tag = r
		}
		if err := copyWithSignatures(ctx, src, repo, desc, tag, b.Metadata.Images, o.Progress); err != nil {
			return "", err
		}
		return dst.Ref.Registry + "/" + dst.Ref.Repository + ":" + tag, nil
	case KindLayout:
		if dst.Reference != "" {
			tag = dst.Reference
		}
		store, err := oci.NewWithContext(ctx, dst.Path)
		if err != nil {
			return "", err
		}
		if err := copyWithSignatures(ctx, src, store, desc, tag, b.Metadata.Images, o.Progress); err != nil {
			return "", err
		}
		return dst.Path + ":" + tag, nil
	case KindTar:
		if dst.Reference != "" {
			tag = dst.Reference
		}
		return dst.Path, exportTar(ctx, src, desc, tag, b.Metadata.Images, dst.Path, o.Progress)
	case KindS3:
		key := dst.Key
		if !strings.HasSuffix(key, ".tar") {
			key = strings.TrimPrefix(key+"/"+b.Metadata.Name+"-"+b.Metadata.Version+".tar", "/")
		}
		tmp, err := os.CreateTemp("", "ferry-upload-*.tar")
		if err != nil {
			return "", err
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if err := exportTar(ctx, src, desc, tag, b.Metadata.Images, tmp.Name(), o.Progress); err != nil {
			return "", err
		}
		if err := o.upload(ctx, dst.Bucket, key, tmp.Name()); err != nil {
			return "", err
		}
		return "s3://" + dst.Bucket + "/" + key, nil
	}
	return "", fmt.Errorf("%s: unknown address kind", dst)
}

// copyWithSignatures copies the bundle graph and, when src has them, its cosign signatures:
// oras.ExtendedCopy follows referrers but not cosign's .sig tags, so they are copied by name.
func copyWithSignatures(ctx context.Context, src Source, dst oras.Target, desc ocispec.Descriptor, tag string, images []Image, progress io.Writer) error {
	opts := oras.DefaultCopyGraphOptions
	// counted is src for the bulk of the copy, its bytes counted for the progress line; the
	// signatures below are read from src itself (counted hides its referrers API).
	var counted content.ReadOnlyStorage = src
	if progress != nil {
		p := NewProgress(progress, "copy "+tag, TransferSize(ctx, src, desc, images))
		counted = Counted(src, p)
		// Blobs the destination already has count as done without being read.
		opts.OnCopySkipped = func(_ context.Context, d ocispec.Descriptor) error { p.Add(d.Size); return nil }
		defer p.Finish()
	}
	if err := oras.CopyGraph(ctx, counted, dst, desc, opts); err != nil {
		return fmt.Errorf("copy %s: %w", desc.Digest, err)
	}
	// Carried images go by digest (untagged): the signed config names them.
	for _, im := range images {
		if err := oras.CopyGraph(ctx, counted, dst, im.Descriptor, opts); err != nil {
			return fmt.Errorf("copy image %s (%s): %w", im.Name, im.Descriptor.Digest, err)
		}
	}
	if err := dst.Tag(ctx, desc, tag); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	// Signatures stored as OCI 1.1 referrers travel too (their graph names the bundle as
	// subject, which is already there).
	if graph, ok := src.(content.ReadOnlyGraphStorage); ok {
		refs, err := registry.Referrers(ctx, graph, desc, SignatureArtifactType)
		if err != nil && !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, errdef.ErrUnsupported) {
			return fmt.Errorf("signature referrers of %s: %w", desc.Digest, err)
		}
		for _, r := range refs {
			if err := oras.CopyGraph(ctx, src, dst, r, oras.DefaultCopyGraphOptions); err != nil {
				return fmt.Errorf("copy signature referrer %s: %w", r.Digest, err)
			}
		}
	}
	sigTag := SignatureTag(desc)
	sig, err := src.Resolve(ctx, sigTag)
	if err != nil {
		return nil // no tag-scheme signature to carry
	}
	if err := oras.CopyGraph(ctx, src, dst, sig, oras.DefaultCopyGraphOptions); err != nil {
		return fmt.Errorf("copy signatures %s: %w", sigTag, err)
	}
	return dst.Tag(ctx, sig, sigTag)
}

// exportTar writes the bundle and its signatures as an OCI layout in a tar file at path,
// atomically: a temp file beside it is written, synced and renamed.
func exportTar(ctx context.Context, src Source, desc ocispec.Descriptor, tag string, images []Image, path string, progress io.Writer) error {
	dir, err := os.MkdirTemp("", "ferry-layout-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := oci.NewWithContext(ctx, dir)
	if err != nil {
		return err
	}
	if err := copyWithSignatures(ctx, src, store, desc, tag, images, progress); err != nil {
		return err
	}
	if err := sortIndex(filepath.Join(dir, "index.json")); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tarLayout(dir, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// A bundle is not secret (secrets in it are encrypted); readable like any file cp makes.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// sortIndex orders index.json by tag and digest: oras writes it in map order, and an export
// should not differ from the last one only by that.
func sortIndex(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	sort.Slice(idx.Manifests, func(i, j int) bool {
		a, b := idx.Manifests[i], idx.Manifests[j]
		if ra, rb := a.Annotations[ocispec.AnnotationRefName], b.Annotations[ocispec.AnnotationRefName]; ra != rb {
			return ra < rb
		}
		return a.Digest < b.Digest
	})
	out, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// tarLayout writes the layout directory as a plain tar with the fixed entry metadata of
// SPEC §3, so exporting one bundle twice gives the same file.
func tarLayout(dir string, w io.Writer) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		// oras keeps an ingest/ directory for uploads in progress; it is not layout content.
		if rel == "ingest" {
			return filepath.SkipDir
		}
		names = append(names, rel)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, name := range names {
		full := filepath.Join(dir, filepath.FromSlash(name))
		info, err := os.Lstat(full)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: name, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: info.Size()}
		if info.IsDir() {
			hdr.Name, hdr.Mode, hdr.Typeflag, hdr.Size = name+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.IsDir() {
			if err := copyFile(tw, full, info.Size()); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// referencedRepository is repository for an address that must name a tag or digest.
func (o Options) referencedRepository(a Address) (*remote.Repository, error) {
	if a.Ref.Reference == "" {
		return nil, fmt.Errorf("%s: name a tag or digest", a)
	}
	return o.Repository(a)
}

// Repository returns a client for the registry repository of a, with o's credentials and
// plain-HTTP rule.
func (o Options) Repository(a Address) (*remote.Repository, error) {
	repo, err := remote.NewRepository(a.Ref.Registry + "/" + a.Ref.Repository)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a, err)
	}
	repo.PlainHTTP = o.PlainHTTP || isLoopback(a.Ref.Registry)
	var store orascreds.Store
	if o.DockerConfig != "" {
		store, err = orascreds.NewStore(o.DockerConfig, orascreds.StoreOptions{})
	} else {
		store, err = orascreds.NewStoreFromDocker(orascreds.StoreOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	client := retry.DefaultClient
	if o.CAFile != "" {
		if client, err = clientWithCA(o.CAFile); err != nil {
			return nil, err
		}
	}
	repo.Client = &auth.Client{Client: client, Cache: auth.NewCache(), Credential: orascreds.Credential(store)}
	return repo, nil
}

// clientWithCA is oras's retrying client trusting the system roots and the CAs in file.
func clientWithCA(file string) (*http.Client, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("registry CA: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("registry CA %s: no PEM certificate in it", file)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: retry.NewTransport(tr)}, nil
}

// HighestTag returns the repository's tag with the highest semver version that satisfies
// versionRange (empty: the highest stable), reading "_" in tags as "+" as helm push writes them.
func HighestTag(ctx context.Context, repo registry.TagLister, versionRange string) (string, error) {
	var tags []string
	if err := repo.Tags(ctx, "", func(ts []string) error { tags = append(tags, ts...); return nil }); err != nil {
		return "", fmt.Errorf("list tags: %w", err)
	}
	constraint := firstNonEmpty(versionRange, "*")
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return "", fmt.Errorf("version %q: %w", versionRange, err)
	}
	var best *semver.Version
	var bestTag string
	for _, t := range tags {
		v, err := semver.NewVersion(strings.ReplaceAll(t, "_", "+"))
		if err != nil || !c.Check(v) {
			continue
		}
		if best == nil || v.GreaterThan(best) {
			best, bestTag = v, t
		}
	}
	if best == nil {
		return "", fmt.Errorf("no tag matches %q", constraint)
	}
	return bestTag, nil
}

// S3Object is one object of a bucket listing.
type S3Object struct {
	Key          string
	Size         int64
	ETag         string
	LastModified time.Time
}

// ListS3 lists the bundle archives (.tar) under prefix in bucket, newest first.
func (o Options) ListS3(ctx context.Context, bucket, prefix string) ([]S3Object, error) {
	c, err := o.s3()
	if err != nil {
		return nil, err
	}
	var out []S3Object
	for obj := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3://%s/%s: %w", bucket, prefix, obj.Err)
		}
		if strings.HasSuffix(obj.Key, ".tar") {
			out = append(out, S3Object{Key: obj.Key, Size: obj.Size, ETag: obj.ETag, LastModified: obj.LastModified})
		}
		if len(out) > maxS3Listing {
			return nil, fmt.Errorf("s3://%s/%s: more than %d bundle archives; use a narrower prefix", bucket, prefix, maxS3Listing)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastModified.After(out[j].LastModified) })
	return out, nil
}

// maxS3Listing bounds a bucket listing (a bucket is not trusted either).
const maxS3Listing = 10000

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func (o Options) s3() (*minio.Client, error) {
	endpoint := firstNonEmpty(o.S3Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"), "https://s3.amazonaws.com")
	secure := true
	switch {
	case strings.HasPrefix(endpoint, "http://"):
		secure, endpoint = false, strings.TrimPrefix(endpoint, "http://")
	case strings.HasPrefix(endpoint, "https://"):
		endpoint = strings.TrimPrefix(endpoint, "https://")
	}
	var creds *credentials.Credentials
	if o.S3AccessKey != "" {
		creds = credentials.NewStaticV4(o.S3AccessKey, o.S3SecretKey, "")
	} else {
		// The AWS order: environment, then the shared credentials file.
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{Filename: o.S3CredentialsFile, Profile: os.Getenv("AWS_PROFILE")},
		})
	}
	return minio.New(strings.TrimSuffix(endpoint, "/"), &minio.Options{
		Creds: creds, Secure: secure, Region: firstNonEmpty(o.S3Region, os.Getenv("AWS_REGION"), "us-east-1"),
	})
}

func (o Options) download(ctx context.Context, a Address) (string, error) {
	c, err := o.s3()
	if err != nil {
		return "", err
	}
	info, err := c.StatObject(ctx, a.Bucket, a.Key, minio.StatObjectOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", a, err)
	}
	if info.Size > MaxArchiveBytes {
		return "", fmt.Errorf("%s: %d bytes, over the %d-byte limit", a, info.Size, int64(MaxArchiveBytes))
	}
	obj, err := c.GetObject(ctx, a.Bucket, a.Key, minio.GetObjectOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", a, err)
	}
	defer obj.Close()
	tmp, err := os.CreateTemp("", "ferry-download-*.tar")
	if err != nil {
		return "", err
	}
	n, err := io.Copy(tmp, io.LimitReader(obj, MaxArchiveBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > MaxArchiveBytes {
		err = fmt.Errorf("over the %d-byte limit", int64(MaxArchiveBytes))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("%s: %w", a, err)
	}
	return tmp.Name(), nil
}

func (o Options) upload(ctx context.Context, bucket, key, file string) error {
	c, err := o.s3()
	if err != nil {
		return err
	}
	if _, err := c.FPutObject(ctx, bucket, key, file, minio.PutObjectOptions{ContentType: "application/x-tar"}); err != nil {
		return fmt.Errorf("s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Target is a store a bundle can be changed in (signed): a layout directory or a registry.
type Target interface {
	content.Storage
	content.Resolver
	content.Tagger
}

// OpenTarget opens a writable store at a (an OCI layout directory or a registry) and resolves
// the bundle it names. A tar or S3 object is read-only: sign the layout or registry copy and
// export it again.
func OpenTarget(ctx context.Context, a Address, o Options) (Target, ocispec.Descriptor, error) {
	var t Target
	ref := a.Reference
	switch a.Kind {
	case KindRegistry:
		repo, err := o.referencedRepository(a)
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		t, ref = repo, a.Ref.Reference
	case KindLayout:
		if fi, err := os.Stat(filepath.Join(a.Path, "oci-layout")); err != nil || fi.IsDir() {
			return nil, ocispec.Descriptor{}, fmt.Errorf("%s: not an OCI layout directory", a.Path)
		}
		s, err := oci.NewWithContext(ctx, a.Path)
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		t = s
		if ref == "" {
			var err error
			if ref, err = onlyBundleTag(ctx, nopCloser{s}, a); err != nil {
				return nil, ocispec.Descriptor{}, err
			}
		}
	default:
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: a %s cannot be changed in place; sign the layout directory or registry copy, then export it", a, a.Kind)
	}
	desc, err := t.Resolve(ctx, ref)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: resolve %q: %w", a, ref, err)
	}
	return t, desc, nil
}
