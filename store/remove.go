package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A removal (ferry remove) takes a bundle's objects out of the cluster and keeps its history.
// It is recorded like a rollout, so that a crash in the middle finishes it rather than leave
// the daemon to apply the bundle again:
//
//	BeginRemove   Txn "removing Current" opened; revisions waiting to be rolled out removed
//	(the caller prunes Current's objects and uninstalls its Helm releases)
//	FinishRemove  Current recorded removed; Current = LastGood = 0; Removed set; Txn closed
//
// An open removing Txn is finished, never rolled out. The next rollout (a newly admitted
// revision, or a rollback to a kept one) clears Removed.

// BeginRemove opens the removal of revision rev, the bundle's current one, in one
// transaction: a Txn in phase removing, and every revision still verified (admitted, not yet
// rolled out) recorded removed, so that none is rolled out by itself once the bundle is gone;
// revisions admitted after this roll out as usual. It refuses a bundle with another
// transaction open, or whose current revision is not rev.
func (s *Store) BeginRemove(name string, rev uint64) error {
	err := s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketBundles).Get([]byte(name)) == nil {
			return fmt.Errorf("bundle %s: %w", name, ErrNotFound)
		}
		b, err := getBundle(tx, name)
		if err != nil {
			return err
		}
		switch {
		case b.Txn != nil:
			return fmt.Errorf("%s: a transaction on revision %d is open (%s)", name, b.Txn.Revision, b.Txn.Phase)
		case b.Current != rev || rev == 0:
			return fmt.Errorf("%s: revision %d is not the current one (%d)", name, rev, b.Current)
		}
		now := time.Now().UTC()
		if err := removePending(tx, name, now); err != nil {
			return err
		}
		b.Txn = &Txn{Revision: rev, Phase: StateRemoving, Deadline: now}
		if err := putJSON(tx.Bucket(bucketBundles), []byte(name), b); err != nil {
			return err
		}
		return appendEvent(tx, Event{Time: now, Bundle: name, Revision: rev, Reason: "Removing", Message: fmt.Sprintf("removing the objects of revision %d (ferry remove)", rev)})
	})
	if err != nil {
		return err
	}
	crashPoint("remove:begun")
	return nil
}

// removePending records every verified revision of name removed.
func removePending(tx *bolt.Tx, name string, now time.Time) error {
	b := tx.Bucket(bucketRevisions)
	var pending []uint64
	c := b.Cursor()
	prefix := []byte(name + "/")
	for k, v := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
		var r Revision
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("revision %s: %w", k, err)
		}
		if r.State == StateVerified {
			pending = append(pending, r.Revision)
		}
	}
	const note = "not rolled out: the bundle was removed (ferry remove)"
	for _, rev := range pending {
		if err := recordState(tx, name, rev, StateRemoved, note, now); err != nil {
			return err
		}
		if err := appendEvent(tx, Event{Time: now, Bundle: name, Revision: rev, Reason: string(StateRemoved), Message: note}); err != nil {
			return err
		}
	}
	return nil
}

// FinishRemove closes the removal BeginRemove opened, in one transaction: its revision is
// recorded removed with note, the bundle has no current and no last good revision, Removed
// is set, and the Txn is closed. It does nothing when no removal is open (a removal finished
// before).
func (s *Store) FinishRemove(name string, note string) error {
	crashPoint("remove:pruned")
	return s.update(func(tx *bolt.Tx) error {
		b, err := getBundle(tx, name)
		if err != nil {
			return err
		}
		if b.Txn == nil || b.Txn.Phase != StateRemoving {
			return nil
		}
		rev := b.Txn.Revision
		now := time.Now().UTC()
		if err := recordState(tx, name, rev, StateRemoved, note, now); err != nil {
			return err
		}
		b.Current, b.LastGood, b.Removed, b.Txn = 0, 0, now, nil
		if err := putJSON(tx.Bucket(bucketBundles), []byte(name), b); err != nil {
			return err
		}
		return appendEvent(tx, Event{Time: now, Bundle: name, Revision: rev, Reason: "Removed", Message: note})
	})
}
