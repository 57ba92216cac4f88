package bundles

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
)

// MaxArchiveBytes bounds a bundle archive before it is opened.
const MaxArchiveBytes = 8 << 30

// archiveBackend is an OCI image layout in a tar file (FILE.tar[:tag|@digest]), the form a
// bundle takes on a USB stick. It is read in place without extracting anything (stick.go) and
// written whole: a copy is staged as a layout directory (stagedSink) and the tar is written
// from it at Commit, atomically.
type archiveBackend struct{ onePlace }

func (archiveBackend) open(ctx context.Context, a Address, o Options) (Source, error) {
	return openArchive(ctx, a.Path, NewGuard(o.StallTimeout))
}

func (archiveBackend) create(ctx context.Context, a Address, o Options) (Sink, error) {
	abs, err := filepath.Abs(a.Path)
	if err != nil {
		return nil, err
	}
	return newStagedSink(ctx, o, "tar:"+abs, func(ctx context.Context, s *stagedSink) error {
		for i := range s.placed {
			s.placed[i].Where = a.Path
		}
		return writeArchiveFile(ctx, s.Store, s.placed, a.Path)
	})
}

func (archiveBackend) target(_ context.Context, a Address, _ Options) (Target, error) {
	return nil, errInPlace(a)
}

// stagedSink assembles a destination that is written whole (a tar file, an S3 object) in a
// layout directory of its own under the staging root, named after the destination, and
// writes it at Commit. A copy that stops leaves the directory: the next copy to the same
// destination finds the blobs it holds and does not send them again. Two copies to one
// destination at once are refused (a lock on the directory).
type stagedSink struct {
	*oci.Store
	placedList
	dir   string
	lock  *os.File
	write func(context.Context, *stagedSink) error
	done  bool
}

// stagingRoot is where destinations are staged: o.StagingDir, else the user's cache.
func stagingRoot(o Options) string {
	if o.StagingDir != "" {
		return o.StagingDir
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "ferry", "staging")
	}
	return filepath.Join(os.TempDir(), "ferry-staging")
}

func newStagedSink(ctx context.Context, o Options, dest string, write func(context.Context, *stagedSink) error) (*stagedSink, error) {
	sum := sha256.Sum256([]byte(dest))
	dir := filepath.Join(stagingRoot(o), hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s: another copy to this destination is running (staging %s is locked)", strings.TrimPrefix(strings.TrimPrefix(dest, "tar:"), "s3:"), dir)
	}
	// oras's uploads in progress are not content: a blob is renamed into blobs/ only once
	// complete, so what an interrupted copy left there is whole or absent.
	os.RemoveAll(filepath.Join(dir, "ingest"))
	store, err := oci.NewWithContext(ctx, dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("staging %s: %w", dir, err)
	}
	return &stagedSink{Store: store, dir: dir, lock: lock, write: write}, nil
}

// archiveOf is what an archive of the bundles placed holds: their index entries, and the
// blobs a thin copy of any of them left out.
func archiveOf(placed []Placed) (roots []ocispec.Descriptor, omit func(digest.Digest) bool) {
	var omits []func(digest.Digest) bool
	for _, p := range placed {
		roots = append(roots, p.roots...)
		if p.omit != nil {
			omits = append(omits, p.omit)
		}
	}
	if len(omits) == 0 {
		return roots, nil
	}
	return roots, func(d digest.Digest) bool {
		for _, o := range omits {
			if o(d) {
				return true
			}
		}
		return false
	}
}

func (s *stagedSink) Commit(ctx context.Context) ([]Placed, error) {
	if err := s.write(ctx, s); err != nil {
		return nil, err
	}
	s.done = true
	return s.placed, nil
}

// Close removes the staging directory once the destination is written, or when it holds no
// blob (a copy refused before it sent anything leaves nothing behind); otherwise it is kept
// for the next copy.
func (s *stagedSink) Close() error {
	if blobs, _ := os.ReadDir(filepath.Join(s.dir, ocispec.ImageBlobsDir, "sha256")); s.done || len(blobs) == 0 {
		os.RemoveAll(s.dir)
	}
	return s.lock.Close()
}

// writeArchiveFile writes the archive of the bundles placed in src at path, atomically: a
// temp file beside it is written, synced and renamed.
func writeArchiveFile(ctx context.Context, src content.Fetcher, placed []Placed, path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	roots, omit := archiveOf(placed)
	if err := WriteArchive(ctx, src, roots, tmp, omit); err != nil {
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
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// WriteArchive writes the OCI layout holding roots and everything they reach in src to w as
// a tar with the fixed entry metadata of SPEC §3: index.json lists roots (a tag as its
// reference name), blobs are sorted, so the same content always gives the same bytes. Each
// blob is digest-checked as it is read. A blob for which omit says true is left out unless it
// is a manifest (a thin archive, for a node that holds the rest).
func WriteArchive(ctx context.Context, src content.Fetcher, roots []ocispec.Descriptor, w io.Writer, omit func(digest.Digest) bool) error {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	tagged := map[digest.Digest]bool{}
	for _, r := range roots {
		if r.Annotations[ocispec.AnnotationRefName] != "" {
			tagged[r.Digest] = true
		}
	}
	seenRoot := map[string]bool{}
	blobs := map[digest.Digest]ocispec.Descriptor{}
	for _, r := range roots {
		name := r.Annotations[ocispec.AnnotationRefName]
		if name == "" && tagged[r.Digest] {
			continue // listed under its tag
		}
		if k := name + "@" + r.Digest.String(); !seenRoot[k] {
			seenRoot[k] = true
			idx.Manifests = append(idx.Manifests, r)
		}
		graph, err := ImageBlobs(ctx, src, r)
		if err != nil {
			return err
		}
		for _, d := range graph {
			if _, ok := blobs[d.Digest]; ok {
				continue
			}
			if omit != nil && !IsManifest(d.MediaType) && omit(d.Digest) {
				continue
			}
			blobs[d.Digest] = d
		}
	}
	sortDescriptors(idx.Manifests)
	index, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}
	names := make([]string, 0, len(blobs))
	byName := map[string]ocispec.Descriptor{}
	algs := map[string]bool{}
	for d, desc := range blobs {
		n := ocispec.ImageBlobsDir + "/" + d.Algorithm().String() + "/" + d.Encoded()
		names, byName[n], algs[d.Algorithm().String()] = append(names, n), desc, true
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX, Typeflag: tar.TypeDir})
	}
	file := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: size}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	if err := dir(ocispec.ImageBlobsDir); err != nil {
		return err
	}
	var algNames []string
	for a := range algs {
		algNames = append(algNames, a)
	}
	sort.Strings(algNames)
	next := 0
	for _, a := range algNames {
		if err := dir(ocispec.ImageBlobsDir + "/" + a); err != nil {
			return err
		}
		for ; next < len(names) && strings.HasPrefix(names[next], ocispec.ImageBlobsDir+"/"+a+"/"); next++ {
			if err := writeBlob(ctx, src, byName[names[next]], names[next], file); err != nil {
				return err
			}
		}
	}
	if err := file(ocispec.ImageIndexFile, int64(len(index)), strings.NewReader(string(index))); err != nil {
		return err
	}
	if err := file(ocispec.ImageLayoutFile, int64(len(layout)), strings.NewReader(string(layout))); err != nil {
		return err
	}
	return tw.Close()
}

// writeBlob copies one blob into the archive, checking its size and digest as it goes.
func writeBlob(ctx context.Context, src content.Fetcher, d ocispec.Descriptor, name string, file func(string, int64, io.Reader) error) error {
	rc, err := src.Fetch(ctx, d)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer rc.Close()
	vr := content.NewVerifyReader(rc, d)
	if err := file(name, d.Size, vr); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if err := vr.Verify(); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return nil
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
