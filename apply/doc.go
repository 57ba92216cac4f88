// Package apply is the node's applier: it takes the components of one revision to one
// cluster, and keeps no state of its own. An [Applier] offers verbs that take what they need
// as data and hand back what they did; package rollout calls them inside its transaction and
// stores what they hand back:
//
//   - [Applier.Build] builds every component of a revision in dependency order (dependsOn,
//     else as listed): the rendered layer the bundler carried, or, for a component with
//     decryption (or a bundle without rendered layers), SOPS files decrypted in memory with
//     the node's age identities only ([Env.Keys], package apply/decrypt) and kustomize run
//     again; a Helm component's chart is loaded (package apply/render). Builds are cached.
//   - [Applier.Apply] applies one kustomize component: postBuild substitution runs now, just
//     before, so substituteFrom reads the ConfigMaps and Secrets its dependencies created.
//     Variables merge lowest first: [Env.Vars], each substituteFrom in order (read in the
//     component's targetNamespace, else [Env.Namespace], else "default"), substitute. The
//     node substitutes strictly: an unset variable without a default is an error. Objects
//     get the labels [LabelBundle] and [LabelComponent]; namespaced objects without a
//     namespace get the component's, cluster-scoped ones lose theirs (kinds the API server
//     does not serve yet are scoped by the revision's own CRDs). The component's [Inventory]
//     is handed to [ApplyOptions.Record], then its objects are sent, then the inventory with
//     what the API server returned is handed over again.
//   - [Applier.Release] is Apply for a Helm component (see Helm releases).
//   - [Applier.Wait] waits for a component's health; [Applier.Prune] deletes what earlier
//     revisions' inventories hold and the revision in place no longer has;
//     [Applier.Remove] takes a whole revision out; [Applier.Tree] reads the health of what
//     inventories list; [Applier.Preview] dry-runs a bundle not admitted.
//
// [RenderComponent] is Build and the substitution of Apply in one call; [Objects] runs it
// for `ferry render` and `ferry bundle diff`, so a preview renders with the node's code. A
// preview stops there: it does not add Ferry's labels or fill in namespaces.
//
// # Applying
//
// Every write is a server-side apply with field manager [FieldManager] ("ferry") and force:
// Ferry owns the fields its bundle declares and takes them over from other managers, as
// Flux's controllers do. A component is applied in two stages: first CustomResourceDefinitions,
// Namespaces, ClusterRoles, ClusterRoleBindings, StorageClasses, PriorityClasses,
// RuntimeClasses and IngressClasses, then, once each of its CRDs reports Established,
// everything else. Within a stage objects are sent in parallel, at most
// [Options.Concurrency] requests in flight; client-go's rate limiter is off unless the
// rest.Config sets a QPS. With the component's force, an object whose immutable fields
// changed is deleted, awaited gone and applied again; without it the error fails the
// revision.
//
// # Skipping what is unchanged
//
// Each object is hashed as it will be sent (labels and namespace set, a Secret's stringData
// folded into data). An inventory [Entry] records that hash and the resourceVersion the
// server returned. Before a stage is sent, its live objects are read with one LIST per
// resource and namespace, filtered by the label ferry.dev/bundle=<bundle>, and each object
// is compared with its record: the newest entry for it among the inventories of the last
// good, the current and the target revision ("records"), that is, what Ferry last sent. An
// object is skipped when the record has its hash and the live resourceVersion is the
// recorded one. When the version moved (and driftDetection is not disabled), the live object
// is compared on Ferry's own fields (covers: every field Ferry sends must hold the value
// Ferry sends; fields, labels and list items others added are not differences); if they
// hold, the object is skipped and the new version recorded, otherwise it is drift. An
// object with no record, another hash, or a record without a resourceVersion is sent. The
// inventory a component writes before sending (its plan) keeps the recorded
// resourceVersion only for objects whose hash is unchanged; the others have none, which
// means "may have been sent": after a crash they are applied again rather than trusted.
//
// # Prune
//
// Prune runs at the end and across components, so an object that moved from one component
// to another is kept and nothing is deleted before everything new is in place. An object is
// deleted when an inventory of the last good or current revision, of a component with
// prune set, lists it, the target revision no longer has it in any component, the live
// object still carries ferry.dev/bundle=<bundle>, and it is not annotated [PruneAnnotation]
// or [FluxPruneAnnotation] "disabled" (read on the live object). The delete carries the UID
// that was read as a precondition and propagates in the background; Namespaces and the other
// first-stage kinds are deleted last.
//
// # Health
//
// With wait, every object of the component, sent or skipped, must become Current by kstatus
// (fluxcd/cli-utils); healthChecks add objects to await, with the namespace as written (it
// is not defaulted). An object reported Failed counts only once it has stayed Failed for
// [Options.FailureWindow] (default 5s), since a rollout may pass through Failed. The wait
// is bounded by the component's timeout, else [Options.DefaultTimeout] (5m). Errors that
// say the API server is unreachable or overloaded are polled again.
//
// # Drift
//
// With [ApplyOptions.Sync] (package rollout's sync of the running revision) Apply uses the
// skip rules above and, with nothing changed, sends no write and records nothing. Drift (a live object that lost Ferry's fields, or
// was deleted) is handled alike by syncs and rollouts, as driftDetection.mode says
// (HelmRelease's field, on both component types): enabled (the default) applies the object
// again, warn reports it in [Report.Drift] and leaves it (and reports it again next time),
// disabled leaves it, even deleted, until the bundle changes it. driftDetection.ignore
// removes JSON pointers (RFC 6901) from the comparison, for the objects its target selects
// or for all.
//
// # Helm releases
//
// A Helm component becomes a Helm release (helm.go): the chart vendored in its layer is
// installed or upgraded with the Helm SDK, built from the component's own rest.Config
// (never a kubeconfig from the environment), storage in Secrets, Wait always with the
// component's timeout, maxHistory default 10. Values merge as Flux's (valuesFrom read as
// the component's identity). The release label [LabelSource] plus the release's stored
// values and chart version say whether an upgrade would change anything; if not, nothing
// is sent. Failures are remediated as Flux's HelmRelease says (retries, rollback or
// uninstall). A release left pending-* is marked failed and rolled back to its deployed
// revision (or uninstalled) before the action. The component's inventory records the Helm
// revision ([Release]) each Ferry revision deployed: a whole-revision rollback returns the
// release to exactly that one, and uninstalls releases the failed revision added. Once the
// action is done the manifest's objects are handled like the applier's own: drift compared
// (an object Ferry has no record of is compared with the live one, not sent), recorded,
// health awaited with kstatus.
//
// # Tenancy
//
// A component with serviceAccountName (or [Options.DefaultServiceAccount]) sends every
// request through a client impersonating system:serviceaccount:<ns>:<name> (tenancy.go);
// its applies go first as server-side dry runs. With targetNamespace, or when the keys
// that signed the revision are scoped to namespaces (bundles.Scope, recorded at admission),
// objects outside are refused before anything is sent; a key scope's serviceAccount is the
// one the component runs as. [Env.NoCrossNamespaceRefs] refuses references to other
// namespaces. Inventories record the identity, so prune and uninstall run as it.
//
// # Invariants
//
//   - No object is sent before the inventory of its component was handed to Record (and
//     stored by the caller), so after a crash at any point the objects a revision may have
//     created are known and can be pruned.
//   - The package does not import the store: what was applied before reaches it as data.
//   - Prune deletes only objects that carry the bundle's label, and the live copies of the
//     objects a revision applies are read, for comparison and health, through that label.
//     (force's delete-and-recreate goes by name: the object is one the bundle declares.)
//   - Decrypted files are never written to disk: the build cache below keeps them in memory
//     while the revision is cached, and inventories hold only a hash of each object,
//     Secrets included. (Failure reasons stored with a revision are the messages of
//     kustomize and the API server, which package decrypt's no-plaintext rule does not
//     cover.)
//   - Builds (kustomize output before substitution, loaded Helm charts) are cached by manifest
//     digest and signing scopes for the last two revisions built: a bundle's layers never change, and building is the
//     costly part of a sync with nothing to do.
//
// # What it does not do
//
// Helm's own guarantees stop at the release: a Helm component's objects are applied by the
// Helm SDK (three-way merge patches, one at a time), not by the applier's parallel server-side
// apply, and Helm hooks run outside the inventory (an object a hook leaves behind is Helm's,
// not pruned by Ferry). The package does not verify or admit bundles (packages verify and
// store, the daemon's ingest; it enforces the signing keys' scopes it is handed), keep
// inventories or revision states, roll back (package rollout), decide when to roll out or
// sync, or honour a suspended bundle (the daemon).
package apply
