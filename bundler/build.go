package bundler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.yaml.in/yaml/v3"
	"oras.land/oras-go/v2"
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
	// FromFlux, when set, is a Flux cluster directory (inside Dir's repository) to read
	// instead of ferry.yaml; Name and Version then name the bundle.
	FromFlux      string
	Name, Version string
	// SourceOverrides points Flux sources elsewhere, by "[namespace/]name" (namespace
	// flux-system when left out): a local directory (a vendored copy, or "." for this
	// repository) or a URL (a Git or Helm repository mirror, an oci:// mirror). A source the
	// directory does not define (gotk-sync.yaml left out of a published repository) can be
	// supplied this way too.
	SourceOverrides map[string]string
	// Remote says how to reach registries holding oci:// charts and carried images.
	Remote bundles.Options
	// ImageMirrors resolves and copies the carried images of a registry (the key, as image
	// names write it: docker.io, ghcr.io) from another (the value: host[:port][/path]), a
	// CI's pull-through cache or internal mirror. The bundle records the original names and
	// the digests the mirror served.
	ImageMirrors map[string]string
	// VerifyCommit, when set, requires the commit built from (and/or a tag on it) to be
	// signed by a key of its keyrings; the signer goes into the signed config. A tree with
	// uncommitted changes is then refused even with AllowDirty.
	VerifyCommit *VerifyCommit
	// NoRendered leaves the components' build output out of the bundle: nodes then build
	// each component again (SPEC §3, rendered layers).
	NoRendered bool
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Tagger is where Build stores the bundle: a content store that can name it.
type Tagger interface {
	content.Storage
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
	var verified *bundles.CommitSignature
	if opts.VerifyCommit != nil {
		switch {
		case prov.head == nil:
			return nil, fmt.Errorf("%s is not in a Git repository: --verify-commit needs the commit to verify", dir)
		case prov.dirty:
			return nil, fmt.Errorf("%s: %w: they are not part of commit %s, whose signature --verify-commit checks", dir, ErrDirty, prov.commit)
		}
		if verified, err = verifyCommit(prov.repo, prov.head, prov.root, *opts.VerifyCommit); err != nil {
			return nil, err
		}
		opts.Log.Info("commit signature verified", "commit", prov.commit, "mode", verified.Mode)
	}
	spec, bases, cleanup, specDigest, err := loadSpec(ctx, dir, prov, opts)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	meta := &bundles.Metadata{
		SchemaVersion: bundles.SchemaVersion,
		Name:          spec.Metadata.Name,
		Version:       spec.Spec.Version,
		Revision:      opts.Revision,
		Created:       opts.Created,
		Source:        bundles.Provenance{URL: prov.url, Commit: prov.commit, Dirty: prov.dirty, Spec: specDigest.String(), Verified: verified},
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
	var rendered [][]byte // of the components marked rendered, in order
	discovered := map[string]bool{}
	for i, c := range spec.Spec.Components {
		base := dir
		if b, ok := bases[c.Name]; ok {
			base = b
		}
		layer, comp, err := packComponent(ctx, opts.Remote, base, c)
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		// Prove the component builds from exactly what the node will receive: the layer
		// read back by the reader the node uses, rendered by the renderer the node uses.
		files, err := bundles.ReadLayer(bytes.NewReader(layer))
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		objs, err := render.Component(files, comp)
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		if comp.Helm != nil {
			ch, err := render.LoadChart(files)
			if err != nil {
				return nil, fmt.Errorf("component %s: %w", c.Name, err)
			}
			if c.Helm.Repository == "" && comp.Helm.Version != "" && comp.Helm.Version != ch.Metadata.Version {
				return nil, fmt.Errorf("component %s: helm.version %q, but the chart in %s is %s", c.Name, comp.Helm.Version, c.Helm.Chart, ch.Metadata.Version)
			}
			comp.Helm.Version = ch.Metadata.Version // the resolved version, recorded
		}
		layers[i] = layer
		if comp.CanRender() && !opts.NoRendered {
			// The node applies what was built here rather than building it again: reading
			// the output is linear in its size, building is quadratic in its objects.
			out, err := objs.AsYaml()
			if err == nil {
				out, err = bundles.GzipRendered(out)
			}
			if err != nil {
				return nil, fmt.Errorf("component %s: rendered output: %w", c.Name, err)
			}
			comp.Rendered = true
			rendered = append(rendered, out)
		}
		meta.Components = append(meta.Components, comp)
		for _, im := range render.Images(objs) {
			discovered[im] = true
		}
		opts.Log.Info("packed component", "component", c.Name, "type", comp.Type, "bytes", len(layer), "objects", objs.Size())
	}
	if im := spec.Spec.Images; im != nil {
		names := im.Include
		if im.Carry {
			for n := range discovered {
				names = append(names, n)
			}
		}
		if meta.Images, err = carryImages(ctx, dst, opts.Remote, opts.ImageMirrors, names, opts.Log); err != nil {
			return nil, err
		}
	}
	desc, err := bundles.Pack(ctx, dst, meta, append(layers, rendered...))
	if err != nil {
		return nil, err
	}
	if err := dst.Tag(ctx, desc, meta.Version); err != nil {
		return nil, fmt.Errorf("tag %s: %w", meta.Version, err)
	}
	return &Result{Descriptor: desc, Metadata: meta}, nil
}

// loadSpec reads ferry.yaml, or with opts.FromFlux the Flux directory, and returns the spec
// and, for components whose paths are relative to somewhere else than dir, that base.
// The returned cleanup removes what reading Flux sources cloned; call it when the build ends.
// loadSpec reads ferry.yaml, or makes the spec from a Flux directory; it returns the spec,
// the directories of components outside dir, a cleanup and the digest of the spec's YAML.
func loadSpec(ctx context.Context, dir string, prov *gitInfo, opts Options) (*bundles.Spec, map[string]string, func(), digest.Digest, error) {
	if opts.FromFlux == "" {
		spec, d, err := bundles.LoadSpecDigest(dir)
		return spec, nil, func() {}, d, err
	}
	if err := bundles.ValidateNameVersion(opts.Name, opts.Version); err != nil {
		return nil, nil, nil, "", fmt.Errorf("--from-flux: %w", err)
	}
	root := prov.root
	if root == "" {
		root = dir
	}
	flux, err := filepath.Abs(opts.FromFlux)
	if err != nil {
		return nil, nil, nil, "", err
	}
	t, err := loadFlux(ctx, opts.Remote, flux, checkout{root: root, originURL: prov.url, branch: prov.branch, commit: prov.commit}, opts.Name, opts.Version, opts.SourceOverrides, opts.Log)
	if err != nil {
		return nil, nil, nil, "", err
	}
	// The spec came from Flux objects, not a file: validate it the same way.
	b, err := yaml.Marshal(t.spec)
	if err == nil {
		_, _, err = bundles.ParseSpec("(from "+opts.FromFlux+")", b)
	}
	if err != nil {
		t.cleanup()
		return nil, nil, nil, "", err
	}
	return t.spec, t.bases, t.cleanup, digest.FromBytes(b), nil
}

type gitInfo struct {
	root        string
	branch      string // the checked-out branch, "" when HEAD is detached
	url, commit string
	time        time.Time
	count       uint64
	dirty       bool
	repo        *git.Repository
	head        *object.Commit
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
	info := &gitInfo{commit: head.Hash().String(), time: commit.Committer.When, repo: repo, head: commit}
	if head.Name().IsBranch() {
		info.branch = head.Name().Short()
	}
	if wt, err := repo.Worktree(); err == nil {
		info.root = wt.Filesystem.Root()
	}
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

// packKustomizeDir packs the kustomize component at root (a resolved directory inside the
// tree dir) as a layer, and returns the component's directory inside it: "." for a layer
// rooted at it, as when its kustomization reads nothing outside; otherwise the layer is rooted
// at the lowest directory holding all it reads (SPEC §3).
func packKustomizeDir(dir, root string, w io.Writer) (string, error) {
	extra, comp, err := closureOf(dir, root)
	if err != nil {
		return "", err
	}
	if len(extra) == 0 {
		return ".", bundles.PackDir(root, w)
	}
	lr := layerRoot(comp, extra)
	inLayer := comp
	if lr != "." {
		for i, f := range extra {
			extra[i] = strings.TrimPrefix(f, lr+"/")
		}
		inLayer = strings.TrimPrefix(comp, lr+"/")
		if comp == lr {
			inLayer = "."
		}
	}
	return inLayer, bundles.PackFiles(filepath.Join(dir, filepath.FromSlash(lr)), inLayer, extra, w)
}

// kustomizationIn returns the name of the kustomization file in dir on disk, "" if none.
func kustomizationIn(dir string) string {
	for _, k := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if fi, err := os.Stat(filepath.Join(dir, k)); err == nil && fi.Mode().IsRegular() {
			return k
		}
	}
	return ""
}

// closureOf returns what the kustomization in the component directory root (a resolved path
// inside the tree dir) reads outside it, relative to dir, and root relative to dir. A
// directory without a kustomization reads nothing else (Flux lists its manifests).
func closureOf(dir, root string) (extra []string, comp string, err error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, "", err
	}
	rel, err := filepath.Rel(realDir, root)
	if err != nil {
		return nil, "", err
	}
	comp = filepath.ToSlash(rel)
	if kustomizationIn(root) == "" {
		return nil, comp, nil
	}
	extra, err = kustomizeClosure(realDir, comp)
	return extra, comp, err
}

// packComponent packs one component's files into a layer (SPEC §3) and returns the spec as
// it reads inside the layer.
func packComponent(ctx context.Context, remote bundles.Options, dir string, c bundles.ComponentSpec) ([]byte, bundles.Component, error) {
	var buf bytes.Buffer
	if c.Kustomize != nil {
		root, err := bundles.ResolveInside(dir, c.Kustomize.Path)
		if err != nil {
			return nil, bundles.Component{}, err
		}
		ks := *c.Kustomize
		if ks.Path, err = packKustomizeDir(dir, root, &buf); err != nil {
			return nil, bundles.Component{}, err
		}
		return buf.Bytes(), bundles.Component{Name: c.Name, Type: bundles.TypeKustomize, Kustomize: &ks}, nil
	}
	// Helm: the chart directory under chart/, each values file under values/.
	stage, err := os.MkdirTemp("", "ferry-helm-*")
	if err != nil {
		return nil, bundles.Component{}, err
	}
	defer os.RemoveAll(stage)
	hs := *c.Helm
	switch {
	case strings.HasPrefix(c.Helm.Repository, "oci://"):
		version, err := fetchOCIChart(ctx, remote, c.Helm.Repository, c.Helm.Chart, c.Helm.Version, filepath.Join(stage, bundles.HelmChartDir))
		if err != nil {
			return nil, bundles.Component{}, err
		}
		hs.Version = version
	case c.Helm.Repository != "":
		version, err := fetchChart(ctx, c.Helm.Repository, c.Helm.Chart, c.Helm.Version, filepath.Join(stage, bundles.HelmChartDir))
		if err != nil {
			return nil, bundles.Component{}, err
		}
		hs.Version = version
	default:
		chartRoot, err := bundles.ResolveInside(dir, c.Helm.Chart)
		if err != nil {
			return nil, bundles.Component{}, err
		}
		if fi, err := os.Stat(chartRoot); err == nil && fi.Mode().IsRegular() {
			// A packaged chart (helm package's .tgz) in the tree: its files, checked as a
			// repository's would be.
			archive, err := bundles.ReadFileLimited(chartRoot, maxChartBytes)
			if err != nil {
				return nil, bundles.Component{}, err
			}
			if err := writeChartArchive(archive, filepath.Join(stage, bundles.HelmChartDir), c.Helm.Chart); err != nil {
				return nil, bundles.Component{}, err
			}
		} else if err := copyTree(chartRoot, filepath.Join(stage, bundles.HelmChartDir)); err != nil {
			return nil, bundles.Component{}, err
		}
	}
	hs.Chart = bundles.HelmChartDir
	hs.ValuesFiles = nil
	for i, v := range c.Helm.ValuesFiles {
		src, err := bundles.ResolveInside(dir, v)
		if err != nil {
			return nil, bundles.Component{}, err
		}
		name := fmt.Sprintf("%s/%02d-%s", bundles.HelmValuesDir, i, filepath.Base(src))
		if err := copyFile(src, filepath.Join(stage, filepath.FromSlash(name))); err != nil {
			return nil, bundles.Component{}, err
		}
		hs.ValuesFiles = append(hs.ValuesFiles, name)
	}
	if err := bundles.PackDir(stage, &buf); err != nil {
		return nil, bundles.Component{}, err
	}
	return buf.Bytes(), bundles.Component{Name: c.Name, Type: bundles.TypeHelm, Helm: &hs}, nil
}

// copyTree copies regular files and directories from src to dst, refusing symlinks (a chart
// must not reach outside the source tree through one).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s: %w: symlinks are not allowed in a chart", p, bundles.ErrUnsafePath)
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(p, target)
		}
		return fmt.Errorf("%s: not a regular file or directory", p)
	})
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// carryImages resolves each image name to a digest in its registry and copies the image's
// whole graph (index, manifests, configs, layers) into dst. Names are carried once each, in
// sorted order, so the metadata is the same whatever order they were found in.
func carryImages(ctx context.Context, dst content.Storage, remote bundles.Options, mirrors map[string]string, names []string, log *slog.Logger) ([]bundles.Image, error) {
	sort.Strings(names)
	var out []bundles.Image
	for i, name := range names {
		if i > 0 && names[i-1] == name {
			continue
		}
		ref, err := bundles.NormalizeImage(name)
		if err != nil {
			return nil, err
		}
		from := ref.String()
		if m, ok := mirrors[ref.Registry]; ok {
			from = strings.TrimSuffix(m, "/") + "/" + ref.Repository + ":" + ref.Reference
			if _, err := ref.Digest(); err == nil {
				from = strings.TrimSuffix(m, "/") + "/" + ref.Repository + "@" + ref.Reference
			}
		}
		addr, err := bundles.ParseAddress("oci://" + from)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		repo, err := remote.Repository(addr)
		if err != nil {
			return nil, err
		}
		desc, err := repo.Resolve(ctx, ref.Reference)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		var fetchFrom content.ReadOnlyStorage = repo
		var prog *bundles.Progress
		if remote.Progress != nil {
			var total int64
			if graph, err := bundles.ImageBlobs(ctx, repo, desc); err == nil {
				for _, d := range graph {
					total += d.Size
				}
			}
			prog = bundles.NewProgress(remote.Progress, "carry "+name, total)
			fetchFrom = bundles.Counted(repo, prog)
		}
		err = oras.CopyGraph(ctx, fetchFrom, dst, desc, oras.DefaultCopyGraphOptions)
		prog.Finish()
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		// Only what a manifest or index is: platform, annotations and the rest stay behind.
		desc = ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
		out = append(out, bundles.Image{Name: name, Descriptor: desc})
		log.Info("carried image", "image", name, "from", from, "digest", desc.Digest)
	}
	return out, nil
}
