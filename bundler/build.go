package bundler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

// ErrDirty is returned when the tree has uncommitted changes and Options.AllowDirty is false.
var ErrDirty = errors.New("the Git working tree has uncommitted changes")

// Options configure Build.
type Options struct {
	// Dir holds ferry.yaml; it must be inside a Git working tree unless AllowDirty is set.
	Dir string
	// Revision overrides the bundle revision; 0 means the number of commits reachable from
	// HEAD, which increases along a branch.
	Revision uint64
	// Created overrides the creation time; zero means the commit time of HEAD (reproducible).
	Created time.Time
	// AllowDirty builds a tree with uncommitted changes (or outside Git) and marks it dirty.
	AllowDirty bool
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Tagger is where Build stores the bundle: a content store that can name it.
type Tagger interface {
	content.Pusher
	content.Tagger
}

// Result is what Build made.
type Result struct {
	Descriptor ocispec.Descriptor
	Metadata   *bundles.Metadata
}

// Build packs the tree in opts.Dir into a bundle in dst, tagged with the bundle's version.
func Build(ctx context.Context, dst Tagger, opts Options) (*Result, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	spec, err := bundles.LoadSpec(dir)
	if err != nil {
		return nil, err
	}
	prov, err := provenance(dir)
	switch {
	case errors.Is(err, git.ErrRepositoryNotExists) && opts.AllowDirty:
		prov = &gitInfo{dirty: true}
	case errors.Is(err, git.ErrRepositoryNotExists):
		return nil, fmt.Errorf("%s is not in a Git repository: provenance is required (use --allow-dirty to build anyway, marked dirty)", dir)
	case err != nil:
		return nil, fmt.Errorf("git provenance of %s: %w", dir, err)
	}
	if prov.dirty && !opts.AllowDirty {
		return nil, fmt.Errorf("%s: %w (commit them, or use --allow-dirty)", dir, ErrDirty)
	}
	meta := &bundles.Metadata{
		SchemaVersion: bundles.SchemaVersion,
		Name:          spec.Metadata.Name,
		Version:       spec.Spec.Version,
		Revision:      opts.Revision,
		Created:       opts.Created,
		Source:        bundles.Provenance{URL: prov.url, Commit: prov.commit, Dirty: prov.dirty},
	}
	if meta.Revision == 0 {
		if prov.count == 0 {
			return nil, errors.New("no revision: not built from a Git commit, so --revision is required")
		}
		meta.Revision = prov.count
	}
	if meta.Created.IsZero() {
		if prov.time.IsZero() {
			return nil, errors.New("no creation time: not built from a Git commit, so set SOURCE_DATE_EPOCH")
		}
		meta.Created = prov.time
	}
	meta.Created = meta.Created.UTC().Truncate(time.Second)

	layers := make([][]byte, len(spec.Spec.Components))
	for i, c := range spec.Spec.Components {
		root, err := bundles.ResolveInside(dir, c.Kustomize.Path)
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		var buf bytes.Buffer
		if err := bundles.PackDir(root, &buf); err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		layers[i] = buf.Bytes()
		ks := *c.Kustomize
		ks.Path = "." // the layer is rooted at the component's directory (SPEC §2)
		// Prove the component builds from exactly what the node will receive: the layer
		// read back by the reader the node uses, rendered by the renderer the node uses.
		files, err := bundles.ReadLayer(bytes.NewReader(layers[i]))
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		objs, err := render.Kustomize(files, ks)
		if err != nil {
			return nil, fmt.Errorf("component %s (%s): %w", c.Name, c.Kustomize.Path, err)
		}
		meta.Components = append(meta.Components, bundles.Component{Name: c.Name, Type: "kustomize", Spec: ks})
		opts.Log.Info("packed component", "component", c.Name, "bytes", buf.Len(), "objects", objs.Size())
	}
	desc, err := bundles.Pack(ctx, dst, meta, layers)
	if err != nil {
		return nil, err
	}
	if err := dst.Tag(ctx, desc, meta.Version); err != nil {
		return nil, fmt.Errorf("tag %s: %w", meta.Version, err)
	}
	return &Result{Descriptor: desc, Metadata: meta}, nil
}

type gitInfo struct {
	url, commit string
	time        time.Time
	count       uint64
	dirty       bool
}

// provenance reads HEAD, its commit time, the number of commits reachable from it, the origin
// remote and whether the working tree is clean.
func provenance(dir string) (*gitInfo, error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil, err
	}
	head, err := repo.Head()
	if err != nil {
		return nil, fmt.Errorf("HEAD: %w", err)
	}
	commit, err := repo.CommitObject(head.Hash())
	if err != nil {
		return nil, err
	}
	info := &gitInfo{commit: head.Hash().String(), time: commit.Committer.When}
	iter, err := repo.Log(&git.LogOptions{From: head.Hash()})
	if err != nil {
		return nil, err
	}
	if err := iter.ForEach(func(*object.Commit) error { info.count++; return nil }); err != nil {
		return nil, err
	}
	if remote, err := repo.Remote("origin"); err == nil && len(remote.Config().URLs) > 0 {
		info.url = redactURL(remote.Config().URLs[0])
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	status, err := wt.Status()
	if err != nil {
		return nil, err
	}
	info.dirty = !status.IsClean()
	return info, nil
}

// redactURL drops credentials from a remote URL: they must never end up in a bundle.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		// scp-like (git@host:path) or a local path: no password to drop.
		if i := strings.Index(raw, "@"); i >= 0 && strings.Contains(raw[:i], ":") {
			return raw[i+1:]
		}
		return raw
	}
	u.User = nil
	return u.String()
}
