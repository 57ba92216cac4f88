package bundlertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Signers are real keys made by gpg and ssh-keygen: alice and mallory (OpenPGP), bob and eve
// (SSH). The keyring holds alice only, the allowed-signers file bob only.
type Signers struct {
	GnuPG                string // GNUPGHOME
	Alice, Mallory       string // OpenPGP fingerprints
	Bob, Eve             string // SSH private key files
	BobFingerprint       string // SHA256:…
	Keyring, AllowedSigs string // files: alice's armored key, an allowed-signers line for bob
}

// NeedTools fails t when a tool is missing.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (%v): integration/testbed/tools/packages.sh installs it", tool, err)
		}
	}
}

// Run runs a command in dir with env added and returns its output; it fails t if the command fails.
func Run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NewSigners makes the keys, with gpg and ssh-keygen.
func NewSigners(t testing.TB) *Signers {
	t.Helper()
	NeedTools(t, "git", "gpg", "gpgconf", "ssh-keygen")
	// gpg-agent's socket path must stay short: not under t.TempDir's long names.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	env := []string{"GNUPGHOME=" + home}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	s := &Signers{GnuPG: home}
	fpr := func(uid string) string {
		Run(t, home, env, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
		for _, line := range strings.Split(Run(t, home, env, "gpg", "--with-colons", "--list-keys", uid), "\n") {
			if f := strings.Split(line, ":"); f[0] == "fpr" {
				return f[9]
			}
		}
		t.Fatalf("no fingerprint for %s", uid)
		return ""
	}
	s.Alice = fpr("Alice <alice@example.com>")
	s.Mallory = fpr("Mallory <mallory@example.com>")
	dir := t.TempDir()
	s.Keyring = filepath.Join(dir, "team.asc")
	if err := os.WriteFile(s.Keyring, []byte(Run(t, home, env, "gpg", "--armor", "--export", s.Alice)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		name string
		file *string
	}{{"bob", &s.Bob}, {"eve", &s.Eve}} {
		*k.file = filepath.Join(dir, k.name)
		Run(t, dir, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", k.name, "-f", *k.file)
	}
	pub, err := os.ReadFile(s.Bob + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	s.AllowedSigs = filepath.Join(dir, "allowed_signers")
	f := strings.Fields(string(pub))
	if err := os.WriteFile(s.AllowedSigs, []byte("# release managers\nbob@example.com "+f[0]+" "+f[1]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.BobFingerprint = strings.Fields(Run(t, dir, nil, "ssh-keygen", "-l", "-E", "sha256", "-f", s.Bob+".pub"))[1]
	return s
}

// Repo is a tree committed by the real git with fixed dates.
type Repo struct {
	t   testing.TB
	Dir string
	env []string
}

// Repo writes files into a new Git repository (not yet committed: see Commit).
func (s *Signers) Repo(t testing.TB, files map[string]string) *Repo {
	t.Helper()
	dir := WriteTree(t, files)
	r := &Repo{t: t, Dir: dir, env: []string{
		"GNUPGHOME=" + s.GnuPG, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=CI", "GIT_AUTHOR_EMAIL=ci@example.com", "GIT_COMMITTER_NAME=CI", "GIT_COMMITTER_EMAIL=ci@example.com",
		"GIT_AUTHOR_DATE=2026-11-01T12:00:00Z", "GIT_COMMITTER_DATE=2026-11-01T12:00:00Z",
	}}
	r.Git("init", "-q", "-b", "main")
	r.Git("add", "-A")
	return r
}

// Git runs git in the repository.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return Run(r.t, r.Dir, r.env, "git", args...)
}

// Signing returns git's -c options to sign with an OpenPGP fingerprint or an SSH key file.
func Signing(key string) []string {
	if strings.HasPrefix(key, "/") {
		return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + key}
	}
	return []string{"-c", "gpg.format=openpgp", "-c", "user.signingkey=" + key}
}

// Commit commits everything, signed with key (an OpenPGP fingerprint or an SSH key file), or
// unsigned when key is "".
func (r *Repo) Commit(key string) {
	r.t.Helper()
	if key == "" {
		r.Git("commit", "-q", "-m", "unsigned")
		return
	}
	r.Git(append(Signing(key), "commit", "-q", "-S", "-m", "signed")...)
}

// Tag tags HEAD: signed and annotated with key, or lightweight when key is "".
func (r *Repo) Tag(name, key string) {
	r.t.Helper()
	if key == "" {
		r.Git("tag", name) // lightweight
		return
	}
	r.Git(append(Signing(key), "tag", "-s", name, "-m", name)...)
}

// Head is HEAD's commit hash.
func (r *Repo) Head() string { return strings.TrimSpace(r.Git("rev-parse", "HEAD")) }
