package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
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
	mu   sync.Mutex
	dir  string
	db   *bolt.DB
	opts Options
	log  *slog.Logger
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
	path := filepath.Join(dir, "ferry.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w (waited %s; is another ferry daemon running?)", path, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &Store{dir: dir, db: db, opts: opts, log: opts.Log}
	layout := filepath.Join(dir, "oci-layout")
	if _, err := os.Stat(layout); os.IsNotExist(err) {
		if err := WriteFileAtomic(layout, []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.recover(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
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

// recover checks the database, empties tmp/ (half-written blobs of an interrupted copy) and
// collects blobs no revision references (the copies of an admission that never committed).
func (s *Store) recover() error {
	if err := s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}); err != nil {
		return fmt.Errorf("state database check: %w", err)
	}
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
