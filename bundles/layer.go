package bundles

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on a component layer (SPEC §3). A layer over any of them is refused whole.
const (
	MaxLayerBytes   = 512 << 20 // uncompressed bytes of all files in one layer
	MaxLayerEntries = 10_000
	MaxFileBytes    = 64 << 20
	MaxPathLength   = 4096
)

// ErrUnsafePath is returned for a path that would leave its root: absolute, "..", or through
// a symlink.
var ErrUnsafePath = errors.New("unsafe path")

// PackDir writes the files under root as a reproducible component layer (SPEC §3) to w.
// Symlinks, devices and other special files are refused, as is anything over the layer limits,
// so a layer Ferry writes is always one Ferry reads.
func PackDir(root string, w io.Writer) error { return PackFiles(root, ".", nil, w) }

// PackFiles writes the directory dir (relative to root, "." for root itself) and the extra
// files (relative to root) as one reproducible component layer rooted at root: what a
// kustomization in dir reaches outside it (../base) travels with it. Names are checked to be
// clean and inside root; symlinks and special files are refused as by PackDir.
func PackFiles(root, dir string, extra []string, w io.Writer) error {
	set := map[string]bool{}
	addParents := func(name string) {
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			set[d] = true
		}
	}
	if dir != "." {
		set[dir] = true
		addParents(dir)
	}
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(dir)), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s: %w: symlinks are not allowed in a component", p, ErrUnsafePath)
		}
		set[filepath.ToSlash(rel)] = true
		if len(set) > MaxLayerEntries {
			return fmt.Errorf("%s: more than %d entries", root, MaxLayerEntries)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range extra {
		clean, err := cleanEntryName(name)
		if err != nil || clean != name {
			return fmt.Errorf("%q: %w: not a clean path inside the layer", name, ErrUnsafePath)
		}
		set[name] = true
		addParents(name)
	}
	if len(set) > MaxLayerEntries {
		return fmt.Errorf("%s: more than %d entries", root, MaxLayerEntries)
	}
	entries := make([]string, 0, len(set))
	for e := range set {
		entries = append(entries, e)
	}
	return packEntries(root, entries, w)
}

// packEntries writes the entries (slash-separated, relative to root) as a layer, sorted.
func packEntries(root string, entries []string, w io.Writer) error {
	sort.Strings(entries)
	for _, name := range entries {
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			return err
		}
		switch mode := fi.Mode(); {
		case mode&fs.ModeSymlink != 0:
			return fmt.Errorf("%s: %w: symlinks are not allowed in a component", name, ErrUnsafePath)
		case mode.IsDir(), mode.IsRegular():
		default:
			return fmt.Errorf("%s: not a regular file or directory (%s)", name, mode)
		}
	}

	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	// The zero gzip.Header has no name and mtime 0; OS must be set to "unknown" explicitly.
	gz.OS = 255
	tw := tar.NewWriter(gz)
	var total int64
	for _, name := range entries {
		full := filepath.Join(root, filepath.FromSlash(name))
		info, err := os.Lstat(full)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: name, ModTime: epoch}
		if info.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, name+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		if !info.Mode().IsRegular() { // changed since the walk
			return fmt.Errorf("%s: no longer a regular file", full)
		}
		if info.Size() > MaxFileBytes {
			return fmt.Errorf("%s: %d bytes, over the %d-byte limit for one file", full, info.Size(), MaxFileBytes)
		}
		if total += info.Size(); total > MaxLayerBytes {
			return fmt.Errorf("%s: component over the %d-byte limit", root, MaxLayerBytes)
		}
		hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, info.Size(), 0o644
		if info.Mode().Perm()&0o100 != 0 {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if err := copyFile(tw, full, info.Size()); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// epoch is the fixed time of every tar entry; the zero time.Time would not encode as 0.
var epoch = unixZero()

func copyFile(w io.Writer, name string, size int64) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size+1))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("%s: changed size while being packed", name)
	}
	return nil
}

// File is one regular file of a component layer, held in memory.
type File struct {
	Name string // relative, slash-separated, clean
	Mode int64  // 0644 or 0755
	Data []byte
}

// Files is the validated content of a component layer, sorted by name.
type Files []File

// Get returns the file with this name.
func (fs Files) Get(name string) (File, bool) {
	i := sort.Search(len(fs), func(i int) bool { return fs[i].Name >= name })
	if i < len(fs) && fs[i].Name == name {
		return fs[i], true
	}
	return File{}, false
}

// ReadLayer reads a component layer (gzip tar) into memory, enforcing SPEC §3: relative clean
// names, no duplicates, regular files and directories only, and the size and count limits. The
// layer is refused whole on the first violation; the error names the entry.
func ReadLayer(r io.Reader) (Files, error) {
	var files Files
	err := walkLayer(r, func(name string, mode int64, size int64, data io.Reader) error {
		var buf bytes.Buffer
		buf.Grow(int(size))
		if _, err := io.Copy(&buf, data); err != nil {
			return err
		}
		files = append(files, File{Name: name, Mode: mode, Data: buf.Bytes()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// CheckLayer applies ReadLayer's checks (one gzip member, names, types, sizes, nothing
// after the archive) to a layer streamed from r, keeping none of its content: what ingest
// and `ferry bundle verify` run, in constant memory, whatever the layer's size.
func CheckLayer(r io.Reader) error {
	buf := make([]byte, 64<<10)
	return walkLayer(r, func(_ string, _ int64, _ int64, data io.Reader) error {
		_, err := io.CopyBuffer(io.Discard, data, buf)
		return err
	})
}

// walkLayer reads a component layer and hands each regular file to file, in archive order,
// refusing what ReadLayer documents.
func walkLayer(r io.Reader, file func(name string, mode, size int64, data io.Reader) error) error {
	br := bufio.NewReader(r)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("layer: not gzip: %w", err)
	}
	defer gz.Close()
	// One gzip member only: Go would otherwise join concatenated members silently, and a
	// second member could hide a second tar stream behind the first.
	gz.Multistream(false)
	// Bound the decompressed stream too: a gzip bomb stops at the limit, not at the disk.
	limited := &io.LimitedReader{R: gz, N: MaxLayerBytes + 64<<20}
	tr := tar.NewReader(limited)
	seen := map[string]bool{}
	var total int64
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if limited.N <= 0 {
				return fmt.Errorf("layer: over the %d-byte limit", MaxLayerBytes)
			}
			return fmt.Errorf("layer: %w", err)
		}
		if n >= MaxLayerEntries {
			return fmt.Errorf("layer: more than %d entries", MaxLayerEntries)
		}
		name, err := cleanEntryName(hdr.Name)
		if err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		if seen[name] {
			return fmt.Errorf("layer entry %q: duplicate", hdr.Name)
		}
		seen[name] = true
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return fmt.Errorf("layer entry %q: type %q not allowed (regular files and directories only)", hdr.Name, string(hdr.Typeflag))
		}
		if hdr.Size < 0 || hdr.Size > MaxFileBytes {
			return fmt.Errorf("layer entry %q: size %d over the %d-byte limit", hdr.Name, hdr.Size, MaxFileBytes)
		}
		if total += hdr.Size; total > MaxLayerBytes {
			return fmt.Errorf("layer: over the %d-byte limit", MaxLayerBytes)
		}
		mode := int64(0o644)
		if hdr.Mode&0o100 != 0 {
			mode = 0o755
		}
		if err := file(name, mode, hdr.Size, tr); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	// The tar's end-of-archive blocks may be followed by zero padding, nothing else; after the
	// gzip member, nothing at all.
	rest, err := io.ReadAll(io.LimitReader(gz, 1<<20+1))
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	if len(rest) > 1<<20 || bytes.ContainsFunc(rest, func(r rune) bool { return r != 0 }) {
		return errors.New("layer: data after the end of the tar archive")
	}
	if _, err := br.ReadByte(); err == nil {
		return errors.New("layer: data after the gzip stream")
	}
	return nil
}

// cleanEntryName checks a tar entry name against SPEC §3 and returns it without a trailing
// slash.
func cleanEntryName(name string) (string, error) {
	if len(name) == 0 || len(name) > MaxPathLength {
		return "", fmt.Errorf("%w: empty or longer than %d", ErrUnsafePath, MaxPathLength)
	}
	if strings.ContainsAny(name, "\\\x00") {
		return "", fmt.Errorf("%w: backslash or NUL in name", ErrUnsafePath)
	}
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: not UTF-8", ErrUnsafePath)
	}
	trimmed := strings.TrimSuffix(name, "/")
	if path.IsAbs(trimmed) || trimmed == "" {
		return "", fmt.Errorf("%w: absolute", ErrUnsafePath)
	}
	if path.Clean(trimmed) != trimmed {
		return "", fmt.Errorf("%w: not clean (want %q)", ErrUnsafePath, path.Clean(trimmed))
	}
	for _, part := range strings.Split(trimmed, "/") {
		if part == ".." || part == "." {
			return "", fmt.Errorf("%w: %q element", ErrUnsafePath, part)
		}
	}
	return trimmed, nil
}

// WriteTo writes the files under dir, creating directories as needed. dir must exist; names
// were validated by ReadLayer, and the check is repeated here because Files can be built by
// hand.
func (fs Files) WriteTo(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, f := range fs {
		if _, err := cleanEntryName(f.Name); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		if d := path.Dir(f.Name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		if err := root.WriteFile(f.Name, f.Data, os.FileMode(f.Mode)); err != nil {
			return err
		}
	}
	return nil
}

func unixZero() time.Time { return time.Unix(0, 0).UTC() }
