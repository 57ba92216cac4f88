package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DefaultDir is the state directory of an edge node unless configured otherwise.
const DefaultDir = "/var/lib/ferry"

// SchemaVersion is the version of the database layout this code reads and writes.
const SchemaVersion = 1

var (
	bucketMeta        = []byte("meta")
	bucketBundles     = []byte("bundles")
	bucketRevisions   = []byte("revisions")
	bucketInventories = []byte("inventories")
	bucketEvents      = []byte("events")
)

// Errors callers branch on.
var (
	ErrLocked         = errors.New("state database is locked by another process")
	ErrDowngrade      = errors.New("revision is not newer than the newest admitted")
	ErrEquivocation   = errors.New("same revision, different digest")
	ErrNoSpace        = errors.New("not enough free space")
	ErrNotFound       = errors.New("not found")
	ErrDigestMismatch = errors.New("content does not match its digest")
)

// Options configure Open.
type Options struct {
	// LockTimeout bounds the wait for the database lock; 0 means 5s.
	LockTimeout time.Duration
	// Keep is the number of newest revisions kept per bundle; 0 means 10.
	Keep int
	// SpaceMargin is free space that must remain after an admission; 0 means 64 MiB.
	SpaceMargin int64
	// Log receives recovery and GC reports; nil discards them.
	Log *slog.Logger
}

// Store is an open state directory.
type Store struct {
	// mu serialises Admit and GC: GC would otherwise remove blobs an admission has copied
	// but not yet recorded.
	mu sync.Mutex
	// backupMu makes backups one at a time, each of the newest committed state.
	backupMu sync.Mutex
	dir      string
	db       *bolt.DB
	lock     *os.File // flock on ferry.lock, held while open
	gcHeld   atomic.Bool
	noBackup bool // the benchmark's peer: bbolt's commit alone
	opts     Options
	log      *slog.Logger
}

// Open opens (creating if needed) the state directory dir, checks the database, removes what
// a crash left half-written and collects unreferenced blobs.
func Open(dir string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.Keep <= 0 {
		opts.Keep = 10
	}
	if opts.SpaceMargin <= 0 {
		opts.SpaceMargin = 64 << 20
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{dir, filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	lock, err := lockDir(dir, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	opened := false
	defer func() {
		if !opened {
			lock.Close() // on every way out but success, a panic included
		}
	}()
	db, restored, err := openDB(dir, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, db: db, lock: lock, opts: opts, log: opts.Log}
	fail := func(err error) (*Store, error) {
		db.Close()
		return nil, err
	}
	if restored != "" {
		s.log.Error("state database restored from its backup", "reason", restored)
		if err := s.AddEvent(Event{Reason: "StateRestored", Message: restored}); err != nil {
			return fail(err)
		}
	}
	layout := filepath.Join(dir, "oci-layout")
	if _, err := os.Stat(layout); os.IsNotExist(err) {
		if err := WriteFileAtomic(layout, []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
			return fail(err)
		}
	}
	if err := s.recover(); err != nil {
		return fail(err)
	}
	// A node that ran before this backup existed, or whose last one failed, gets one now.
	s.backup()
	opened = true
	return s, nil
}

// Close closes the database and releases the state directory.
func (s *Store) Close() error {
	err := s.db.Close()
	s.lock.Close()
	return err
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// initBuckets creates the buckets and the schema version in a database bbolt has just
// created.
func initBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketBundles, bucketRevisions, bucketInventories, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get([]byte("schema"))
		if v == nil {
			return putJSON(meta, []byte("schema"), SchemaVersion)
		}
		var got int
		if err := json.Unmarshal(v, &got); err != nil || got != SchemaVersion {
			return fmt.Errorf("state database schema %s, this ferry reads %d", v, SchemaVersion)
		}
		return nil
	})
}

// recover empties tmp/ (half-written blobs of an interrupted copy) and
// collects blobs no revision references (the copies of an admission that never committed).
func (s *Store) recover() error {
	tmp := filepath.Join(s.dir, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return err
		}
	}
	// An interrupted index.json rewrite leaves its temp file beside it.
	stale, _ := filepath.Glob(filepath.Join(s.dir, ".index.json.tmp-*"))
	for _, f := range stale {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	if n := len(entries) + len(stale); n > 0 {
		s.log.Info("removed interrupted writes", "files", n)
	}
	_, err = s.GC()
	return err
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// Generation changes whenever the database does: it is the ID of its last committed write
// transaction. Readers that keep a view of the store (the image endpoint's index) rebuild it
// when the generation moves.
func (s *Store) Generation() (uint64, error) {
	var id int
	err := s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return uint64(id), err
}
