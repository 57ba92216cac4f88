package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/ferrygitops/ferry/bundles"
)

// candidate is a bundle a source offers: where to read it, and what identifies this copy so
// that it is verified once, not at every poll.
type candidate struct {
	addr bundles.Address
	opts bundles.Options
	// key changes when the copy changes: a digest, an ETag, a path with size and time.
	key string
	// receiptDir, when set, is where the node's receipt is written once the candidate was
	// read (a stick's receiptDir), through guard.
	receiptDir string
	guard      *bundles.Guard
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
		return &registrySource{cfg: c.Registry}
	case c.USB != nil:
		return &usbSource{cfg: c.USB, seen: map[string]stamp{}, guard: bundles.NewGuard(c.USB.StallTimeout.Duration)}
	default:
		return s3Source{c.S3}
	}
}

// sourceOf builds the poller of a configured source; a test puts in one that never answers.
var sourceOf = newSource

// registrySource polls a repository. It keeps the registry's last answer for the followed
// tag, so that the next HEAD is conditional (resolveTag); poll is called from one goroutine at
// a time.
type registrySource struct {
	cfg  *RegistrySource
	last resolved
	// repo is kept between polls, with its connections and its auth cache: a registry
	// with token auth is not asked for a new token at every poll.
	repo *remote.Repository
}

func (r *registrySource) interval() time.Duration { return r.cfg.Interval.or(time.Minute) }

// poll resolves the tag (or the highest tag in the range) with one HEAD request, conditional
// on the last answer's ETag, so an idle poll costs a request or two (a 304 where the registry
// honours If-None-Match) and the bundle is read only when its digest changed. The tag list of
// a range is read whole at each poll: distribution sends no ETag for it and ignores
// If-None-Match there.
func (r *registrySource) poll(ctx context.Context) ([]candidate, error) {
	opts := bundles.Options{PlainHTTP: r.cfg.PlainHTTP, DockerConfig: r.cfg.DockerConfig, CAFile: r.cfg.CAFile}
	if r.repo == nil {
		base, err := bundles.ParseAddress("oci://" + r.cfg.Repository)
		if err != nil {
			return nil, err
		}
		if r.repo, err = opts.Repository(base); err != nil {
			return nil, err
		}
	}
	repo := r.repo
	var err error
	tag := r.cfg.Tag
	if tag == "" {
		if tag, err = bundles.HighestTag(ctx, repo, r.cfg.SemVer); err != nil {
			return nil, fmt.Errorf("%s: %w", r.cfg.Repository, err)
		}
	}
	res, err := resolveTag(ctx, repo, tag, r.last)
	if err != nil {
		return nil, fmt.Errorf("%s:%s: %w", r.cfg.Repository, tag, err)
	}
	r.last = res
	addr, err := bundles.ParseAddress("oci://" + r.cfg.Repository + "@" + res.digest.String())
	if err != nil {
		return nil, err
	}
	return []candidate{{addr: addr, opts: opts, key: res.digest.String()}}, nil
}

type s3Source struct{ cfg *S3Source }

func (s s3Source) interval() time.Duration { return s.cfg.Interval.or(5 * time.Minute) }

func (s s3Source) options() bundles.Options {
	return bundles.Options{S3Endpoint: s.cfg.Endpoint, S3Region: s.cfg.Region, S3CredentialsFile: s.cfg.CredentialsFile}
}

// poll lists the archives under the prefix, newest first; each is read once per ETag. The
// listing is one request that cannot be conditional: S3 takes If-None-Match and
// If-Modified-Since on GetObject, HeadObject and CopyObject only, not on ListObjectsV2.
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
// receipt is written only when ReceiptDir is configured. Every call on a stick (listing, stat,
// open, read, the receipt) goes through guard with the source's stall deadline, and a
// stick whose call is stuck is left out of the scans until that call returns, so one stick
// that stops answering neither stops the scan of the others nor leaves a goroutine behind
// at each scan.
type usbSource struct {
	cfg   *USBSource
	seen  map[string]stamp // last scan: path → size and time
	guard *bundles.Guard
}

type stamp struct {
	size   int64
	mtime  time.Time
	layout bool // an OCI layout directory, not an archive
}

// maxUSBDepth bounds how deep a stick is searched; maxUSBEntries how much of it is looked at.
const (
	maxUSBDepth   = 3
	maxUSBEntries = 10_000
)

func (u *usbSource) interval() time.Duration { return u.cfg.Interval.or(2 * time.Second) }

// poll returns the archives and layouts whose size and time did not change since the last
// scan: a file still being copied is left for a later scan. The error reports the calls on
// a stick that stopped answering during this scan (not those left out for an earlier one).
func (u *usbSource) poll(ctx context.Context) ([]candidate, error) {
	s := scan{ctx: ctx, guard: u.guard, now: map[string]stamp{}}
	for _, root := range u.cfg.Paths {
		s.entries = 0
		s.dir(root, 0)
	}
	var out []candidate
	for p, st := range s.now {
		if prev, ok := u.seen[p]; !ok || prev != st {
			continue // new or still changing
		}
		// Not ParseAddress, which stats the path: the scan knows what it found.
		addr := bundles.Address{Kind: bundles.KindTar, Raw: p, Path: p}
		if st.layout {
			addr.Kind = bundles.KindLayout
		}
		c := candidate{addr: addr, opts: bundles.Options{StallTimeout: u.guard.Timeout()},
			key: fmt.Sprintf("%s:%d:%d", p, st.size, st.mtime.UnixNano())}
		if u.cfg.ReceiptDir != "" {
			c.receiptDir, c.guard = u.receiptDir(p), u.guard
		}
		out = append(out, c)
	}
	u.seen = s.now
	return out, errors.Join(s.stalls...)
}

// scan is one scan of a source's mount points.
type scan struct {
	ctx     context.Context
	guard   *bundles.Guard
	now     map[string]stamp
	entries int
	stalls  []error
}

// failed keeps err if it is a stick that stopped answering now; other errors (a stick pulled
// during the scan, a permission) and calls left out for an earlier stall are skipped quietly.
func (s *scan) failed(err error) {
	var se *bundles.StallError
	if errors.As(err, &se) && se.Stuck == "" {
		s.stalls = append(s.stalls, err)
	}
}

// dir looks at the directory p, depth levels below a mount point: an OCI layout is a
// candidate, anything else is searched for archives and layouts, down to directories
// maxUSBDepth+1 levels below the mount point (/media/a/b/c/d). Symlinks are not followed: a
// stick must not point the daemon at node files.
func (s *scan) dir(p string, depth int) {
	if s.ctx.Err() != nil {
		return
	}
	if s.entries++; s.entries > maxUSBEntries {
		return
	}
	if st, ok, err := layoutStamp(s.ctx, s.guard, p); err != nil {
		s.failed(err)
		return
	} else if ok {
		s.now[p] = st
		return
	}
	entries, err := s.guard.ReadDir(s.ctx, p, maxUSBEntries+1)
	if err != nil {
		s.failed(err)
		return
	}
	for _, e := range entries {
		if s.ctx.Err() != nil || s.entries >= maxUSBEntries {
			return
		}
		child := filepath.Join(p, e.Name())
		hidden := strings.HasPrefix(e.Name(), ".")
		switch {
		case e.IsDir():
			if depth <= maxUSBDepth && !hidden {
				s.dir(child, depth+1)
				continue
			}
		case e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".tar") && !hidden:
			// Not e.Info(), which would stat outside the guard.
			if fi, err := s.guard.Lstat(s.ctx, child); err != nil {
				s.failed(err)
			} else if fi.Mode().IsRegular() {
				s.now[child] = stamp{size: fi.Size(), mtime: fi.ModTime()}
			}
		}
		s.entries++
	}
}

// layoutStamp identifies an OCI layout directory by its index and blobs, in one guarded
// call: a stall anywhere in it leaves the layout out.
func layoutStamp(ctx context.Context, g *bundles.Guard, dir string) (stamp, bool, error) {
	var (
		st stamp
		ok bool
	)
	err := g.Do(ctx, "scan", dir, func() error {
		if _, err := os.Lstat(filepath.Join(dir, "oci-layout")); err != nil {
			return nil
		}
		ok = true
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
		return nil
	})
	if err != nil || !ok {
		return stamp{}, false, err
	}
	st.layout = true
	return st, true, nil
}

// receiptDir is where the receipt goes for a bundle read from path: ReceiptDir if absolute,
// else ReceiptDir on the stick path is on (stickRoot).
func (u *usbSource) receiptDir(path string) string {
	if filepath.IsAbs(u.cfg.ReceiptDir) {
		return u.cfg.ReceiptDir
	}
	for _, root := range u.cfg.Paths {
		if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.Join(stickRoot(root, path), u.cfg.ReceiptDir)
		}
	}
	return filepath.Join(filepath.Dir(path), u.cfg.ReceiptDir)
}
