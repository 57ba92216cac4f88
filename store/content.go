package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"
)

// blobPath is where a blob lives in the content store. d must be a validated sha256 digest.
func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, "blobs", "sha256", d.Encoded())
}

// HasBlob reports whether the content store holds d.
func (s *Store) HasBlob(d digest.Digest) bool {
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return false
	}
	_, err := os.Stat(s.blobPath(d))
	return err == nil
}

// OpenBlob opens a stored blob for reading.
func (s *Store) OpenBlob(d digest.Digest) (*os.File, error) {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("%q: %w", d, ErrNotFound)
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	return f, err
}

// Fetch implements content.Fetcher over the content store, so a stored revision can be read
// like any other bundle source.
func (s *Store) Fetch(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return s.OpenBlob(desc.Digest)
}

// writeBlob streams desc from r into the content store: into tmp/, hashing every byte as it
// is written, then fsync and rename. Content whose size or digest differs from desc is
// refused and leaves nothing behind.
func (s *Store) writeBlob(r io.Reader, desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil || desc.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("blob %q: not a sha256 digest", desc.Digest)
	}
	if desc.Size < 0 {
		return fmt.Errorf("blob %s: negative size", desc.Digest)
	}
	tmp, direct, err := createBlobFile(filepath.Join(s.dir, "tmp"))
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	vr := content.NewVerifyReader(r, desc)
	if direct {
		err = copyDirect(tmp, vr)
	} else {
		// A large buffer: fewer read and write calls for the multi-hundred-MiB layers.
		_, err = io.CopyBuffer(&writeback{f: tmp}, vr, make([]byte, 1<<20))
	}
	if err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, mapVerifyErr(err))
	}
	if err := vr.Verify(); err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, mapVerifyErr(err))
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.blobPath(desc.Digest)); err != nil {
		return err
	}
	keep = true
	return syncDir(filepath.Dir(s.blobPath(desc.Digest)))
}

func mapVerifyErr(err error) error {
	if errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w (%v)", ErrDigestMismatch, err)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFileAtomic writes data to path so that a reader (or a crash) sees the old content or
// the new, never a part: temp file in the same directory, write, fsync, rename, fsync the
// directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return writeAtomic(path, mode, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// writeAtomic is WriteFileAtomic with the content written by fill.
func writeAtomic(path string, mode os.FileMode, fill func(*os.File) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = fill(tmp)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// writeback writes to f and asks the kernel to start writing each 8 MiB to disk as soon as it
// is complete, so the disk works while the next bytes are hashed and the final fsync has
// little left to wait for. (It also hides ReadFrom, so io.CopyBuffer uses its buffer.)
type writeback struct {
	f       *os.File
	written int64
	flushed int64
}

const writebackChunk = 8 << 20

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.written += int64(n)
	if w.written-w.flushed >= writebackChunk {
		// Best effort: a filesystem without sync_file_range still gets the fsync at the end.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.written-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.written
	}
	return n, err
}

// Direct writes: a blob goes from the hash's buffer to the disk without the page cache
// (O_DIRECT). Copying every byte into the cache cost more CPU than hashing it (a profile of a
// 2 GiB ingest: 2.3 s in write(2) against 1.2 s in SHA-256, on two cores), and the final
// fsync then had little to flush. The filesystem must accept O_DIRECT (ext4, xfs, btrfs do;
// tmpfs does not, and gets the page cache path).
const (
	directAlign = 4096    // the alignment O_DIRECT asks of buffer, offset and length
	directChunk = 4 << 20 // bytes per write
)

// createBlobFile creates a new file in dir for a blob, with O_DIRECT when the filesystem
// takes it; direct says which.
func createBlobFile(dir string) (f *os.File, direct bool, err error) {
	for range 10 {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, false, err
		}
		name := filepath.Join(dir, "blob-"+hex.EncodeToString(rnd[:]))
		f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_DIRECT, 0o600)
		if errors.Is(err, unix.EINVAL) {
			f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			return f, false, err
		}
		if !errors.Is(err, fs.ErrExist) {
			return f, err == nil, err
		}
	}
	return nil, false, err
}

// copyDirect copies r to f (opened with O_DIRECT) in aligned chunks; the tail that is not a
// multiple of the alignment is written after O_DIRECT is cleared from f.
func copyDirect(f *os.File, r io.Reader) error {
	raw := make([]byte, directChunk+directAlign)
	off := directAlign - int(uintptr(unsafe.Pointer(&raw[0]))%directAlign)
	buf := raw[off : off+directChunk]
	for {
		n, err := io.ReadFull(r, buf)
		if n == len(buf) {
			if _, werr := f.Write(buf); werr != nil {
				return werr
			}
		} else if n > 0 {
			aligned := n &^ (directAlign - 1)
			if aligned > 0 {
				if _, werr := f.Write(buf[:aligned]); werr != nil {
					return werr
				}
			}
			if aligned < n {
				flags, ferr := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
				if ferr == nil {
					_, ferr = unix.FcntlInt(f.Fd(), unix.F_SETFL, flags&^unix.O_DIRECT)
				}
				if ferr != nil {
					return ferr
				}
				if _, werr := f.Write(buf[aligned:n]); werr != nil {
					return werr
				}
			}
		}
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return nil
		case err != nil:
			return err
		}
	}
}
