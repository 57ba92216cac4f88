// Package store keeps what an edge node holds: every admitted revision of every bundle, in
// one bbolt database, and the blobs they are made of, in a content store beside it.
//
// # Layout under the state directory (default /var/lib/ferry)
//
//	ferry.db                     bbolt database (schema below)
//	ferry.db.backup              a checked copy of ferry.db (Tx.WriteTo), refreshed after every
//	                             admission, state change, inventory and retention
//	ferry.db.damaged-<time>      a database Open found damaged and replaced by the backup
//	ferry.lock                   flock held while a store is open (one daemon per directory)
//	oci-layout, index.json       the state directory is an OCI image layout: index.json lists
//	                             each kept revision's manifest as <name>-<revision>, rewritten
//	                             after every admission and GC (the database stays the truth)
//	blobs/sha256/<hex>           content store: one file per blob, named by its digest
//	tmp/                         blobs being written; emptied at Open
//
// # Database schema (schema version 1; values are JSON)
//
//	meta        "schema" → 1; "cursor/<reader>" → last event sequence a reader handled;
//	            "pending/<name>/<revision>" → the blobs an admission is copying, until it commits
//	bundles     <name> → Bundle{Name, Newest, Current, LastGood, Txn, Suspended, Removed}
//	revisions   <name>/<revision, 20 digits> → Revision{…, Blobs, State, History}
//	inventories <name>/<revision, 20 digits>/<component> → inventory (written by apply)
//	events      <sequence, 20 digits> → Event
//
// # Invariants
//
//   - A revision record exists only once every blob it lists is in the content store and
//     matched its digest while it was written: the blobs to copy are recorded as pending,
//     copied, and the record is written (and the pending entry deleted) in one transaction
//     after. A crash in between leaves blobs named only by the pending entry, which Open's
//     recovery and GC remove.
//   - The database is checked before anything writes to it (file size against its meta page,
//     bbolt's page check, every bundle and revision record decoded and consistent). Missing,
//     empty or damaged, it is replaced by ferry.db.backup, the damaged file kept aside; with
//     no usable backup and blobs in the content store, Open refuses (ErrDamaged) rather than
//     start as a new node, which would forget the anti-downgrade line and collect every blob.
//   - GC removes only what the database names as garbage (revisions retention drops, pending
//     entries of admissions that never committed), never a file merely unnamed, and nothing
//     at all while a kept revision lists a blob the content store lacks.
//   - Blob files appear only by rename from tmp/ after fsync, so a blob file is always whole.
//   - For each bundle name, revisions admitted are strictly increasing: a revision lower than
//     or equal to Bundle.Newest is refused (ErrDowngrade), and the same revision with another
//     digest is reported as equivocation (ErrEquivocation). Going back is a rollback to a
//     revision already stored, never an admission.
//   - A blob is kept while any kept revision lists it. References are derived from the
//     revision records at GC time rather than kept as counters, so they cannot drift after
//     a crash.
//   - The backup lags the database by at most the write in flight: restored, it can forget
//     the last admission (which the source then offers again, still newer than the line) or
//     the last state change (which the daemon redoes: an open rollout is resumed).
//   - Retention keeps the newest N revisions of a bundle (default 10) and always its current
//     and last-good ones.
//
// The store does not verify signatures or parse bundles: its caller (the daemon's ingest)
// verifies first and hands over descriptors to copy. It never talks to the cluster, and no
// transaction does I/O other than bbolt's own.
package store
