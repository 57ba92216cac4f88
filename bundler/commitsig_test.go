package bundler

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

func build(t *testing.T, r *bundlertest.Repo, v VerifyCommit) (*bundles.Metadata, error) {
	res, err := Build(t.Context(), memory.New(), Options{Dir: r.Dir, VerifyCommit: &v})
	if err != nil {
		return nil, err
	}
	return res.Metadata, nil
}

// signedTree is the tree the signing tests commit.
var signedTree = map[string]string{
	"ferry.yaml":             spec,
	"web/kustomization.yaml": "resources: [deploy.yaml]\n",
	"web/deploy.yaml":        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
}

func TestVerifyCommitAcceptsSignaturesMadeByGit(t *testing.T) {
	s := bundlertest.NewSigners(t)
	t.Run("OpenPGP HEAD", func(t *testing.T) {
		r := s.Repo(t, signedTree)
		r.Commit(s.Alice)
		m, err := build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.Keyring}})
		if err != nil {
			t.Fatal(err)
		}
		c := m.Source.Verified.Commit
		if m.Source.Commit != r.Head() || c.Format != "openpgp" || c.Key != s.Alice || strings.Join(c.Identities, ",") != "alice@example.com" {
			t.Fatalf("verified %+v of %s", c, m.Source.Commit)
		}
	})
	t.Run("SSH HEAD", func(t *testing.T) {
		r := s.Repo(t, signedTree)
		r.Commit(s.Bob)
		// git itself agrees the signature is good, with the same allowed-signers file.
		r.Git("-c", "gpg.ssh.allowedSignersFile="+s.AllowedSigs, "verify-commit", "HEAD")
		m, err := build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.AllowedSigs}, AllowedCommitters: []string{"bob@example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		c := m.Source.Verified.Commit
		if c.Format != "ssh" || c.Key != s.BobFingerprint || strings.Join(c.Identities, ",") != "bob@example.com" {
			t.Fatalf("verified %+v", c)
		}
	})
	t.Run("Tag on an unsigned commit", func(t *testing.T) {
		r := s.Repo(t, signedTree)
		r.Commit("")
		r.Tag("v0.1.0", s.Bob)
		m, err := build(t, r, VerifyCommit{Mode: VerifyTag, Keyrings: []string{s.Keyring, s.AllowedSigs}})
		if err != nil {
			t.Fatal(err)
		}
		v := m.Source.Verified
		if v.Mode != VerifyTag || v.Commit != nil || v.TagName != "v0.1.0" || v.Tag.Key != s.BobFingerprint {
			t.Fatalf("verified %+v, tag %+v", v, v.Tag)
		}
	})
	t.Run("TagAndHEAD, by fingerprint", func(t *testing.T) {
		r := s.Repo(t, signedTree)
		r.Commit(s.Alice)
		r.Tag("v0.1.0", s.Alice)
		m, err := build(t, r, VerifyCommit{Mode: VerifyTagAndHEAD, Keyrings: []string{s.Keyring}, AllowedCommitters: []string{strings.ToLower(s.Alice)}})
		if err != nil {
			t.Fatal(err)
		}
		if v := m.Source.Verified; v.Commit.Key != s.Alice || v.Tag.Key != s.Alice {
			t.Fatalf("verified %+v", v)
		}
		// What the signed config carries reads back.
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := bundles.ParseMetadata(b)
		if err != nil || back.Source.Verified.Tag.Key != s.Alice {
			t.Fatalf("read back %+v, %v", back.Source.Verified, err)
		}
	})
}

func TestVerifyCommitRefuses(t *testing.T) {
	s := bundlertest.NewSigners(t)
	for _, c := range []struct {
		name   string
		make   func(*bundlertest.Repo)
		verify VerifyCommit
		want   string
	}{
		{"an unsigned commit", func(r *bundlertest.Repo) { r.Commit("") },
			VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.Keyring}}, "it is not signed"},
		{"an OpenPGP key outside the keyring", func(r *bundlertest.Repo) { r.Commit(s.Mallory) },
			VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.Keyring}}, "OpenPGP signature"},
		{"an SSH key outside the allowed signers", func(r *bundlertest.Repo) { r.Commit(s.Eve) },
			VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.AllowedSigs}}, "is not an allowed signer"},
		{"an SSH signature with only an OpenPGP keyring", func(r *bundlertest.Repo) { r.Commit(s.Bob) },
			VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.Keyring}}, "no allowed-signers file"},
		{"a signed tag on an unsigned commit under TagAndHEAD", func(r *bundlertest.Repo) { r.Commit(""); r.Tag("v1", s.Alice) },
			VerifyCommit{Mode: VerifyTagAndHEAD, Keyrings: []string{s.Keyring}}, "it is not signed"},
		{"a lightweight tag", func(r *bundlertest.Repo) { r.Commit(s.Alice); r.Tag("v1", "") },
			VerifyCommit{Mode: VerifyTag, Keyrings: []string{s.Keyring}}, "tag v1 is lightweight"},
		{"no tag", func(r *bundlertest.Repo) { r.Commit(s.Alice) },
			VerifyCommit{Mode: VerifyTag, Keyrings: []string{s.Keyring}}, "no annotated tag points at it"},
		{"a signer outside --allowed-committers", func(r *bundlertest.Repo) { r.Commit(s.Alice) },
			VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.Keyring}, AllowedCommitters: []string{"bob@example.com"}}, "is not in --allowed-committers"},
		{"a tag signed by an unknown key", func(r *bundlertest.Repo) { r.Commit(s.Alice); r.Tag("v1", s.Eve) },
			VerifyCommit{Mode: VerifyTag, Keyrings: []string{s.Keyring, s.AllowedSigs}}, "tag v1: key SHA256:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.Repo(t, signedTree)
			c.make(r)
			_, err := build(t, r, c.verify)
			if !errors.Is(err, ErrUnverifiedCommit) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), r.Head()) {
				t.Fatalf("got %v, want ErrUnverifiedCommit naming commit %s and %q", err, r.Head(), c.want)
			}
		})
	}

	t.Run("uncommitted changes, even with --allow-dirty", func(t *testing.T) {
		r := s.Repo(t, signedTree)
		r.Commit(s.Alice)
		if err := os.WriteFile(filepath.Join(r.Dir, "web/deploy.yaml"), []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: evil}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		v := VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.Keyring}}
		_, err := Build(t.Context(), memory.New(), Options{Dir: r.Dir, AllowDirty: true, VerifyCommit: &v})
		if !errors.Is(err, ErrDirty) || !strings.Contains(err.Error(), r.Head()) {
			t.Fatalf("got %v, want ErrDirty naming the commit", err)
		}
	})

	// A signature moved onto another commit: the signed content no longer matches.
	for _, key := range []string{s.Alice, s.Bob} {
		t.Run("a signature copied onto an altered commit, "+bundlertest.Signing(key)[1], func(t *testing.T) {
			r := s.Repo(t, signedTree)
			r.Commit(key)
			g, err := git.PlainOpen(r.Dir)
			if err != nil {
				t.Fatal(err)
			}
			head, err := g.Head()
			if err != nil {
				t.Fatal(err)
			}
			c, err := g.CommitObject(head.Hash())
			if err != nil {
				t.Fatal(err)
			}
			forged := *c
			forged.Message = "signed, and then altered\n"
			obj := g.Storer.NewEncodedObject()
			if err := forged.Encode(obj); err != nil {
				t.Fatal(err)
			}
			h, err := g.Storer.SetEncodedObject(obj)
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName("main"), h)); err != nil {
				t.Fatal(err)
			}
			back, err := g.CommitObject(h)
			if err != nil || back.PGPSignature != c.PGPSignature || back.Message == c.Message {
				t.Fatalf("forging failed: %v", err)
			}
			_, err = build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{s.Keyring, s.AllowedSigs}})
			if !errors.Is(err, ErrUnverifiedCommit) || !strings.Contains(err.Error(), h.String()) {
				t.Fatalf("got %v, want the forged commit %s refused", err, h)
			}
		})
	}
}

func TestAllowedSignersOptions(t *testing.T) {
	s := bundlertest.NewSigners(t)
	pub, err := os.ReadFile(s.Bob + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Join(strings.Fields(string(pub))[:2], " ")
	for _, c := range []struct {
		line, want string
	}{
		{`bob@example.com namespaces="file" ` + key, "not an allowed signer"},
		{`bob@example.com valid-before="20260101Z" ` + key, "not an allowed signer"},
		{`bob@example.com valid-after="20270101Z" ` + key, "not an allowed signer"},
		{`*@example.com namespaces="git,file",valid-after="20260101Z" ` + key, ""},
		{`bob@example.com namespaces="*,!git" ` + key, "not an allowed signer"},
		{`bob@example.com namespaces="g?t" ` + key, ""},
		{"bob@example.com\t" + key, ""},
		{`bob@example.com cert-authority ` + key, "cert-authority lines are not supported"},
		{`bob@example.com`, "want principals, then options and a public key"},
	} {
		t.Run(c.line[:min(len(c.line), 50)], func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "allowed_signers")
			if err := os.WriteFile(file, []byte(c.line+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := s.Repo(t, signedTree)
			r.Commit(s.Bob)
			_, err := build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{file}})
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

// A keyring inside the tree being built could be changed by the very commit it verifies.
func TestKeyringInsideTheWorkTreeIsRefused(t *testing.T) {
	s := bundlertest.NewSigners(t)
	data, err := os.ReadFile(s.AllowedSigs)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{".ferry/allowed_signers": string(data)}
	for k, v := range signedTree {
		files[k] = v
	}
	r := s.Repo(t, files)
	r.Commit(s.Bob)
	_, err = build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{filepath.Join(r.Dir, ".ferry", "allowed_signers")}})
	if !errors.Is(err, ErrBadKeyring) || !strings.Contains(err.Error(), "inside the work tree") {
		t.Fatalf("got %v, want the keyring refused for being inside the work tree", err)
	}
}

func TestMatchPatternList(t *testing.T) {
	for _, c := range []struct {
		list string
		s    string
		want bool
	}{
		{"git", "git", true}, {"g*", "git", true}, {"g?t", "git", true}, {"*", "file", true},
		{"*,!git", "git", false}, {"!git,*", "git", false}, {"*,!git", "file", true}, {"file", "git", false},
		{"[g]it", "git", false}, {"*t*", "git", true}, {"**", "", true}, {"?", "", false},
	} {
		if got := matchPatternList(strings.Split(c.list, ","), c.s); got != c.want {
			t.Errorf("%q against %q: %v, want %v", c.s, c.list, got, c.want)
		}
	}
}

// A wildcard principal names no one in particular: it does not satisfy --allowed-committers
// for one address, while the key's own fingerprint does.
func TestAllowedCommittersMatchWildcardPrincipalsExactly(t *testing.T) {
	s := bundlertest.NewSigners(t)
	pub, err := os.ReadFile(s.Bob + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(file, []byte("*@example.com "+strings.Join(strings.Fields(string(pub))[:2], " ")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := s.Repo(t, signedTree)
	r.Commit(s.Bob)
	if _, err := build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{file}, AllowedCommitters: []string{"bob@example.com"}}); !errors.Is(err, ErrUnverifiedCommit) {
		t.Fatalf("a *@example.com line passed as bob@example.com: %v", err)
	}
	if _, err := build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{file}, AllowedCommitters: []string{s.BobFingerprint}}); err != nil {
		t.Fatalf("by fingerprint: %v", err)
	}
}

// An SSH signature over one message does not verify another, nor in another namespace.
func TestSSHSigVerify(t *testing.T) {
	s := bundlertest.NewSigners(t)
	dir := t.TempDir()
	msg := filepath.Join(dir, "msg")
	if err := os.WriteFile(msg, []byte("tree 1234\n\nhello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundlertest.Run(t, dir, nil, "ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", s.Bob, msg)
	armored, err := os.ReadFile(msg + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := parseSSHSig(armored)
	if err != nil {
		t.Fatal(err)
	}
	if err := sig.verify([]byte("tree 1234\n\nhello\n"), "git"); err != nil {
		t.Fatalf("ssh-keygen's own signature: %v", err)
	}
	if err := sig.verify([]byte("tree 1234\n\nhellO\n"), "git"); err == nil {
		t.Fatal("verified an altered message")
	}
	if err := sig.verify([]byte("tree 1234\n\nhello\n"), "file"); err == nil {
		t.Fatal("verified in another namespace")
	}
	for _, bad := range []string{"", "-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----", "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----", strings.Repeat("A", maxSSHSig+1)} {
		if _, err := parseSSHSig([]byte(bad)); err == nil {
			t.Fatalf("parsed %.40q", bad)
		}
	}
}

func FuzzParseSSHSig(f *testing.F) {
	f.Add([]byte("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if sig, err := parseSSHSig(b); err == nil {
			_ = sig.verify(b, gitNamespace) // must not panic
		}
	})
}

func FuzzParseAllowedSigners(f *testing.F) {
	f.Add([]byte(`*@example.com namespaces="git",valid-after="20260101Z" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZ1enogZnV6eiBmdXp6IGZ1enogZnV6eiBmdXp6IA== c`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := parseAllowedSigners("allowed_signers", b); err == nil && len(s) == 0 {
			t.Fatal("accepted a file with no signers")
		}
	})
}

// A bundle built from a dirty tree gets no provenance: no commit describes it.
func TestNoProvenanceForADirtyBundle(t *testing.T) {
	b := &bundles.Bundle{Metadata: &bundles.Metadata{Name: "web", Source: bundles.Provenance{Commit: strings.Repeat("a", 40), Dirty: true}}}
	if _, err := Provenance(ocispec.Descriptor{Digest: digest.FromString("x")}, b, ProvenanceOptions{BuilderID: "https://ci.example.com"}); err == nil || !strings.Contains(err.Error(), "uncommitted changes") {
		t.Fatalf("got %v", err)
	}
}

// A keyring made by concatenating armored exports is read whole; a binary export is refused
// by name, not misread as an allowed-signers file.
func TestKeyringFormats(t *testing.T) {
	s := bundlertest.NewSigners(t)
	env := []string{"GNUPGHOME=" + s.GnuPG}
	dir := t.TempDir()
	both := filepath.Join(dir, "both.asc")
	mallory := bundlertest.Run(t, dir, env, "gpg", "--armor", "--export", s.Mallory)
	alice, err := os.ReadFile(s.Keyring)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(both, append([]byte(mallory), alice...), 0o644); err != nil {
		t.Fatal(err)
	}
	r := s.Repo(t, signedTree)
	r.Commit(s.Alice)
	if m, err := build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{both}}); err != nil || m.Source.Verified.Commit.Key != s.Alice {
		t.Fatalf("a key in the second armored block: %v", err)
	}
	binary := filepath.Join(dir, "team.gpg")
	bundlertest.Run(t, dir, env, "gpg", "--output", binary, "--export", s.Alice)
	if _, err := build(t, r, VerifyCommit{Mode: VerifyHEAD, Keyrings: []string{binary}}); !errors.Is(err, ErrBadKeyring) || !strings.Contains(err.Error(), "binary OpenPGP keyring") {
		t.Fatalf("a binary keyring: %v", err)
	}
}
