// Package bundlertest makes source trees for tests of the bundler and of what it builds:
// plain directories of files and committed Git repositories with fixed commit times.
package bundlertest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// WriteTree writes files (slash-separated name → content) under a new temporary directory
// and returns it.
func WriteTree(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// GitTree writes files into a new Git repository with an origin remote (carrying
// credentials, which builds must drop) and commits them at when.
func GitTree(t testing.TB, files map[string]string, when time.Time) (string, *git.Repository) {
	t.Helper()
	dir := WriteTree(t, files)
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{"https://ci:s3cret@git.example.com/site.git"}}); err != nil {
		t.Fatal(err)
	}
	Commit(t, repo, "initial", when)
	return dir, repo
}

// Commit stages everything in the work tree and commits it at when.
func Commit(t testing.TB, repo *git.Repository, msg string, when time.Time) {
	t.Helper()
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if err := wt.AddGlob("."); err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "CI", Email: "ci@example.com", When: when}
	if _, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: true}); err != nil {
		t.Fatal(err)
	}
}
