package bundler

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

// kustomizeClosure returns the files outside the component's directory comp that its
// kustomization reads (../base, a patch in ../patches), relative to root and slash-separated,
// sorted. It runs kustomize over the tree on disk, as Flux builds a Kustomization from the
// root of its source, through a filesystem that records every file read and refuses any read
// outside root (after symlinks), any write, and any kustomization naming a remote base.
func kustomizeClosure(root, comp string) ([]string, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, err
	}
	fs := &closureFS{FileSystem: filesys.MakeFsOnDisk(), root: realRoot, read: map[string]bool{}}
	if _, err := krusty.MakeKustomizer(render.Options()).Run(fs, filepath.Join(realRoot, filepath.FromSlash(comp))); err != nil {
		if fs.refused != nil {
			return nil, fs.refused
		}
		return nil, fmt.Errorf("kustomize build %s: %w", comp, errors.New(strings.ReplaceAll(err.Error(), realRoot+"/", "")))
	}
	var out []string
	for rel := range fs.read {
		if comp != "." && rel != comp && !strings.HasPrefix(rel, comp+"/") {
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	return out, nil
}

// layerRoot is the lowest directory holding comp and every file of extra: the root of the
// component's layer.
func layerRoot(comp string, extra []string) string {
	root := comp
	for _, f := range extra {
		for root != "." && f != root && !strings.HasPrefix(f, root+"/") {
			root = path.Dir(root)
		}
	}
	return root
}

// closureFS is the on-disk filesystem, read-only, confined to root, recording what is read.
type closureFS struct {
	filesys.FileSystem
	root    string
	read    map[string]bool
	refused error
}

// inside resolves p and returns it relative to root, or refuses it: outside root as written,
// or once its symlinks are resolved.
func (f *closureFS) inside(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if err := f.under(p, abs); err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	if err := f.under(p, real); err != nil {
		return "", err
	}
	rel, _ := filepath.Rel(f.root, real)
	return filepath.ToSlash(rel), nil
}

func (f *closureFS) under(p, resolved string) error {
	rel, err := filepath.Rel(f.root, resolved)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		err := fmt.Errorf("%s: %w: kustomize reads %s, outside the tree being built (%s)", strings.TrimPrefix(p, f.root+"/"), bundles.ErrUnsafePath, resolved, f.root)
		if f.refused == nil {
			f.refused = err
		}
		return err
	}
	return nil
}

// CleanedAbs, IsDir and Exists answer only inside root: kustomize asks them before it reads.
func (f *closureFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	if _, err := f.inside(p); err != nil {
		return "", "", err
	}
	return f.FileSystem.CleanedAbs(p)
}

func (f *closureFS) IsDir(p string) bool {
	if _, err := f.inside(p); err != nil {
		return false
	}
	return f.FileSystem.IsDir(p)
}

func (f *closureFS) Exists(p string) bool {
	if _, err := f.inside(p); err != nil {
		return false
	}
	return f.FileSystem.Exists(p)
}

func (f *closureFS) ReadFile(p string) ([]byte, error) {
	rel, err := f.inside(p)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(filepath.Join(f.root, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", rel)
	}
	b, err := f.FileSystem.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if render.IsKustomization(rel) {
		if err := render.CheckKustomization(rel, b); err != nil {
			f.refused = err
			return nil, err
		}
	}
	f.read[rel] = true
	return b, nil
}

func (f *closureFS) Open(p string) (filesys.File, error) {
	if _, err := f.ReadFile(p); err != nil { // recorded and checked the same way
		return nil, err
	}
	return f.FileSystem.Open(p)
}

var errReadOnly = errors.New("the tree is read-only while a bundle is built")

func (f *closureFS) Create(string) (filesys.File, error) { return nil, errReadOnly }
func (f *closureFS) Mkdir(string) error                  { return errReadOnly }
func (f *closureFS) MkdirAll(string) error               { return errReadOnly }
func (f *closureFS) RemoveAll(string) error              { return errReadOnly }
func (f *closureFS) WriteFile(string, []byte) error      { return errReadOnly }
