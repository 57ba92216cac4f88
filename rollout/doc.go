// Package rollout is the node's rollout transaction: it takes a verified revision kept in
// the store to the cluster and keeps it there, and it alone writes rollout state to the
// store (the transaction record, revision states, inventories). A [Manager] runs one
// rollout, sync or removal at a time per cluster, whatever the number of bundles, and calls
// the verbs of package apply's stateless [apply.Applier], handing them the inventories as
// data and storing what they hand back.
//
// # A rollout
//
// [Manager.Rollout] applies revision N of a bundle:
//
//  1. Build, up front (apply.Applier.Build): every component in dependency order, confined
//     by the scopes of the keys that signed N (recorded at admission). A build error records
//     N failed and sends nothing.
//  2. store.Begin records "applying N, last good M, deadline T" in store.Bundle.Txn and makes
//     N current. T is now plus the sum of the components' timeouts plus
//     [Options.DeadlineMargin] (1m).
//  3. One pass over the components (pass.go, the one loop of rollouts, rollbacks and
//     syncs): each is applied (apply.Applier.Apply, or Release for Helm), its inventory
//     stored before its first object is sent and again after, then its health awaited
//     (apply.Applier.Wait). A substitution error surfaces only here, after Begin: it fails N
//     like an apply error.
//  4. Prune (apply.Applier.Prune), once every component is applied and healthy, of what the
//     inventories of M and of the current revision hold that N no longer has.
//  5. N is recorded healthy (current and last good; the transaction is closed), or failed
//     and rolled back. A rollout stopped by its context (the daemon shutting down), by the
//     cluster out of reach or by the state directory not writable ([Paused]) leaves the
//     transaction open for [Manager.Resume]; [Manager.Pause] stops its deadline meanwhile.
//  6. Retention: the store's GC runs once the pointers moved.
//
// # Rollback, retry and resume
//
// When N fails to apply or to become healthy, it is recorded failed (the transaction turns
// to "rolling back to M") and M is applied again through the same pass, with health; what
// N's inventories list and M does not have is pruned whatever N's prune settings (N was
// never good), still sparing objects annotated prune: disabled, and N's records are the
// newest, so an object N changed is sent back whatever its drift settings. Each Helm release
// returns to the Helm revision M deployed. Then N is recorded rolled-back and M is current.
// If the rollback fails too, the transaction stays open and the next Resume (or Rollout of
// N) tries it again. Without a last good revision nothing is rolled back: N stays current,
// failed. A revision that failed or was rolled back is never rolled out again by itself:
// Rollout refuses it with [ErrFailedBefore]; [Manager.Retry] is the explicit way, and
// [Manager.RollbackTo] the one for `ferry rollback`, which records every newer revision
// rolled back in the transaction that opens the rollout. Rolling out the current healthy
// revision again is a sync.
//
// [Manager.Resume] finishes a transaction a crash left open: before its deadline N is
// applied again (every step is idempotent; the first deadline is kept, moved on only by the
// time paused), after it, or if N had already failed, M is restored. An open removal is
// finished, never rolled out. The deadline is read only by Resume: a rollout that is running
// is bounded by the component timeouts and by its context, not by T.
//
// # Sync
//
// [Manager.Sync] brings the current, healthy revision back into the cluster with the
// applier's skip rules: with nothing changed it sends no write and stores nothing. It waits
// for health only where Helm made a new release revision, does not prune, and refuses while
// a transaction is open. Drift is reported in [Report.Drift].
//
// # Removal and reading
//
// [Manager.Remove] is a transaction too (store.BeginRemove, then apply.Applier.Remove, then
// store.FinishRemove; refused while a rollout is open, [ErrRolloutInProgress]).
// [Manager.Tree] and [Manager.Preview] read the store and the cluster and write nothing.
//
// # Invariants
//
//   - One apply at a time per Manager: Rollout, Retry, RollbackTo, Sync and Remove hold
//     one mutex.
//   - No object is sent before the transaction is recorded, and none before the inventory
//     of its component, so after a crash at any point the objects a revision may have
//     created are known and can be pruned.
//   - Every logical state change is one store transaction (store.Begin, SetState,
//     BeginRollback with its superseded revisions, BeginRemove, FinishRemove).
package rollout
