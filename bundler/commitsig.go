package bundler

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"

	"github.com/ferrygitops/ferry/bundles"
)

// Modes of VerifyCommit, as Flux's GitRepository spec.verify.mode.
const (
	VerifyHEAD       = "HEAD"       // the commit built from is signed
	VerifyTag        = "Tag"        // an annotated tag pointing at it is signed
	VerifyTagAndHEAD = "TagAndHEAD" // both
)

// VerifyCommit says which signatures the commit a bundle is built from must carry.
type VerifyCommit struct {
	// Mode is VerifyHEAD, VerifyTag or VerifyTagAndHEAD.
	Mode string
	// Keyrings are the files holding the keys that may sign: armored OpenPGP keyrings (gpg
	// --export --armor) and SSH allowed-signers files (git's gpg.ssh.allowedSignersFile).
	Keyrings []string
	// AllowedCommitters narrows the keys further: a signer is accepted when one of these is
	// its key's fingerprint (OpenPGP hex, or SSH SHA256:…) or one of its identities (an
	// email of the OpenPGP key's user IDs, a principal of the allowed-signers line). Empty:
	// any key of the keyrings.
	AllowedCommitters []string
}

// ErrUnverifiedCommit is returned when the commit or tag lacks the signature VerifyCommit asks
// for; the error names the commit (or tag) and why.
var ErrUnverifiedCommit = errors.New("commit signature not verified")

// ErrBadKeyring is returned when a keyring or allowed-signers file cannot be read or parsed;
// the error names the file (and line).
var ErrBadKeyring = errors.New("bad keyring")

// maxKeyring bounds one keyring file.
const maxKeyring = 4 << 20

// trust is what the keyrings hold.
type trust struct {
	pgp     openpgp.EntityList
	ssh     []allowedSigner
	allowed []string
}

func loadTrust(v VerifyCommit, worktree string) (*trust, error) {
	t, err := readTrust(v, worktree)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKeyring, err)
	}
	return t, nil
}

func readTrust(v VerifyCommit, worktree string) (*trust, error) {
	if len(v.Keyrings) == 0 {
		return nil, errors.New("--verify-commit needs --keyring: an armored OpenPGP keyring or an SSH allowed-signers file")
	}
	t := &trust{allowed: v.AllowedCommitters}
	for _, name := range v.Keyrings {
		if inside(worktree, name) {
			// Whoever can push a commit could change the keys that verify it.
			return nil, fmt.Errorf("%s is inside the work tree being built, where a commit can change it: keep the keyring outside the checkout (a CI secret file)", name)
		}
		data, err := bundles.ReadFileLimited(name, maxKeyring)
		if err != nil {
			return nil, err
		}
		const pgpBlock = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
		if bytes.Contains(data, []byte(pgpBlock)) {
			// Every armored block: a keyring made by concatenating exports has several.
			blocks := bytes.Split(data, []byte(pgpBlock))
			for _, b := range blocks[1:] {
				el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(append([]byte(pgpBlock), b...)))
				if err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				t.pgp = append(t.pgp, el...)
			}
			continue
		}
		if !utf8.Valid(data) {
			return nil, fmt.Errorf("%s: a binary OpenPGP keyring; export it armored (gpg --export --armor)", name)
		}
		s, err := parseAllowedSigners(name, data)
		if err != nil {
			return nil, err
		}
		t.ssh = append(t.ssh, s...)
	}
	return t, nil
}

// inside reports whether file (after symbolic links) is within dir; false when dir is "".
func inside(dir, file string) bool {
	if dir == "" {
		return false
	}
	real := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			p = a
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return p
	}
	rel, err := filepath.Rel(real(dir), real(file))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// signed is a git object that carries a signature over the rest of itself.
type signed interface {
	EncodeWithoutSignature(plumbing.EncodedObject) error
}

// check verifies the signature block sig over obj, made at t, and returns its signer.
func (tr *trust) check(obj signed, sig string, t time.Time) (*bundles.Signer, error) {
	if sig == "" {
		return nil, errors.New("it is not signed")
	}
	if n := strings.Count(sig, "-----BEGIN "); n > 1 {
		return nil, fmt.Errorf("it carries %d signatures; one signer is required", n)
	}
	enc := &plumbing.MemoryObject{}
	if err := obj.EncodeWithoutSignature(enc); err != nil {
		return nil, err
	}
	r, err := enc.Reader()
	if err != nil {
		return nil, err
	}
	payload, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var s *bundles.Signer
	switch {
	case strings.HasPrefix(sig, "-----BEGIN PGP SIGNATURE-----"):
		if len(tr.pgp) == 0 {
			return nil, errors.New("it is signed with OpenPGP and no OpenPGP keyring was given")
		}
		e, err := openpgp.CheckArmoredDetachedSignature(tr.pgp, bytes.NewReader(payload), strings.NewReader(sig), nil)
		if err != nil {
			return nil, fmt.Errorf("OpenPGP signature: %w", err)
		}
		s = &bundles.Signer{Format: "openpgp", Key: strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))}
		for _, id := range e.Identities {
			if id.UserId != nil && id.UserId.Email != "" {
				s.Identities = append(s.Identities, id.UserId.Email)
			}
		}
		slices.Sort(s.Identities)
	case strings.HasPrefix(sig, sshsigArmorTop):
		if len(tr.ssh) == 0 {
			return nil, errors.New("it is signed with SSH and no allowed-signers file was given")
		}
		ss, err := parseSSHSig([]byte(sig))
		if err != nil {
			return nil, err
		}
		line, err := signerOf(tr.ssh, ss.key, gitNamespace, t)
		if err != nil {
			return nil, err
		}
		if err := ss.verify(payload, gitNamespace); err != nil {
			return nil, err
		}
		s = &bundles.Signer{Format: "ssh", Key: ssh.FingerprintSHA256(ss.key), Identities: line.principals}
	default:
		return nil, errors.New("its signature is neither OpenPGP nor SSH (X.509 signatures are not supported)")
	}
	if len(tr.allowed) > 0 && !s.SignedByAny(tr.allowed) {
		return nil, fmt.Errorf("signer %s (%s) is not in --allowed-committers", s.Key, strings.Join(s.Identities, ", "))
	}
	return s, nil
}

// verifyCommit checks the signatures v asks for on HEAD of repo (commit head, of the work
// tree worktree) and returns what was verified.
func verifyCommit(repo *git.Repository, head *object.Commit, worktree string, v VerifyCommit) (*bundles.CommitSignature, error) {
	switch v.Mode {
	case VerifyHEAD, VerifyTag, VerifyTagAndHEAD:
	default:
		return nil, fmt.Errorf("--verify-commit %q: want HEAD, Tag or TagAndHEAD", v.Mode)
	}
	tr, err := loadTrust(v, worktree)
	if err != nil {
		return nil, err
	}
	out := &bundles.CommitSignature{Mode: v.Mode}
	if v.Mode != VerifyTag {
		s, err := tr.check(head, head.PGPSignature, head.Committer.When)
		if err != nil {
			return nil, fmt.Errorf("%w: commit %s: %v", ErrUnverifiedCommit, head.Hash, err)
		}
		out.Commit = s
	}
	if v.Mode != VerifyHEAD {
		name, s, err := verifiedTag(repo, head, tr)
		if err != nil {
			return nil, fmt.Errorf("%w: commit %s: %v", ErrUnverifiedCommit, head.Hash, err)
		}
		out.Tag, out.TagName = s, name
	}
	return out, nil
}

// verifiedTag finds an annotated tag pointing at head signed by a trusted key. Tags are tried
// in name order; when none verifies, the error says why for each.
func verifiedTag(repo *git.Repository, head *object.Commit, tr *trust) (string, *bundles.Signer, error) {
	refs, err := repo.Tags()
	if err != nil {
		return "", nil, err
	}
	var tags []*object.Tag
	var light []string
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		tag, err := repo.TagObject(ref.Hash())
		switch {
		case errors.Is(err, plumbing.ErrObjectNotFound):
			if ref.Hash() == head.Hash {
				light = append(light, ref.Name().Short())
			}
			return nil
		case err != nil:
			return err
		}
		if tag.TargetType == plumbing.CommitObject && tag.Target == head.Hash {
			tags = append(tags, tag)
		}
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	if len(tags) == 0 {
		if len(light) > 0 {
			return "", nil, fmt.Errorf("tag %s is lightweight; a signed annotated tag (git tag -s) is required", strings.Join(light, ", "))
		}
		return "", nil, errors.New("no annotated tag points at it")
	}
	slices.SortFunc(tags, func(a, b *object.Tag) int { return strings.Compare(a.Name, b.Name) })
	var why []string
	for _, tag := range tags {
		s, err := tr.check(tag, tag.PGPSignature, tag.Tagger.When)
		if err == nil {
			return tag.Name, s, nil
		}
		why = append(why, fmt.Sprintf("tag %s: %v", tag.Name, err))
	}
	return "", nil, errors.New(strings.Join(why, "; "))
}
