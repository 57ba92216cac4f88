package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
)

// State of a revision (DESIGN: received → verified → applying → healthy | failed → rolled-back).
type State string

// Revision states.
const (
	StateVerified   State = "verified"
	StateApplying   State = "applying"
	StateHealthy    State = "healthy"
	StateFailed     State = "failed"
	StateRolledBack State = "rolled-back"
	// StateRemoved is a revision whose objects `ferry remove` took out of the cluster, or
	// one still waiting to be rolled out when the bundle was removed: neither is rolled out
	// again by itself, only by a rollback to it.
	StateRemoved State = "removed"
	// StateRemoving is the phase of a Txn that removes a bundle's objects (ferry remove);
	// never a revision's state.
	StateRemoving State = "removing"
)

// Bundle is the per-name record.
type Bundle struct {
	Name     string `json:"name"`
	Newest   uint64 `json:"newest"`   // highest revision ever admitted (anti-downgrade)
	Current  uint64 `json:"current"`  // revision applied now (0: none)
	LastGood uint64 `json:"lastGood"` // last revision that was healthy (0: none)
	// Txn is the rollout in progress, written before the first object is sent and cleared
	// when the revision is healthy or rolled back; a daemon that finds one on start resumes
	// or reverts it.
	Txn *Txn `json:"txn,omitempty"`
	// Suspended bundles are not reconciled: no new revision is applied, no drift corrected.
	Suspended bool `json:"suspended,omitempty"`
	// Removed is when `ferry remove` took the bundle's objects out of the cluster (Current
	// and LastGood are 0 since), zero otherwise; the next rollout clears it.
	Removed time.Time `json:"removed,omitzero"`
}

// Txn records an unfinished rollout: "applying Revision, last good LastGood, deadline
// Deadline", then, once Revision has failed, "rolling back to LastGood".
type Txn struct {
	Revision uint64    `json:"revision"`
	LastGood uint64    `json:"lastGood"`
	Deadline time.Time `json:"deadline"`
	Phase    State     `json:"phase"` // applying | failed (rolling back to LastGood) | removing (Revision's objects, see BeginRemove)
	Reason   string    `json:"reason,omitempty"`
	// Paused is when the rollout stopped because the node could not go on (the API server
	// out of reach, the state directory not writable), zero while it runs. Time paused does
	// not count against Deadline: the rollout resumes with the budget it had.
	Paused time.Time `json:"paused,omitzero"`
}

// DeadlineAt is the rollout's deadline as seen at now: Deadline, moved on by the time the
// rollout has been paused.
func (t *Txn) DeadlineAt(now time.Time) time.Time {
	if t.Paused.IsZero() || now.Before(t.Paused) {
		return t.Deadline
	}
	return t.Deadline.Add(now.Sub(t.Paused))
}

// PauseTxn records that the open rollout of a bundle stopped for a reason that is the node's,
// not the revision's (see Txn.Paused). It does nothing when no rollout is open or it is
// already paused.
func (s *Store) PauseTxn(name string) error {
	b, err := s.GetBundle(name)
	if err != nil || b.Txn == nil || !b.Txn.Paused.IsZero() {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		b, err := getBundle(tx, name)
		if err != nil || b.Txn == nil || !b.Txn.Paused.IsZero() {
			return err
		}
		b.Txn.Paused = time.Now().UTC()
		return putJSON(tx.Bucket(bucketBundles), []byte(name), b)
	})
}

// WriteFailed reports an error of the state directory itself: full, read-only, over quota,
// or failing. A rollout that meets one is paused, never failed: the revision is not at fault.
func WriteFailed(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EROFS) ||
		errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EIO)
}

// Revision is one admitted revision of a bundle.
type Revision struct {
	Name         string               `json:"name"`
	Revision     uint64               `json:"revision"`
	Version      string               `json:"version"`
	Manifest     ocispec.Descriptor   `json:"manifest"`
	Blobs        []ocispec.Descriptor `json:"blobs"` // everything stored for it, manifest included
	Source       string               `json:"source"`
	Verification json.RawMessage      `json:"verification"`
	State        State                `json:"state"`
	Admitted     time.Time            `json:"admitted"`
	History      []Transition         `json:"history"`
}

// Transition is one change of state.
type Transition struct {
	State State     `json:"state"`
	Time  time.Time `json:"time"`
	Note  string    `json:"note,omitempty"`
}

// Admission is what the caller has verified and asks the store to keep.
type Admission struct {
	Name     string
	Revision uint64
	Version  string
	Manifest ocispec.Descriptor
	// Blobs to copy: config, layers, signature manifests and payloads. The manifest itself
	// is copied too and need not be listed.
	Blobs        []ocispec.Descriptor
	Source       string
	Verification json.RawMessage
}

// copyConcurrency is how many blobs Admit copies at once.
const copyConcurrency = 4

func revisionKey(name string, rev uint64) []byte {
	return []byte(fmt.Sprintf("%s/%020d", name, rev))
}

// Admit copies the admission's blobs into the content store, each checked against its digest
// while it streams, and then records the revision as verified, in one transaction. It refuses
// a revision that is not newer than the newest admitted for the name (ErrDowngrade, or
// ErrEquivocation for the same number with another digest) before copying anything, and an
// admission that would not fit (ErrNoSpace). On any error the store is left as it was: no
// revision recorded and the blobs it wrote removed (after a crash, Open's recovery does that).
func (s *Store) Admit(ctx context.Context, src content.Fetcher, a Admission) (*Revision, error) {
	if a.Name == "" || a.Revision == 0 {
		return nil, errors.New("admit: name and revision are required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNewer(a); err != nil {
		return nil, err
	}
	blobs := append([]ocispec.Descriptor{a.Manifest}, a.Blobs...)
	var need int64
	held := map[digest.Digest]bool{}
	for _, b := range blobs {
		if s.HasBlob(b.Digest) {
			held[b.Digest] = true
		} else {
			need += b.Size
		}
	}
	if err := s.checkSpace(need); err != nil {
		return nil, err
	}
	// The blobs this admission will write are recorded first, as pending: they are the only
	// files a later GC may remove without a revision record naming them (after a crash
	// mid-copy). A refusal removes them at once, so it leaves the content store as it was.
	// (They were absent before, so no committed revision uses them, and s.mu keeps GC and
	// other admissions out meanwhile.)
	pending := pendingKey(a.Name, a.Revision)
	var toWrite []digest.Digest
	for d := range seenOnce(blobs) {
		if !held[d] {
			toWrite = append(toWrite, d)
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketMeta), pending, toWrite) }); err != nil {
		return nil, err
	}
	var (
		mu        sync.Mutex
		written   []digest.Digest
		committed bool
	)
	defer func() {
		if committed {
			return
		}
		for _, d := range written {
			os.Remove(s.blobPath(d))
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(pending) }); err != nil {
			s.log.Warn("pending admission record not removed; the next GC removes it", "err", err)
		}
	}()
	// Blobs are copied in parallel: each copy hashes on one core while the other's fsync
	// waits on the disk.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyConcurrency)
	seen := map[digest.Digest]bool{}
	for _, b := range blobs {
		if seen[b.Digest] || s.HasBlob(b.Digest) {
			continue
		}
		seen[b.Digest] = true
		g.Go(func() error {
			rc, err := src.Fetch(gctx, b)
			if err != nil {
				return fmt.Errorf("fetch %s: %w", b.Digest, err)
			}
			err = s.writeBlob(rc, b)
			rc.Close()
			if err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					return fmt.Errorf("%w: %v", ErrNoSpace, err)
				}
				return err
			}
			mu.Lock()
			written = append(written, b.Digest)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	crashPoint("admit:copied")
	now := time.Now().UTC()
	rev := &Revision{
		Name: a.Name, Revision: a.Revision, Version: a.Version, Manifest: a.Manifest, Blobs: blobs,
		Source: a.Source, Verification: a.Verification, State: StateVerified, Admitted: now,
		History: []Transition{{State: StateVerified, Time: now}},
	}
	err := s.update(func(tx *bolt.Tx) error {
		// Checked again inside the transaction: another admission may have committed while
		// this one copied.
		b, err := getBundle(tx, a.Name)
		if err != nil {
			return err
		}
		if err := newerThan(tx, b, a); err != nil {
			return err
		}
		b.Name, b.Newest = a.Name, a.Revision
		if err := putJSON(tx.Bucket(bucketBundles), []byte(a.Name), b); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketRevisions), revisionKey(a.Name, a.Revision), rev); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Delete(pending); err != nil {
			return err
		}
		msg := fmt.Sprintf("revision %d (%s) verified and stored", a.Revision, a.Manifest.Digest)
		if len(held) > 0 {
			// Said, not hidden: these blobs were not read from the source (docs/TRUST.md).
			msg += fmt.Sprintf("; %d of %d blobs were already on the node and were taken from its store, not read from the source", len(held), len(seenOnce(blobs)))
		}
		return appendEvent(tx, Event{Time: now, Bundle: a.Name, Revision: a.Revision, Reason: "Admitted", Message: msg})
	})
	if err != nil {
		return nil, err
	}
	committed = true
	// The revision is recorded; index.json is a view for other tools and is rewritten on the
	// next admission or GC, so its failure must not report the admission as failed.
	if err := s.writeIndex(); err != nil {
		s.log.Warn("index.json not rewritten", "err", err)
	}
	return rev, nil
}

// pendingKey is the meta key listing the blobs an admission is writing, until it commits.
func pendingKey(name string, rev uint64) []byte {
	return append([]byte("pending/"), revisionKey(name, rev)...)
}

func seenOnce(ds []ocispec.Descriptor) map[digest.Digest]bool {
	m := map[digest.Digest]bool{}
	for _, d := range ds {
		m[d.Digest] = true
	}
	return m
}

// writeIndex rewrites index.json so the state directory is an OCI image layout that lists
// every kept revision's manifest, tagged <name>:<revision>, and each carried image: oras,
// crane or skopeo can read what a node holds. The database stays the source of truth.
func (s *Store) writeIndex() error {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRevisions).ForEach(func(k, v []byte) error {
			var r Revision
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("revision %s: %w", k, err)
			}
			m := ocispec.Descriptor{MediaType: r.Manifest.MediaType, Digest: r.Manifest.Digest, Size: r.Manifest.Size,
				Annotations: map[string]string{ocispec.AnnotationRefName: fmt.Sprintf("%s-%d", r.Name, r.Revision)}}
			idx.Manifests = append(idx.Manifests, m)
			return nil
		})
	})
	if err != nil {
		return err
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(s.dir, "index.json"), b, 0o600)
}

// CheckAdmission returns the error Admit would return for revision rev of name with this
// manifest by the anti-downgrade rule (ErrDowngrade, ErrAlreadyAdmitted, ErrEquivocation),
// or nil, without writing anything: a preview of a bundle (ferry import --dry-run).
func (s *Store) CheckAdmission(name string, rev uint64, manifest digest.Digest) error {
	return s.checkNewer(Admission{Name: name, Revision: rev, Manifest: ocispec.Descriptor{Digest: manifest}})
}

func (s *Store) checkNewer(a Admission) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b, err := getBundle(tx, a.Name)
		if err != nil {
			return err
		}
		return newerThan(tx, b, a)
	})
}

// newerThan is the anti-downgrade rule of SPEC §2.
func newerThan(tx *bolt.Tx, b Bundle, a Admission) error {
	if a.Revision > b.Newest {
		return nil
	}
	if v := tx.Bucket(bucketRevisions).Get(revisionKey(a.Name, a.Revision)); v != nil {
		var old Revision
		if err := json.Unmarshal(v, &old); err == nil {
			if old.Manifest.Digest != a.Manifest.Digest {
				return fmt.Errorf("%s revision %d: %w: stored %s, offered %s", a.Name, a.Revision, ErrEquivocation, old.Manifest.Digest, a.Manifest.Digest)
			}
			return fmt.Errorf("%s revision %d: %w (%s, %s)", a.Name, a.Revision, ErrAlreadyAdmitted, old.State, old.Admitted.Format(time.RFC3339))
		}
	}
	return fmt.Errorf("%s revision %d: %w (%d)", a.Name, a.Revision, ErrDowngrade, b.Newest)
}

// ErrAlreadyAdmitted is an ErrDowngrade (errors.Is says so) for the very revision the node
// holds, same digest: a replay of what is there, which changes nothing.
var ErrAlreadyAdmitted error = alreadyAdmitted{}

type alreadyAdmitted struct{}

func (alreadyAdmitted) Error() string        { return "already admitted" }
func (alreadyAdmitted) Is(target error) bool { return target == ErrDowngrade }

func getBundle(tx *bolt.Tx, name string) (Bundle, error) {
	var b Bundle
	v := tx.Bucket(bucketBundles).Get([]byte(name))
	if v == nil {
		return Bundle{Name: name}, nil
	}
	if err := json.Unmarshal(v, &b); err != nil {
		return b, fmt.Errorf("bundle record %s: %w", name, err)
	}
	return b, nil
}

func (s *Store) checkSpace(need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return err
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if need+s.opts.SpaceMargin > free {
		return fmt.Errorf("%w: need %d bytes plus a %d-byte margin, %d free in %s (free space, or lower the margin with spaceMargin in the daemon's config)", ErrNoSpace, need, s.opts.SpaceMargin, free, s.dir)
	}
	return nil
}

// GetRevision returns one stored revision.
func (s *Store) GetRevision(name string, rev uint64) (*Revision, error) {
	var r Revision
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRevisions).Get(revisionKey(name, rev))
		if v == nil {
			return fmt.Errorf("%s revision %d: %w", name, rev, ErrNotFound)
		}
		return json.Unmarshal(v, &r)
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Revisions lists the stored revisions of a bundle, oldest first.
func (s *Store) Revisions(name string) ([]Revision, error) {
	var out []Revision
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRevisions).Cursor()
		prefix := []byte(name + "/")
		for k, v := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
			var r Revision
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("revision %s: %w", k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// GetBundle returns the record of a bundle name.
func (s *Store) GetBundle(name string) (Bundle, error) {
	var b Bundle
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		b, err = getBundle(tx, name)
		return err
	})
	return b, err
}

// SetState records a state change of a revision and moves the bundle's pointers and its
// transaction with it, in one bbolt transaction:
//
//	applying     Current = rev; a Txn for rev is opened (or kept) with LastGood and deadline
//	healthy      Current = LastGood = rev; the Txn is closed
//	failed       the Txn turns to rolling back to its LastGood, with note as the reason
//	rolled-back  Current = LastGood; the Txn is closed
//
// deadline is used by applying only.
func (s *Store) SetState(name string, rev uint64, state State, note string) error {
	return s.setState(name, rev, state, note, time.Time{})
}

// Begin records "applying rev, last good M, deadline" before the first object is sent.
func (s *Store) Begin(name string, rev uint64, deadline time.Time, note string) error {
	return s.setState(name, rev, StateApplying, note, deadline)
}

// BeginRollback is Begin for a rollback someone asked for (ferry rollback): in the same
// transaction every newer revision that is verified or healthy is recorded rolled back, so
// the daemon stays on rev until a newer revision arrives. A crash can leave the rollout to
// rev open (it is resumed) but never a newer revision waiting to be rolled out again.
func (s *Store) BeginRollback(name string, rev uint64, deadline time.Time, note string) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := supersede(tx, name, rev); err != nil {
			return err
		}
		return setStateTx(tx, name, rev, StateApplying, note, deadline)
	})
}

// Supersede records every revision newer than rev that is verified or healthy as rolled
// back (a manual rollback to the revision already running), in one transaction.
func (s *Store) Supersede(name string, rev uint64) error {
	return s.update(func(tx *bolt.Tx) error { return supersede(tx, name, rev) })
}

func supersede(tx *bolt.Tx, name string, rev uint64) error {
	b := tx.Bucket(bucketRevisions)
	var newer []Revision
	c := b.Cursor()
	prefix := []byte(name + "/")
	for k, v := c.Seek(revisionKey(name, rev+1)); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
		var r Revision
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("revision %s: %w", k, err)
		}
		if r.State == StateVerified || r.State == StateHealthy {
			newer = append(newer, r)
		}
	}
	now := time.Now().UTC()
	note := fmt.Sprintf("manual rollback to %d", rev)
	for _, r := range newer {
		r.State = StateRolledBack
		r.History = append(r.History, Transition{State: StateRolledBack, Time: now, Note: note})
		if err := putJSON(b, revisionKey(name, r.Revision), r); err != nil {
			return err
		}
		if err := appendEvent(tx, Event{Time: now, Bundle: name, Revision: r.Revision, Reason: string(StateRolledBack), Message: note}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) setState(name string, rev uint64, state State, note string, deadline time.Time) error {
	return s.update(func(tx *bolt.Tx) error { return setStateTx(tx, name, rev, state, note, deadline) })
}

// recordState records revision rev of name in state at now: its State, and a Transition
// with note in its History.
func recordState(tx *bolt.Tx, name string, rev uint64, state State, note string, now time.Time) error {
	key := revisionKey(name, rev)
	v := tx.Bucket(bucketRevisions).Get(key)
	if v == nil {
		return fmt.Errorf("%s revision %d: %w", name, rev, ErrNotFound)
	}
	var r Revision
	if err := json.Unmarshal(v, &r); err != nil {
		return err
	}
	r.State = state
	r.History = append(r.History, Transition{State: state, Time: now, Note: note})
	return putJSON(tx.Bucket(bucketRevisions), key, r)
}

func setStateTx(tx *bolt.Tx, name string, rev uint64, state State, note string, deadline time.Time) error {
	{
		now := time.Now().UTC()
		if err := recordState(tx, name, rev, state, note, now); err != nil {
			return err
		}
		b, err := getBundle(tx, name)
		if err != nil {
			return err
		}
		switch state {
		case StateApplying:
			b.Current, b.Removed = rev, time.Time{}
			if b.Txn == nil || b.Txn.Revision != rev {
				b.Txn = &Txn{Revision: rev, LastGood: b.LastGood}
			}
			b.Txn.Phase, b.Txn.Deadline, b.Txn.Reason, b.Txn.Paused = StateApplying, deadline.UTC(), "", time.Time{}
		case StateHealthy:
			b.Current, b.LastGood = rev, rev
			if b.Txn != nil && b.Txn.Revision == rev {
				b.Txn = nil
			}
		case StateFailed:
			if b.Txn != nil && b.Txn.Revision == rev {
				b.Txn.Phase, b.Txn.Reason = StateFailed, note
				if b.Txn.LastGood == 0 {
					b.Txn = nil // nothing to roll back to: the failed revision stays current
				}
			}
		case StateRolledBack:
			b.Current = b.LastGood
			if b.Txn != nil && b.Txn.Revision == rev {
				b.Txn = nil
			}
		}
		if err := putJSON(tx.Bucket(bucketBundles), []byte(name), b); err != nil {
			return err
		}
		return appendEvent(tx, Event{Time: now, Bundle: name, Revision: rev, Reason: string(state), Message: note})
	}
}

// SetSuspended suspends or resumes a bundle, recording an event.
func (s *Store) SetSuspended(name string, suspended bool) error {
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketBundles).Get([]byte(name)) == nil {
			return fmt.Errorf("bundle %s: %w", name, ErrNotFound)
		}
		b, err := getBundle(tx, name)
		if err != nil {
			return err
		}
		b.Suspended = suspended
		if err := putJSON(tx.Bucket(bucketBundles), []byte(name), b); err != nil {
			return err
		}
		reason := "resumed"
		if suspended {
			reason = "suspended"
		}
		return appendEvent(tx, Event{Time: time.Now().UTC(), Bundle: name, Revision: b.Current, Reason: reason})
	})
}

// Bundles lists every bundle record, by name.
func (s *Store) Bundles() ([]Bundle, error) {
	var out []Bundle
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBundles).ForEach(func(k, v []byte) error {
			var b Bundle
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("bundle record %s: %w", k, err)
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

// PutInventory stores what package rollout recorded for one component of a revision (opaque
// to the store).
func (s *Store) PutInventory(name string, rev uint64, component string, inv []byte) error {
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRevisions).Get(revisionKey(name, rev)) == nil {
			return fmt.Errorf("%s revision %d: %w", name, rev, ErrNotFound)
		}
		return tx.Bucket(bucketInventories).Put(inventoryKey(name, rev, component), inv)
	})
}

// Inventories returns the inventories stored for a revision, by component.
func (s *Store) Inventories(name string, rev uint64) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := inventoryKey(name, rev, "")
		c := tx.Bucket(bucketInventories).Cursor()
		for k, v := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
			out[string(k[len(prefix):])] = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

func inventoryKey(name string, rev uint64, component string) []byte {
	return []byte(fmt.Sprintf("%s/%020d/%s", name, rev, component))
}

// GC applies retention and removes the blobs it no longer needs. It returns the number of
// blobs removed.
//
// GC removes only what the database positively names as garbage: the blobs of revisions
// retention drops now, and those of admissions that never committed (recorded as pending
// before their copy began), when no kept revision lists them. A file in the content store
// that no record names at all is kept: the database that would have named it may be the
// damaged party. And when a kept revision lists a blob the store does not have (a damaged
// record, or a file lost from blobs/), the database is not what was written, and GC
// removes nothing, neither records nor blobs, and says so in the log and, once, as an event.
func (s *Store) GC() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[digest.Digest]bool{}
	drop := map[digest.Digest]bool{}
	var missing []string
	deleted := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		revs := tx.Bucket(bucketRevisions)
		byName := map[string][]Revision{}
		if err := revs.ForEach(func(k, v []byte) error {
			var r Revision
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("revision %s: %w", k, err)
			}
			byName[r.Name] = append(byName[r.Name], r)
			for _, d := range r.Blobs {
				if !s.HasBlob(d.Digest) {
					missing = append(missing, fmt.Sprintf("%s revision %d: %s", r.Name, r.Revision, d.Digest))
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if len(missing) > 0 {
			return errGCHeld
		}
		meta := tx.Bucket(bucketMeta)
		var stale [][]byte
		c := meta.Cursor()
		for k, v := c.Seek([]byte("pending/")); k != nil && strings.HasPrefix(string(k), "pending/"); k, v = c.Next() {
			var ds []digest.Digest
			if err := json.Unmarshal(v, &ds); err != nil {
				return fmt.Errorf("meta %s: %w", k, err)
			}
			for _, d := range ds {
				drop[d] = true
			}
			stale = append(stale, append([]byte(nil), k...))
		}
		for _, k := range stale {
			if err := meta.Delete(k); err != nil {
				return err
			}
		}
		for name, rs := range byName {
			b, err := getBundle(tx, name)
			if err != nil {
				return err
			}
			sort.Slice(rs, func(i, j int) bool { return rs[i].Revision > rs[j].Revision })
			for i, r := range rs {
				if i < s.opts.Keep || r.Revision == b.Current || r.Revision == b.LastGood {
					for _, d := range r.Blobs {
						keep[d.Digest] = true
					}
					continue
				}
				for _, d := range r.Blobs {
					drop[d.Digest] = true
				}
				if err := revs.Delete(revisionKey(name, r.Revision)); err != nil {
					return err
				}
				if err := deletePrefix(tx.Bucket(bucketInventories), inventoryKey(name, r.Revision, "")); err != nil {
					return err
				}
				deleted++
			}
		}
		// What is about to be removed is recorded as pending in the transaction that drops
		// its records: a crash before the files are gone leaves them named, not orphaned.
		var gone []digest.Digest
		for d := range drop {
			if !keep[d] {
				gone = append(gone, d)
			}
		}
		if len(gone) == 0 {
			return nil
		}
		return putJSON(meta, gcPending, gone)
	})
	if errors.Is(err, errGCHeld) {
		s.holdGC(missing)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if deleted > 0 {
		s.backup()
	}
	crashPoint("gc:records-dropped")
	removed := 0
	for d := range drop {
		if keep[d] || d.Validate() != nil || d.Algorithm() != digest.SHA256 {
			continue
		}
		err := os.Remove(s.blobPath(d))
		switch {
		case err == nil:
			removed++
		case !errors.Is(err, os.ErrNotExist):
			return removed, err
		}
	}
	crashPoint("gc:files-removed")
	if len(drop) > 0 {
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(gcPending) }); err != nil {
			return removed, err
		}
	}
	if err := s.writeIndex(); err != nil {
		return removed, err
	}
	if removed > 0 {
		s.log.Info("collected blobs", "blobs", removed)
		return removed, syncDir(filepath.Join(s.dir, "blobs", "sha256"))
	}
	return 0, nil
}

var errGCHeld = errors.New("gc held")

// gcPending lists the blobs a GC is removing, from the transaction that dropped their
// records until the files are gone.
var gcPending = []byte("pending/gc")

// holdGC reports a GC that removed nothing because the database names blobs the content
// store lacks: in the log each time, in the event log once per Open.
func (s *Store) holdGC(missing []string) {
	first := missing[0]
	if len(missing) > 1 {
		first += fmt.Sprintf(" and %d more", len(missing)-1)
	}
	msg := "garbage collection removed nothing: the state database lists blobs the content store does not have (" + first +
		"); blobs are kept until the database and the content store agree again (restore the missing files, or stop ferry and compare ferry.db with ferry.db.backup)"
	s.log.Error("store GC held", "missing", len(missing), "first", missing[0])
	if s.gcHeld.CompareAndSwap(false, true) {
		if err := s.AddEvent(Event{Reason: "GCHeld", Message: msg}); err != nil {
			s.log.Warn("event", "err", err)
		}
	}
}

// Check verifies the store's invariants: every blob a revision lists exists and matches its
// digest. It reads every blob; use it in tests and `ferry` diagnostics, not on every start.
func (s *Store) Check() error {
	var revs []Revision
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRevisions).ForEach(func(k, v []byte) error {
			var r Revision
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("revision %s: %w", k, err)
			}
			revs = append(revs, r)
			return nil
		})
	}); err != nil {
		return err
	}
	var errs []error
	for _, r := range revs {
		for _, d := range r.Blobs {
			f, err := s.OpenBlob(d.Digest)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s revision %d: %w", r.Name, r.Revision, err))
				continue
			}
			_, err = content.ReadAll(f, d)
			f.Close()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s revision %d: blob %s: %w", r.Name, r.Revision, d.Digest, err))
			}
		}
	}
	return errors.Join(errs...)
}

func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
