package bundler

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"
)

// A Flux ArtifactGenerator (source.extensions.fluxcd.io, Flux 2.7) composes ExternalArtifacts
// from other sources by copy operations. In a cluster, source-watcher runs them; here the
// bundler runs them once, at build time, over the sources it already resolves (this
// repository, cloned Git repositories, pulled OCI artifacts), and a Kustomization whose
// sourceRef is one of the ExternalArtifacts is built from the composed tree.
//
// Copy semantics follow source-watcher's documentation: operations run in order, later ones
// overwrite earlier files; `from` is @alias/pattern, `to` is @artifact/path, a directory when
// it ends in '/'; a plain path copies that file, or that directory as a subdirectory of the
// destination; a pattern matches one path element per '*' (as fs.Glob: '**' too), and a
// pattern ending in '/**' copies the contents of its directory into the destination. Other
// fields of a copy operation (exclude, strategy) are refused, not ignored.
type fluxArtifactGenerator struct {
	fluxObject `yaml:",inline"`
	from       string
	Spec       struct {
		Sources []struct {
			Alias     string `yaml:"alias"`
			Kind      string `yaml:"kind"`
			Name      string `yaml:"name"`
			Namespace string `yaml:"namespace"`
		} `yaml:"sources"`
		Artifacts []fluxOutputArtifact `yaml:"artifacts"`
	} `yaml:"spec"`
}

type fluxOutputArtifact struct {
	Name     string     `yaml:"name"`
	Revision string     `yaml:"revision"`
	Copy     []fluxCopy `yaml:"copy"`
}

type fluxCopy struct {
	From  string               `yaml:"from"`
	To    string               `yaml:"to"`
	Extra map[string]yaml.Node `yaml:",inline"`
}

// artifactGroup is the API group of ArtifactGenerator.
const artifactGroup = "source.extensions.fluxcd.io"

var aliasName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`)

// maxArtifactFiles and maxArtifactBytes bound what one composed artifact may hold.
const (
	maxArtifactFiles = 20000
	maxArtifactBytes = 512 << 20
)

// composeArtifact runs the copy operations of artifact a of generator g into dst. srcDir
// resolves a source of the generator to the directory holding its files.
func composeArtifact(g fluxArtifactGenerator, a fluxOutputArtifact, srcDir func(kind, name, ns string) (string, error), dst string) error {
	where := fmt.Sprintf("flux ArtifactGenerator %s (%s): artifact %s", nsName(g.Metadata.Namespace, g.Metadata.Name), g.from, a.Name)
	roots := map[string]string{}
	for i, s := range g.Spec.Sources {
		if !aliasName.MatchString(s.Alias) {
			return fmt.Errorf("%s: sources[%d].alias %q: lower case letters, digits, '-' and '_'", where, i, s.Alias)
		}
		if _, dup := roots[s.Alias]; dup {
			return fmt.Errorf("%s: sources[%d].alias %q appears twice", where, i, s.Alias)
		}
		d, err := srcDir(s.Kind, s.Name, firstNonEmpty(s.Namespace, g.Metadata.Namespace))
		if err != nil {
			return fmt.Errorf("%s: sources[%d] (%s): %w", where, i, s.Alias, err)
		}
		roots[s.Alias] = d
	}
	if len(a.Copy) == 0 {
		return fmt.Errorf("%s: copy is empty", where)
	}
	c := &composer{dst: dst}
	for i, op := range a.Copy {
		for k := range op.Extra {
			return fmt.Errorf("%s: copy[%d].%s is not built yet (from and to are)", where, i, k)
		}
		if err := c.apply(op, roots); err != nil {
			return fmt.Errorf("%s: copy[%d] (%s → %s): %w", where, i, op.From, op.To, err)
		}
	}
	return nil
}

type composer struct {
	dst          string
	files, bytes int64
}

func (c *composer) apply(op fluxCopy, roots map[string]string) error {
	alias, pattern, ok := strings.Cut(strings.TrimPrefix(op.From, "@"), "/")
	if !strings.HasPrefix(op.From, "@") || !ok {
		return errors.New("from must be @alias/pattern")
	}
	dir, ok := roots[alias]
	if !ok {
		return fmt.Errorf("no source has the alias %q", alias)
	}
	// The source is read through an os.Root: no path, and no symlink, leads out of it.
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	to, ok := strings.CutPrefix(op.To, "@artifact/")
	if !ok {
		return errors.New("to must start with @artifact/")
	}
	if slices.Contains(strings.Split(to, "/"), "..") || strings.HasPrefix(to, "/") {
		return errors.New("paths must stay inside the source and the artifact")
	}
	toDir := to == "" || strings.HasSuffix(to, "/")
	to = path.Clean("/" + to)[1:]
	if to == "" {
		to = "."
	}
	if !fs.ValidPath(to) || !fs.ValidPath(path.Clean(pattern)) || strings.Contains(pattern, `\`) {
		return errors.New("paths must stay inside the source and the artifact")
	}
	if !strings.ContainsAny(pattern, "*?[") {
		p := path.Clean(pattern)
		fi, err := root.Lstat(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, fs.ErrNotExist)
		}
		switch {
		case fi.IsDir():
			return c.tree(root, p, path.Join(to, path.Base(p)))
		case toDir || c.isDir(to):
			return c.file(root, p, path.Join(to, path.Base(p)))
		}
		return c.file(root, p, to)
	}
	matches, err := fs.Glob(root.FS(), pattern)
	if err != nil {
		return err
	}
	if len(matches) == 0 {
		return fmt.Errorf("no files match %q in source %s", pattern, alias)
	}
	prefix, contents := strings.CutSuffix(pattern, "/**")
	for _, m := range matches {
		dest := path.Join(to, m)
		if rel, ok := strings.CutPrefix(m, prefix+"/"); contents && ok {
			dest = path.Join(to, rel)
		}
		fi, err := root.Lstat(m)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			err = c.tree(root, m, dest)
		} else {
			err = c.file(root, m, dest)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *composer) isDir(rel string) bool {
	fi, err := os.Stat(filepath.Join(c.dst, filepath.FromSlash(rel)))
	return err == nil && fi.IsDir()
}

// tree copies the directory src (relative to root) to dest, file by file.
func (c *composer) tree(root *os.Root, src, dest string) error {
	return fs.WalkDir(root.FS(), src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, src), "/")
		return c.file(root, p, path.Join(dest, rel))
	})
}

// file copies one regular file; a symlink, device or other special file is refused, as in
// the bundle's own layers.
func (c *composer) file(root *os.Root, src, dest string) error {
	in, err := root.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("%s: %w (symlinks are not followed)", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%s)", src, fi.Mode().Type())
	}
	if c.files++; c.files > maxArtifactFiles {
		return fmt.Errorf("more than %d files", maxArtifactFiles)
	}
	if c.bytes += fi.Size(); c.bytes > maxArtifactBytes {
		return fmt.Errorf("more than %d bytes", maxArtifactBytes)
	}
	out := filepath.Join(c.dst, filepath.FromSlash(dest))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, in); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
