package bundles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
)

// A layout directory or an archive on a stick is read through one of the two file systems
// below: every open and every read has a deadline (Guard, stallReader), so a stick that stops
// answering fails the admission with ErrStalled instead of holding it, and the store's lock,
// for ever.

// stickFiles is a layout or archive whose files open with a deadline, their reads bound to
// ctx.
type stickFiles interface {
	open(ctx context.Context, name string) (fs.File, error)
}

// stickSource reads blobs through its files with the context of each Fetch, so an
// admission that gives up (its first blob failed) stops the reads of the others at once.
type stickSource struct {
	nopCloser
	files stickFiles
	close func() error
}

// Fetch opens the blob d as oras's read-only storage does, with ctx on its reads.
func (s stickSource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.Digest, d.MediaType, errdef.ErrInvalidDigest)
	}
	f, err := s.files.open(ctx, path.Join(ocispec.ImageBlobsDir, d.Digest.Algorithm().String(), d.Digest.Encoded()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %s: %w", d.Digest, d.MediaType, errdef.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (s stickSource) Close() error {
	if s.close != nil {
		return s.close()
	}
	return nil
}

// newStickSource indexes files as an OCI layout (oci-layout, index.json and the manifests
// it lists, read now, with ctx).
func newStickSource(ctx context.Context, files stickFiles, closeFn func() error) (stickSource, error) {
	s, err := oci.NewFromFS(ctx, boundFiles{ctx, files})
	if err != nil {
		return stickSource{}, err
	}
	return stickSource{nopCloser{s}, boundFiles{ctx, files}, closeFn}, nil
}

// boundFiles is files as an fs.FS, for what oras reads through one (the index, the manifests
// it lists, Exists). Open has no context: the one the source was opened with is kept.
type boundFiles struct {
	ctx context.Context
	stickFiles
}

func (b boundFiles) Open(name string) (fs.File, error) { return b.open(b.ctx, name) }

// layoutFiles is a layout directory read through LayoutFS (regular files only, no symlink,
// no hard link) with a deadline on each open and read.
type layoutFiles struct {
	layout LayoutFS
	guard  *Guard
}

func (l layoutFiles) open(ctx context.Context, name string) (fs.File, error) {
	full := l.layout.root + "/" + name
	f, fi, err := l.guard.openFile(ctx, full, func() (*os.File, error) {
		file, err := l.layout.Open(name)
		if err != nil {
			return nil, err
		}
		return file.(*os.File), nil
	})
	if err != nil {
		return nil, err
	}
	return &stallFile{newStallReader(ctx, full, f, 0, fi.Size(), l.guard.Timeout()), fi, f.Close}, nil
}

// openLayout opens the layout directory at dir.
func openLayout(ctx context.Context, dir string, g *Guard) (stickSource, error) {
	var fi fs.FileInfo
	err := g.Do(ctx, "stat", dir, func() error {
		var err error
		fi, err = os.Stat(dir)
		return err
	})
	if errors.Is(err, ErrStalled) || ctx.Err() != nil {
		return stickSource{}, err
	}
	if err != nil || !fi.IsDir() {
		return stickSource{}, fmt.Errorf("%s: not an OCI layout directory", dir)
	}
	s, err := newStickSource(ctx, layoutFiles{NewLayoutFS(dir), g}, nil)
	if err != nil {
		return stickSource{}, fmt.Errorf("%s: %w", dir, err)
	}
	return s, nil
}

// archiveEntry is where a regular file of an archive lies in it.
type archiveEntry struct {
	off, size int64
	info      fs.FileInfo
}

// archiveFiles is an archive read from the one file that was checked, at the offsets the
// check found: nothing reopens its path, which the stick may have swapped since (for a FIFO, a
// symlink, another archive), and every read has a deadline.
type archiveFiles struct {
	f       io.ReaderAt
	path    string
	entries map[string]archiveEntry
	timeout time.Duration
}

func (a archiveFiles) open(ctx context.Context, name string) (fs.File, error) {
	e, ok := a.entries[name]
	if !fs.ValidPath(name) || !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &stallFile{newStallReader(ctx, a.path+" ("+name+")", a.f, e.off, e.size, a.timeout), e.info, nil}, nil
}

// openArchive checks the archive at path (CheckArchive) and opens it as a source bound to the
// file that was checked.
func openArchive(ctx context.Context, path string, g *Guard) (stickSource, error) {
	f, fi, err := g.openFile(ctx, path, func() (*os.File, error) { return OpenRegular(path) })
	if err != nil {
		return stickSource{}, err
	}
	r := newStallReader(ctx, path, f, 0, fi.Size(), g.Timeout())
	entries, err := checkArchive(r, fi.Size(), path)
	r.Close()
	if err != nil {
		f.Close()
		return stickSource{}, err
	}
	s, err := newStickSource(ctx, archiveFiles{f, path, entries, g.Timeout()}, f.Close)
	if err != nil {
		f.Close()
		return stickSource{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
