// Package daemon is the edge side of Ferry, `ferry daemon`: it takes bundles from sources,
// admits the ones the node's trust policy accepts into the store, keeps each bundle on its
// newest good revision through package rollout, and answers the local CLI.
//
// What it owns:
//
//   - The config (config.go): /etc/ferry/config.yaml decoded strictly, defaults filled in,
//     every problem returned at once with its field path. examples/config.yaml shows every
//     field; a test holds it to the code.
//   - Sources (sources.go): a registry repository (a tag, or the highest tag in a semver
//     range), USB mount points (.tar archives and OCI layout directories whose size and time
//     held still for one scan), an S3 prefix (.tar objects). Each source is polled by its own
//     goroutine and offers candidates with a key that changes when the copy changes (a
//     digest, a key and ETag, a path with size and time). A key is ingested once per run:
//     again only when the error looked transient to [apply.Transient] (a connection
//     refused or reset, an i/o timeout…), or when a read of it stalled
//     ([bundles.ErrStalled]) and that stuck read has since returned.
//   - Ingest (ingest.go, [Ingest]): verify, then copy. [Daemon.Import] is the same path for
//     `ferry import`.
//   - The reconcile loop (daemon.go): one goroutine per bundle, woken by a kick (a revision
//     admitted, `ferry reconcile`, `ferry resume`, start-up), by the drift interval, or by its
//     own backoff (1s doubling to 5m) after an error worth retrying. Each pass waits for the
//     API server, then does one thing: [rollout.Manager.Resume] an open rollout transaction,
//     [rollout.Manager.Rollout] the newest revision above the current one that is still in
//     state verified, or [rollout.Manager.Sync] a current revision that is the last good one
//     (drift). A suspended bundle's pass does nothing.
//   - The local API (api.go): HTTP+JSON on a unix socket, and [Client] for the CLI.
//   - Metrics (metrics.go): Prometheus series, /healthz and /readyz on a loopback address.
//   - Notifications (notify.go, [Notifier]): the store's event log posted to a webhook, the
//     log being the outbox.
//
// Invariants:
//
//   - Verify before write. Nothing of a bundle is written to the state directory before its
//     signatures have been verified against the node's policy, and every blob is
//     digest-checked as it is copied (see docs/TRUST.md). An S3 object is downloaded to a
//     temporary file outside the state directory first, as bundles.OpenSource does for any S3
//     address.
//   - One loop per bundle: [Daemon] starts a bundle's loop once, on its first kick, and every
//     later kick wakes that loop; kicks that arrive while one is pending coalesce.
//   - One apply at a time. The loops only decide; rollout.Manager serializes Rollout, Retry and
//     Sync on one mutex, so two bundles never apply to the cluster at once.
//   - Refusals never touch what runs. A poll that fails is logged. A candidate that cannot
//     be read or is refused is logged and recorded as a "Refused" event (a downgrade or
//     replay only at debug level). Neither changes a bundle's revisions or the cluster.
//   - A failed revision stays failed. A revision that failed or was rolled back is never
//     picked by a loop; only [Daemon.RollbackTo] (rollout.Manager.RollbackTo, `ferry rollback`)
//     applies it again.
//   - The stick is read-only. The USB scan follows no symlink and offers only regular .tar
//     files and directories holding an oci-layout file; it writes to a stick only when
//     ReceiptDir is configured, and then only the receipt. A layout directory is read through
//     bundles.LayoutFS and an archive opened with bundles.OpenRegular: regular files only,
//     no symlink followed, no hard link, a FIFO or device refused without being opened.
//   - A stick that hangs holds nothing. Every call on a stick (scan, open, read, receipt)
//     has the source's stallTimeout (bundles.Guard and the readers behind
//     bundles.OpenSource); a stick whose call is stuck is left out until it returns, and its
//     candidate is not read again before then. A pass of a poller runs on a goroutine that
//     pollSource abandons when the context is done, so Run returns even while a read is
//     stuck in the kernel.
//   - The API socket is owner-only: its directory 0700 (refused when found wider or owned
//     by another user), the socket 0600.
//
// What it does not do: render, apply, prune or roll back itself (package apply does, with
// its transaction in the store); parse trust policies or check signatures (package verify);
// run under systemd (package systemd; cmd/ferry wires sd_notify into [Options.Ready]).
// It serves the images of kept revisions to containerd on imagesAddress through package
// images (daemon/images), which also tells the applier which images the node holds.
// Not yet: reload its config or trust policy without a restart, or apply retention while it
// runs (store.Open does, so a start does).
package daemon
