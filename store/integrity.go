package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// The database is trusted only once it has been checked: a node that acted on a damaged one
// could delete blobs it still needs (GC) or forget which revisions it has seen (the
// anti-downgrade line). Open therefore checks the database before anything writes to it,
// keeps a checked copy (ferry.db.backup) after every change of what the node holds, and
// when the database is missing, empty or damaged restores that copy, or refuses to start.
const (
	dbFile     = "ferry.db"
	backupFile = "ferry.db.backup"
	lockFile   = "ferry.lock"
)

// ErrDamaged is returned by Open when the database cannot be trusted and no backup can
// replace it.
var ErrDamaged = errors.New("state database is damaged")

// lockDir takes the state directory's lock (an exclusive flock on ferry.lock, held until
// Close), waiting up to timeout. It is taken before the database is read, so a second daemon
// never inspects (or restores over) a database the first one is writing.
func lockDir(dir string, timeout time.Duration) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s: %w (waited %s; is another ferry daemon running?)", filepath.Join(dir, dbFile), ErrLocked, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openDB opens the database at dir/ferry.db, checked, restoring the backup when it is
// missing, empty or damaged. restored says where the database came from when it was not
// the file as found ("" otherwise).
func openDB(dir string, opts Options) (db *bolt.DB, restored string, err error) {
	path := filepath.Join(dir, dbFile)
	fi, statErr := os.Lstat(path)
	switch {
	case statErr == nil && !fi.Mode().IsRegular():
		return nil, "", fmt.Errorf("%s: %w: not a regular file (%s)", path, ErrDamaged, fi.Mode().Type())
	case statErr == nil && fi.Size() > 0:
		db, err := openChecked(path, false)
		var se schemaError
		switch {
		case err == nil:
			return db, "", nil
		case errors.As(err, &se):
			// Written by another version of ferry: not damage, and not replaced.
			return nil, "", fmt.Errorf("%s: %w", path, err)
		}
		return recoverDB(dir, fmt.Errorf("%s: %w", path, err))
	case statErr == nil || errors.Is(statErr, os.ErrNotExist):
		// No database, or an empty file (a crash while bbolt first created it, or a file
		// lost by the filesystem): a new node only if nothing says otherwise.
		if _, berr := os.Lstat(filepath.Join(dir, backupFile)); berr == nil || heldBlobs(dir) > 0 {
			what := "is missing"
			if statErr == nil {
				what = "is empty"
			}
			return recoverDB(dir, fmt.Errorf("%s %s", path, what))
		}
		os.Remove(path)
		db, err := openChecked(path, false)
		return db, "", err
	default:
		return nil, "", statErr
	}
}

// recoverDB replaces a database that cannot be trusted (why) by its backup, keeping the
// damaged file as ferry.db.damaged-<time> for inspection. Without a usable backup it
// refuses, unless the content store is empty too (nothing was ever kept: a new node).
func recoverDB(dir string, why error) (*bolt.DB, string, error) {
	path := filepath.Join(dir, dbFile)
	backup := filepath.Join(dir, backupFile)
	bdb, berr := openChecked(backup, true)
	if berr == nil {
		bdb.Close()
	}
	n := heldBlobs(dir)
	if berr != nil && n == 0 && errors.Is(berr, os.ErrNotExist) {
		// Nothing was ever admitted here: the damaged file is kept aside, and the node
		// starts as new.
		if err := setAside(path); err != nil {
			return nil, "", err
		}
		db, err := openChecked(path, false)
		return db, "", err
	}
	if errors.Is(berr, os.ErrNotExist) {
		berr = errors.New("there is none")
	}
	if berr != nil {
		return nil, "", fmt.Errorf("%w: %v; its backup %s cannot replace it (%v), and the content store holds %d blobs. "+
			"The daemon does not start on a database it cannot vouch for: it could delete blobs still needed or admit a revision older than one it ran. "+
			"Keep %s aside for inspection; to start this node afresh (every revision on its sources is then admitted again, older ones included), stop ferry and move %s away",
			ErrDamaged, why, backup, berr, n, path, dir)
	}
	if err := setAside(path); err != nil {
		return nil, "", err
	}
	crashPoint("restore:set-aside")
	if err := copyFile(backup, path); err != nil {
		return nil, "", fmt.Errorf("restore %s from %s: %w", path, backup, err)
	}
	db, err := openChecked(path, false)
	if err != nil {
		return nil, "", fmt.Errorf("restore %s from %s: %w", path, backup, err)
	}
	return db, fmt.Sprintf("%v; restored from %s", why, backup), nil
}

// setAside renames a non-empty database to ferry.db.damaged-<time> and removes an empty one.
func setAside(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Size() == 0:
		return os.Remove(path)
	}
	aside := path + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(path, aside); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// openChecked opens a bbolt file and checks it: bbolt's own page check, the schema, and every
// bundle and revision record (see checkRecords). bbolt panics on some damaged pages; the
// panic is turned into an error here, before the file is trusted.
func openChecked(path string, readOnly bool) (db *bolt.DB, err error) {
	if readOnly {
		if _, err := os.Lstat(path); err != nil {
			return nil, err
		}
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		if err := checkFileSize(path); err != nil {
			return nil, err
		}
	}
	// bbolt reads the file through mmap: a fault there (a page beyond the end of a damaged
	// file) is a panic this function recovers, not the end of the process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("bbolt: %v", p)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: readOnly})
	if err != nil {
		return nil, err
	}
	// A file bbolt has just created holds no bucket at all; anything else is checked before
	// it is written to.
	empty := true
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
	}); err != nil {
		db.Close()
		return nil, err
	}
	if empty && !readOnly {
		if err := initBuckets(db); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := db.View(checkTx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkFileSize refuses a database file shorter than its own meta page says it is. bbolt
// reads pages through mmap, and a page past the end of the file is a SIGBUS that ends the
// process, in goroutines (its page check) this package cannot guard; a truncated file is
// the common damage (a copy cut short, a filesystem repaired after a power cut).
func checkFileSize(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// Each meta page: a 16-byte page header, then magic, version, pageSize, flags (4 bytes
	// each), root bucket (16), freelist page, high-water page, txid, checksum (8 each). The
	// checksum is FNV-64a of the meta up to it. bbolt trusts the valid meta with the higher
	// txid; that one's high-water mark must fit in the file.
	const hdr, metaLen = 16, 64
	var best struct {
		txid, pgid uint64
		pageSize   uint32
		ok         bool
	}
	read := func(off int64) {
		buf := make([]byte, hdr+metaLen)
		if _, err := f.ReadAt(buf, off); err != nil {
			return
		}
		m := buf[hdr:]
		le := binary.LittleEndian
		if le.Uint32(m[0:]) != 0xED0CDAED {
			return
		}
		h := fnv.New64a()
		h.Write(m[:56])
		if h.Sum64() != le.Uint64(m[56:]) {
			return
		}
		if txid := le.Uint64(m[48:]); !best.ok || txid > best.txid {
			best.txid, best.pgid, best.pageSize, best.ok = txid, le.Uint64(m[40:]), le.Uint32(m[8:]), true
		}
	}
	read(0)
	if best.ok {
		read(int64(best.pageSize))
	} else {
		read(int64(os.Getpagesize()))
	}
	if !best.ok {
		return errors.New("no valid meta page (not a bbolt database, or its first pages are damaged)")
	}
	if need := int64(best.pgid) * int64(best.pageSize); fi.Size() < need {
		return fmt.Errorf("truncated: %d bytes, its meta page says %d", fi.Size(), need)
	}
	return nil
}

// checkTx is the check a database passes before it is trusted: bbolt's page check, then
// every record of the buckets that decide what the node keeps and runs decodes, names valid
// digests, and agrees with the others (a bundle's pointers name stored revisions, no
// revision is newer than the bundle's anti-downgrade line).
func checkTx(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		errs = append(errs, err)
		if len(errs) == 5 {
			break
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, b := range [][]byte{bucketMeta, bucketBundles, bucketRevisions, bucketInventories, bucketEvents} {
		if tx.Bucket(b) == nil {
			return fmt.Errorf("bucket %s missing", b)
		}
	}
	v := tx.Bucket(bucketMeta).Get([]byte("schema"))
	var schema int
	if v == nil || json.Unmarshal(v, &schema) != nil {
		return fmt.Errorf("meta.schema is %q", v)
	}
	if schema != SchemaVersion {
		return schemaError{schema}
	}
	return checkRecords(tx)
}

type schemaError struct{ found int }

func (e schemaError) Error() string {
	return fmt.Sprintf("state database schema %d, this ferry reads %d", e.found, SchemaVersion)
}

func checkRecords(tx *bolt.Tx) error {
	bundles := map[string]Bundle{}
	if err := tx.Bucket(bucketBundles).ForEach(func(k, v []byte) error {
		var b Bundle
		if err := json.Unmarshal(v, &b); err != nil {
			return fmt.Errorf("bundles/%q: %w", k, err)
		}
		if b.Name != string(k) {
			return fmt.Errorf("bundles/%q: record names %q", k, b.Name)
		}
		bundles[b.Name] = b
		return nil
	}); err != nil {
		return err
	}
	held := map[string]map[uint64]bool{}
	if err := tx.Bucket(bucketRevisions).ForEach(func(k, v []byte) error {
		var r Revision
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("revisions/%q: %w", k, err)
		}
		if string(k) != string(revisionKey(r.Name, r.Revision)) {
			return fmt.Errorf("revisions/%q: record is revision %d of %q", k, r.Revision, r.Name)
		}
		b, ok := bundles[r.Name]
		if !ok || r.Revision > b.Newest {
			return fmt.Errorf("revisions/%q: above the bundle's newest admitted revision", k)
		}
		for _, d := range append([]digest.Digest{r.Manifest.Digest}, digestsOf(r)...) {
			if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
				return fmt.Errorf("revisions/%q: blob %q: not a sha256 digest", k, d)
			}
		}
		if held[r.Name] == nil {
			held[r.Name] = map[uint64]bool{}
		}
		held[r.Name][r.Revision] = true
		return nil
	}); err != nil {
		return err
	}
	for name, b := range bundles {
		for field, rev := range map[string]uint64{"current": b.Current, "lastGood": b.LastGood} {
			if rev != 0 && !held[name][rev] {
				return fmt.Errorf("bundles/%q: %s is revision %d, which is not stored", name, field, rev)
			}
		}
		if b.Txn != nil && !held[name][b.Txn.Revision] {
			return fmt.Errorf("bundles/%q: the open rollout is of revision %d, which is not stored", name, b.Txn.Revision)
		}
	}
	return nil
}

func digestsOf(r Revision) []digest.Digest {
	out := make([]digest.Digest, len(r.Blobs))
	for i, b := range r.Blobs {
		out[i] = b.Digest
	}
	return out
}

// heldBlobs counts the files in the content store.
func heldBlobs(dir string) int {
	entries, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	return len(entries)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(to, 0o600, func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	})
}

// backup writes a consistent copy of the database to ferry.db.backup (bbolt's Tx.WriteTo in a
// read transaction, fsync, rename). It is called after every write that changes what the
// node holds or runs (admissions, state changes, inventories, retention), so the copy is at
// most the change in flight behind. A failure is logged, not returned: the write it follows
// has committed.
func (s *Store) backup() {
	s.backupMu.Lock()
	defer s.backupMu.Unlock()
	if err := s.writeBackup(); err != nil {
		s.log.Warn("state database backup not written", "file", filepath.Join(s.dir, backupFile), "err", err)
	}
}

func (s *Store) writeBackup() error {
	return writeAtomic(filepath.Join(s.dir, backupFile), 0o600, func(f *os.File) error {
		return s.db.View(func(tx *bolt.Tx) error {
			if err := checkRecords(tx); err != nil {
				return fmt.Errorf("not backed up: %w", err)
			}
			_, err := tx.WriteTo(f)
			return err
		})
	})
}

// update runs fn in a write transaction and, once it committed, refreshes the backup.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	if err := s.db.Update(fn); err != nil {
		return err
	}
	if !s.noBackup {
		s.backup()
	}
	return nil
}
