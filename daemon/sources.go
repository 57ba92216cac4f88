package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

// candidate is a bundle a source offers: where to read it, and what identifies this copy so
// that it is verified once, not at every poll.
type candidate struct {
	addr bundles.Address
	opts bundles.Options
	// key changes when the copy changes: a digest, an ETag, a path with size and time.
	key string
	// admitted, when set, runs after the bundle was admitted (the USB receipt).
	admitted func(*store.Revision)
	// progress, when set, counts the bytes copied into the store (ferry import).
	progress *bundles.Progress
}

// source finds candidates; poll is called every interval.
type source interface {
	poll(ctx context.Context) ([]candidate, error)
	interval() time.Duration
}

func newSource(c SourceConfig) source {
	switch {
	case c.Registry != nil:
		return registrySource{c.Registry}
	case c.USB != nil:
		return &usbSource{cfg: c.USB, seen: map[string]stamp{}}
	default:
		return s3Source{c.S3}
	}
}

type registrySource struct{ cfg *RegistrySource }

func (r registrySource) interval() time.Duration { return r.cfg.Interval.or(time.Minute) }

// poll resolves the tag (or the highest tag in the range) with one HEAD request, so an idle
// poll costs a request or two and the bundle is read only when its digest changed.
func (r registrySource) poll(ctx context.Context) ([]candidate, error) {
	opts := bundles.Options{PlainHTTP: r.cfg.PlainHTTP, DockerConfig: r.cfg.DockerConfig, CAFile: r.cfg.CAFile}
	base, err := bundles.ParseAddress("oci://" + r.cfg.Repository)
	if err != nil {
		return nil, err
	}
	repo, err := opts.Repository(base)
	if err != nil {
		return nil, err
	}
	tag := r.cfg.Tag
	if tag == "" {
		if tag, err = bundles.HighestTag(ctx, repo, r.cfg.SemVer); err != nil {
			return nil, fmt.Errorf("%s: %w", r.cfg.Repository, err)
		}
	}
	desc, err := repo.Resolve(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("%s:%s: %w", r.cfg.Repository, tag, err)
	}
	addr, err := bundles.ParseAddress("oci://" + r.cfg.Repository + "@" + desc.Digest.String())
	if err != nil {
		return nil, err
	}
	return []candidate{{addr: addr, opts: opts, key: desc.Digest.String()}}, nil
}

type s3Source struct{ cfg *S3Source }

func (s s3Source) interval() time.Duration { return s.cfg.Interval.or(5 * time.Minute) }

func (s s3Source) options() bundles.Options {
	return bundles.Options{S3Endpoint: s.cfg.Endpoint, S3Region: s.cfg.Region, S3CredentialsFile: s.cfg.CredentialsFile}
}

// poll lists the archives under the prefix, newest first; each is read once per ETag.
func (s s3Source) poll(ctx context.Context) ([]candidate, error) {
	objs, err := s.options().ListS3(ctx, s.cfg.Bucket, s.cfg.Prefix)
	if err != nil {
		return nil, err
	}
	var out []candidate
	for _, o := range objs {
		addr, err := bundles.ParseAddress("s3://" + s.cfg.Bucket + "/" + o.Key)
		if err != nil {
			continue
		}
		out = append(out, candidate{addr: addr, opts: s.options(), key: o.Key + "@" + o.ETag})
	}
	return out, nil
}

// usbSource scans mount points for bundle archives and OCI layouts. It only reads: a
// receipt is written only when ReceiptDir is configured.
type usbSource struct {
	cfg  *USBSource
	seen map[string]stamp // last scan: path → size and time
}

type stamp struct {
	size  int64
	mtime time.Time
}

// maxUSBDepth bounds how deep a stick is searched; maxUSBEntries how much of it is looked at.
const (
	maxUSBDepth   = 3
	maxUSBEntries = 10_000
)

func (u *usbSource) interval() time.Duration { return u.cfg.Interval.or(2 * time.Second) }

// poll returns the archives and layouts whose size and time did not change since the last
// scan: a file still being copied is left for a later scan.
func (u *usbSource) poll(ctx context.Context) ([]candidate, error) {
	now := map[string]stamp{}
	var out []candidate
	for _, root := range u.cfg.Paths {
		entries := 0
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || ctx.Err() != nil {
				return filepath.SkipDir
			}
			if entries++; entries > maxUSBEntries {
				return filepath.SkipAll
			}
			rel, _ := filepath.Rel(root, p)
			depth := strings.Count(rel, string(filepath.Separator))
			if d.IsDir() {
				if depth > maxUSBDepth || (strings.HasPrefix(d.Name(), ".") && p != root) {
					return filepath.SkipDir
				}
				if st, ok := layoutStamp(p); ok {
					now[p] = st
					return filepath.SkipDir
				}
				return nil
			}
			// Symlinks are not followed: a stick must not point the daemon at node files.
			if !d.Type().IsRegular() || !strings.HasSuffix(d.Name(), ".tar") || strings.HasPrefix(d.Name(), ".") {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				now[p] = stamp{fi.Size(), fi.ModTime()}
			}
			return nil
		})
	}
	for p, st := range now {
		if prev, ok := u.seen[p]; !ok || prev != st {
			continue // new or still changing
		}
		addr, err := bundles.ParseAddress(p)
		if err != nil {
			continue
		}
		c := candidate{addr: addr, key: fmt.Sprintf("%s:%d:%d", p, st.size, st.mtime.UnixNano())}
		if u.cfg.ReceiptDir != "" {
			c.admitted = u.receipt(p)
		}
		out = append(out, c)
	}
	u.seen = now
	return out, nil
}

// layoutStamp identifies an OCI layout directory by its index and blobs.
func layoutStamp(dir string) (stamp, bool) {
	if _, err := os.Lstat(filepath.Join(dir, "oci-layout")); err != nil {
		return stamp{}, false
	}
	var st stamp
	for _, p := range []string{filepath.Join(dir, "index.json"), filepath.Join(dir, "blobs", "sha256")} {
		_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				st.size += fi.Size()
				if fi.ModTime().After(st.mtime) {
					st.mtime = fi.ModTime()
				}
			}
			return nil
		})
	}
	return st, true
}

// receipt writes <ReceiptDir>/<name>-<revision>.json on the stick the bundle came from: a
// technician can see the node took it.
func (u *usbSource) receipt(path string) func(*store.Revision) {
	return func(r *store.Revision) {
		dir := u.cfg.ReceiptDir
		if !filepath.IsAbs(dir) {
			for _, root := range u.cfg.Paths {
				if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
					stick := root // the mount point is the watched path itself
					if first, _, ok := strings.Cut(rel, string(filepath.Separator)); ok {
						stick = filepath.Join(root, first)
					}
					dir = filepath.Join(stick, dir)
					break
				}
			}
		}
		host, _ := os.Hostname()
		b, _ := json.MarshalIndent(map[string]any{"node": host, "bundle": r.Name, "revision": r.Revision, "version": r.Version,
			"digest": r.Manifest.Digest, "admitted": r.Admitted, "from": path}, "", "  ")
		if err := os.MkdirAll(dir, 0o755); err == nil {
			_ = store.WriteFileAtomic(filepath.Join(dir, fmt.Sprintf("%s-%d.json", r.Name, r.Revision)), b, 0o644)
		}
	}
}
