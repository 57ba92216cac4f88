package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/store"
)

// The kill test of the daemon (issue 23). The daemon runs as a child process and is
// SIGKILLed at random points of three phases: the ingest of a revision from a stick, the
// rollout of a revision with many objects, and the rollback of a revision that fails its
// health check. One revision is interrupted up to killsPerRevision times (kill, restart,
// kill again at another random point of what the restarted daemon does), then the daemon is
// left to finish, and the node must be on the right revision, with nothing of another
// revision left in the cluster, within the deadline the README states ("Power cuts and
// failed revisions": the sum of the components' timeouts plus a minute, counted from the
// first attempt).
//
// After every kill the store is opened read-only at the state the kill left (bbolt's own
// consistency check, the bundle record, every revision record) and checked: no revision
// lost or half-admitted, no state gone backwards, a good revision never failed, a failing
// one never healthy.
//
// FERRY_CRASH_RUNS sets the kills that must land inside each phase (default 30);
// FERRY_CRASH_SEED replays a run's random crash points, the delays after each phase's start
// (each run logs its seed); what the daemon is doing at a delay still depends on timing.

const (
	// killsPerRevision is how often one revision's ingest, rollout or rollback is
	// interrupted before the daemon may finish it. Well within the revision's deadline, so
	// a good revision is applied again rather than given up.
	killsPerRevision = 3
	// crashShared ConfigMaps are in every revision of the rollout and rollback phases,
	// each with the revision's number; crashOnly are in one revision only, so what a
	// revision left behind shows.
	crashShared = 200
	crashOnly   = 10
	// ingestNoiseFiles of ingestNoiseBytes random bytes each make the ingest's copy take a
	// while (gzip cannot shrink them).
	ingestNoiseFiles = 4
	ingestNoiseBytes = 8 << 20
	// goodTimeout is the health timeout of a good revision, failTimeout that of one that
	// fails (its rollout waits that long before it rolls back).
	goodTimeout = 30 * time.Second
	failTimeout = 2 * time.Second
)

// TestDaemonSurvivesRandomKills kills the daemon at random points of an ingest, a rollout
// and a rollback (each phase a site of its own, one after the other: run side by side they
// would slow each other down and skew the crash windows they measure) and checks after every
// restart that the node converges on the right revision with nothing of another left.
func TestDaemonSurvivesRandomKills(t *testing.T) {
	runs := 30
	if v := os.Getenv("FERRY_CRASH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("FERRY_CRASH_RUNS=%q: want a positive number", v)
		}
		runs = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("FERRY_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FERRY_CRASH_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("FERRY_CRASH_SEED=%d FERRY_CRASH_RUNS=%d (kills inside each phase)", seed, runs)
	begin := time.Now()
	var figures []string
	phases := []struct {
		name string
		run  func(*killRun)
	}{
		{"ingest", (*killRun).ingestPhase},
		{"rollout", (*killRun).rolloutPhase},
		{"rollback", (*killRun).rollbackPhase},
	}
	for i, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			k := newKillRun(t, "crash-"+ph.name, runs, seed, uint64(i))
			ph.run(k)
			f := k.figures(ph.name)
			t.Log(f)
			figures = append(figures, f)
		})
	}
	t.Logf("seed %d, %d kills per phase asked, all phases in %s:\n%s", seed, runs, time.Since(begin).Round(time.Second), strings.Join(figures, "\n"))
}

// killRun is one phase: a site, its stick, the daemon process running now, and the figures.
type killRun struct {
	t     *testing.T
	s     *site
	stick string
	c     *daemon.Client
	rng   *rand.Rand
	runs  int
	seed  uint64
	keep  int // the site's retention

	proc       *daemonProc // running now; nil between a kill and the restart
	killedProc *daemonProc // the one killed last
	past       []string    // logs of this revision's earlier daemon runs, for a failure report

	revs map[uint64]crashRev    // every revision shipped
	seen map[uint64]store.State // state of each revision at the last inspection
	// figures
	begin    time.Time
	inPhase  int            // kills that landed inside the phase
	killed   int            // kills in all
	kills    map[string]int // every kill, by where it landed
	restarts int
	window   time.Duration // how long the phase takes unkilled: crash points are drawn in it
	back     time.Duration // rollback phase: how long the rollback alone takes
	converge []time.Duration
	fromLog  int           // of converge, times read from the log of a daemon killed after it converged
	bound    time.Duration // the largest deadline converging was held to, from its restart
}

func newKillRun(t *testing.T, bundle string, runs int, seed, stream uint64) *killRun {
	s := newSite(t, bundle)
	k := &killRun{t: t, s: s, stick: filepath.Join(s.dir, "media", "usb0"), runs: runs, seed: seed,
		rng: rand.New(rand.NewPCG(seed, stream)), c: daemon.NewClient(filepath.Join(s.dir, "run", "ferry.sock")),
		revs: map[uint64]crashRev{}, seen: map[uint64]store.State{}, kills: map[string]int{}, begin: time.Now()}
	if err := os.MkdirAll(k.stick, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p := k.proc; p != nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return k
}

// configure writes the site's config: the stick scanned every interval, and retention.
func (k *killRun) configure(interval time.Duration, keep int) {
	k.keep = keep
	k.s.writeConfig(k.t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s/media], interval: %s}\nretention: %d\n", k.s.dir, interval, keep))
}

// ingestPhase: the daemon starts with a new revision on the stick and is killed at a
// uniformly random point within the time an unkilled start takes to admit it.
func (k *killRun) ingestPhase() {
	// Scanned often, so that most of an ingest is verifying and copying, not waiting for the
	// next scan.
	k.configure(25*time.Millisecond, 3)
	bound := goodTimeout + time.Minute // the rollout after the ingest: the README's deadline
	r := crashRev{rev: 1, only: 2, noise: true, timeout: goodTimeout}
	k.ship(r)
	p := k.start()
	at, _ := k.waitLine(k.line("admitted", 1, " version="), 2*time.Minute)
	up, _ := k.waitLine(regexp.MustCompile(`msg="daemon started"`), time.Second)
	k.window = at.Sub(p.started)
	k.t.Logf("unkilled ingest of %d MiB: the daemon started (store open) after %s, admitted the revision after %s",
		ingestNoiseFiles*ingestNoiseBytes>>20, up.Sub(p.started).Round(time.Millisecond), k.window.Round(time.Millisecond))
	k.settle(r, 0, p.started, p.started.Add(bound), false)
	k.stop()
	k.checkBlobs()
	for rev := uint64(2); k.more(); rev++ {
		k.past = nil
		r := crashRev{rev: rev, only: 2, noise: true, timeout: goodTimeout}
		k.ship(r)
		unfinished := false
		for range killsPerRevision {
			p := k.start()
			k.killAt(p.started.Add(k.draw(k.window)))
			st := k.inspect()
			if _, ok := st.revs[rev]; ok {
				k.kills["after the admission"]++
				unfinished = st.bundle.LastGood != rev
				if !unfinished {
					k.finishedBefore(k.line("healthy", rev, " applied="), p.started.Add(bound))
				}
				break
			}
			k.inPhase++
			unfinished = true
			// The store's recovery runs before "daemon started": what is left after it is
			// this run's.
			switch {
			case !strings.Contains(k.past[len(k.past)-1], `msg="daemon started"`):
				k.kills["ingest: starting (store opening, recovery)"]++
			case st.tmp > 0 || st.unreferenced > 0:
				k.kills["ingest: copying blobs"]++
			default:
				k.kills["ingest: scanning, verifying"]++
			}
		}
		p := k.start()
		k.settle(r, 0, p.started, p.started.Add(bound), unfinished)
		k.stop()
		k.checkBlobs()
	}
}

// rolloutPhase: a revision of 200-odd objects and a Deployment is rolled out, and the daemon
// is killed at a random point of the rollout (sending, health wait, prune) and again at a
// random point of each resumed rollout.
func (k *killRun) rolloutPhase() {
	k.configure(100*time.Millisecond, 1000)
	k.start()
	r1 := crashRev{rev: 1, shared: crashShared, only: crashOnly, deploy: true, timeout: goodTimeout}
	k.ship(r1)
	k.settle(r1, 0, time.Now(), time.Now().Add(goodTimeout+time.Minute), false)
	// The crash window is the shorter of two unkilled rollouts: one slowed down by whatever
	// else the machine does would put many kills after the (shorter, resumed) rollouts.
	for rev := uint64(2); rev <= 3; rev++ {
		r := crashRev{rev: rev, shared: crashShared, only: crashOnly, deploy: true, timeout: goodTimeout}
		k.ship(r)
		t0, _ := k.waitLine(k.line("applying", rev, " "), time.Minute)
		t1, _ := k.waitLine(k.line("healthy", rev, " applied="), time.Minute)
		if d := t1.Sub(t0); k.window == 0 || d < k.window {
			k.window = d
		}
		k.settle(r, 0, t0, t0.Add(goodTimeout+time.Minute), false)
	}
	for rev := uint64(4); k.more(); rev++ {
		k.past = nil
		r := crashRev{rev: rev, shared: crashShared, only: crashOnly, deploy: true, timeout: goodTimeout}
		k.ship(r)
		mark, _ := k.waitLine(k.line("applying", rev, " "), time.Minute)
		var deadline time.Time
		unfinished := false
		for i := 0; ; i++ {
			k.killAt(mark.Add(k.draw(k.window)))
			st := k.inspect()
			txn := st.bundle.Txn
			unfinished = txn != nil
			if unfinished {
				if txn.Revision != rev || txn.Phase != store.StateApplying {
					k.fatalf("after a kill the store holds the transaction %+v; revision %d is good and was being applied", *txn, rev)
				}
				if deadline.IsZero() {
					deadline = txn.Deadline
				}
				k.inPhase++
				k.kills["rollout: "+rolloutStep(k.past[len(k.past)-1], k.s.bundle, rev)]++
			} else {
				k.kills["after the rollout"]++
				if i > 0 {
					k.finishedBefore(k.line("healthy", rev, " applied="), deadline)
				}
			}
			p := k.start()
			if !unfinished || i == killsPerRevision-1 {
				if deadline.IsZero() {
					deadline = p.started.Add(goodTimeout + time.Minute)
				}
				k.settle(r, 0, p.started, deadline, unfinished)
				break
			}
			mark, _ = k.waitLine(k.line("applying", rev, " "), time.Minute)
		}
	}
}

// rollbackPhase: a revision whose Deployment never becomes Ready (2 s health timeout) is
// rolled out after a good one; the daemon is killed at a random point of its apply, its
// health wait or the rollback, and again in what each restart resumes.
func (k *killRun) rollbackPhase() {
	k.configure(100*time.Millisecond, 1000)
	k.start()
	good := crashRev{rev: 1, shared: crashShared, only: crashOnly, deploy: true, timeout: goodTimeout}
	k.ship(good)
	k.settle(good, 0, time.Now(), time.Now().Add(goodTimeout+time.Minute), false)
	f := crashRev{rev: 2, shared: crashShared, only: crashOnly, deploy: true, fail: true, timeout: failTimeout}
	k.ship(f)
	t0, _ := k.waitLine(k.line("applying", 2, " "), time.Minute)
	t1, _ := k.waitLine(k.line("rolling back", 2, " "), time.Minute)
	t2, _ := k.waitLine(k.line("rolled back", 2, " "), time.Minute)
	k.window, k.back = t2.Sub(t0), t2.Sub(t1)
	// Past the deadline the README promises only that the last good revision is restored;
	// that restore is bounded by its own components' timeouts.
	k.settle(good, 2, t0, t0.Add(failTimeout+time.Minute+goodTimeout), false)
	resumed := regexp.MustCompile(k.line("applying", 0, " ").String() + "|" + k.line("rolling back", 0, " ").String())
	for rev := uint64(3); k.more(); rev++ {
		k.past = nil
		f := crashRev{rev: rev, shared: crashShared, only: crashOnly, deploy: true, fail: true, timeout: failTimeout}
		k.ship(f)
		mark, _ := k.waitLine(k.line("applying", rev, " "), time.Minute)
		window := k.window
		var deadline time.Time
		unfinished := false
		for i := 0; ; i++ {
			k.killAt(mark.Add(k.draw(window)))
			st := k.inspect()
			txn := st.bundle.Txn
			unfinished = txn != nil
			if unfinished {
				if txn.Revision != rev || txn.LastGood != good.rev {
					k.fatalf("after a kill the store holds the transaction %+v; revision %d was being rolled out after %d", *txn, rev, good.rev)
				}
				if deadline.IsZero() {
					deadline = txn.Deadline
				}
				k.inPhase++
				if txn.Phase == store.StateFailed {
					k.kills["rollback: rolling back to the good revision"]++
				} else {
					k.kills["rollback: "+rolloutStep(k.past[len(k.past)-1], k.s.bundle, rev)+" (failing revision)"]++
				}
			} else {
				k.kills["after the rollback"]++
				if i > 0 {
					k.finishedBefore(k.line("rolled back", rev, " "), deadline.Add(goodTimeout))
				}
			}
			p := k.start()
			if !unfinished || i == killsPerRevision-1 {
				if deadline.IsZero() {
					deadline = p.started.Add(failTimeout + time.Minute)
				}
				k.settle(good, rev, p.started, deadline.Add(goodTimeout), unfinished)
				break
			}
			var text string
			mark, text = k.waitLine(resumed, time.Minute)
			if window = k.window; strings.Contains(text, `msg="rolling back"`) {
				window = k.back
			}
		}
	}
}

// more reports whether the phase needs more kills inside it; it fails the phase when most
// kills land outside it (a crash window measured wrong, or a phase that no longer happens).
func (k *killRun) more() bool {
	k.t.Helper()
	if k.killed > 4*k.runs+20 {
		k.fatalf("only %d of %d kills landed inside the phase (crash points drawn in %s)", k.inPhase, k.killed, k.window)
	}
	return k.inPhase < k.runs
}

// rolloutStep names the step a rollout of rev was at when its daemon, whose log this is, was
// killed.
func rolloutStep(log, bundle string, rev uint64) string {
	prefix := fmt.Sprintf("bundle=%s revision=%d component=app", bundle, rev)
	switch {
	case strings.Contains(log, "msg=healthy "+prefix):
		return "pruning, committing"
	case strings.Contains(log, "msg=applied "+prefix):
		return "waiting for health"
	default:
		return "sending objects"
	}
}

// settle waits until the node is on revision r (healthy, nothing open) and, when failed is
// set, revision failed is recorded rolled back; then checks the history and the cluster.
// restart is when the daemon that must get there started, deadline when it must be there.
// A restart that had something to finish (unfinished) counts in the convergence figures.
func (k *killRun) settle(r crashRev, failed uint64, restart, deadline time.Time, unfinished bool) {
	k.t.Helper()
	newest := max(r.rev, failed)
	var last []daemon.BundleStatus
	for {
		last = nil
		if err := k.c.Do(k.t.Context(), "GET", "/v1/status", nil, &last); err == nil {
			i := slices.IndexFunc(last, func(b daemon.BundleStatus) bool { return b.Bundle == k.s.bundle })
			if i >= 0 && last[i].Revision == r.rev && last[i].State == store.StateHealthy && last[i].Applying == 0 && last[i].Newest == newest {
				break
			}
		}
		if time.Now().After(deadline) {
			k.fatalf("the node is not on revision %d (newest %d) by %s, %s after the restart (the deadline); status %+v",
				r.rev, newest, deadline.Format(time.StampMilli), deadline.Sub(restart).Round(time.Millisecond), last)
		}
		select {
		case <-k.proc.exited:
			k.fatalf("the daemon exited: %v", k.proc.err)
		case <-time.After(20 * time.Millisecond): // polling the socket, as `ferry status` would
		}
	}
	took := time.Since(restart)
	if unfinished {
		k.converge = append(k.converge, took)
		k.bound = max(k.bound, deadline.Sub(restart))
	}
	var hist []store.Revision
	if err := k.c.Do(k.t.Context(), "GET", "/v1/bundles/"+k.s.bundle+"/history", nil, &hist); err != nil {
		k.fatalf("history: %v", err)
	}
	byRev := map[uint64]store.Revision{}
	for _, h := range hist {
		byRev[h.Revision] = h
	}
	for rev := uint64(1); rev <= newest; rev++ {
		h, ok := byRev[rev]
		if !ok {
			if int(newest-rev) >= k.keep {
				continue // retention
			}
			k.fatalf("revision %d is not in the history any more: %+v", rev, hist)
		}
		want := store.StateHealthy
		if k.revs[rev].fail {
			want = store.StateRolledBack
		}
		if h.State != want || (want == store.StateRolledBack && !slices.ContainsFunc(h.History, func(tr store.Transition) bool { return tr.State == store.StateFailed })) {
			k.fatalf("revision %d is %s with history %+v; want %s", rev, h.State, h.History, want)
		}
	}
	k.checkCluster(r, failed)
}

// checkCluster checks that the bundle's objects in the cluster are exactly revision r's.
func (k *killRun) checkCluster(r crashRev, failed uint64) {
	k.t.Helper()
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		k.t.Fatal(err)
	}
	cms, err := cs.CoreV1().ConfigMaps(k.s.ns).List(k.t.Context(), metav1.ListOptions{LabelSelector: apply.LabelBundle + "=" + k.s.bundle})
	if err != nil {
		k.fatalf("list ConfigMaps: %v", err)
	}
	want := r.configMaps()
	var extra, stale []string
	for _, cm := range cms.Items {
		if !want[cm.Name] {
			extra = append(extra, cm.Name)
		} else if cm.Data["revision"] != strconv.FormatUint(r.rev, 10) {
			stale = append(stale, cm.Name+"="+cm.Data["revision"])
		}
		delete(want, cm.Name)
	}
	if len(extra)+len(stale)+len(want) > 0 {
		sort.Strings(extra)
		k.fatalf("on revision %d (failed %d) the cluster holds ConfigMaps of another revision %v, an old content %v, and lacks %d of revision %d's",
			r.rev, failed, extra, stale, len(want), r.rev)
	}
	if !r.deploy {
		return
	}
	d, err := cs.AppsV1().Deployments(k.s.ns).Get(k.t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		k.fatalf("Deployment web: %v", err)
	}
	tmpl := d.Spec.Template
	if img := tmpl.Spec.Containers[0].Image; img != r.image() || tmpl.Labels[testbed.FailLabel] != "" {
		k.fatalf("on revision %d the Deployment runs %s with labels %v", r.rev, img, tmpl.Labels)
	}
}

// crashState is what a kill left in the state directory.
type crashState struct {
	bundle       store.Bundle
	revs         map[uint64]store.Revision
	tmp          int // files in tmp/ (a blob being written)
	unreferenced int // blob files no revision lists (an admission that did not commit)
}

// inspect opens the store read-only as the kill left it (the daemon's recovery has not run)
// and checks what must hold after any crash.
func (k *killRun) inspect() crashState {
	k.t.Helper()
	dir := filepath.Join(k.s.dir, "state")
	st := crashState{revs: map[uint64]store.Revision{}}
	db, err := bolt.Open(filepath.Join(dir, "ferry.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		k.fatalf("the store does not open after the kill: %v", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("bbolt check: %w", errors.Join(errs...))
		}
		// Bucket layout and JSON values: store/doc.go.
		if b := tx.Bucket([]byte("bundles")); b != nil {
			if v := b.Get([]byte(k.s.bundle)); v != nil {
				if err := json.Unmarshal(v, &st.bundle); err != nil {
					return fmt.Errorf("bundle record: %w", err)
				}
			}
		}
		b := tx.Bucket([]byte("revisions"))
		if b == nil {
			return nil
		}
		c, prefix := b.Cursor(), []byte(k.s.bundle+"/")
		for key, v := c.Seek(prefix); key != nil && strings.HasPrefix(string(key), string(prefix)); key, v = c.Next() {
			var r store.Revision
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("revision %s: %w", key, err)
			}
			st.revs[r.Revision] = r
		}
		return nil
	})
	db.Close()
	if err != nil {
		k.fatalf("the store after the kill: %v", err)
	}
	tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	st.tmp = len(tmp)
	listed := map[string]bool{}
	for _, r := range st.revs {
		for _, d := range r.Blobs {
			listed[d.Digest.Encoded()] = true
			if fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded())); err != nil || fi.Size() != d.Size {
				k.fatalf("revision %d lists blob %s, which the kill left missing or of another size (%v)", r.Revision, d.Digest, err)
			}
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	for _, e := range blobs {
		if !listed[e.Name()] {
			st.unreferenced++
		}
	}
	k.checkState(st)
	return st
}

// checkState checks one crash state against what was seen before: no revision lost (but
// to retention), none half-admitted, no state gone backwards, a good revision never
// failed and a failing one never healthy, the pointers naming stored revisions.
func (k *killRun) checkState(st crashState) {
	k.t.Helper()
	b := st.bundle
	var newest uint64
	for rev := range st.revs {
		newest = max(newest, rev)
	}
	if b.Newest != newest {
		k.fatalf("the bundle record says newest %d, the newest revision record is %d", b.Newest, newest)
	}
	for rev, was := range k.seen {
		r, ok := st.revs[rev]
		if !ok {
			if int(newest-rev) >= k.keep && rev != b.Current && rev != b.LastGood {
				delete(k.seen, rev) // retention
				continue
			}
			k.fatalf("revision %d (%s before this kill) is lost", rev, was)
		}
		if stateRank(r.State) < stateRank(was) {
			k.fatalf("revision %d went from %s back to %s", rev, was, r.State)
		}
	}
	for rev, r := range st.revs {
		fail := k.revs[rev].fail
		if (!fail && (r.State == store.StateFailed || r.State == store.StateRolledBack)) || (fail && r.State == store.StateHealthy) {
			k.fatalf("revision %d (failing: %v) is %s: %+v", rev, fail, r.State, r.History)
		}
		k.seen[rev] = r.State
	}
	for _, p := range []uint64{b.Current, b.LastGood} {
		if _, ok := st.revs[p]; p != 0 && !ok {
			k.fatalf("the bundle record %+v names revision %d, which is not stored", b, p)
		}
	}
	if t := b.Txn; t != nil {
		if _, ok := st.revs[t.Revision]; !ok || t.Revision != b.Current {
			k.fatalf("the open transaction %+v is not for the current, stored revision (record %+v)", *t, b)
		}
	}
}

func stateRank(s store.State) int {
	switch s {
	case store.StateVerified:
		return 0
	case store.StateApplying:
		return 1
	case store.StateHealthy, store.StateFailed:
		return 2
	case store.StateRolledBack:
		return 3
	}
	return -1
}

// checkBlobs opens the store of the stopped daemon and reads every blob it lists.
func (k *killRun) checkBlobs() {
	k.t.Helper()
	st, err := store.Open(filepath.Join(k.s.dir, "state"), store.Options{Keep: k.keep})
	if err != nil {
		k.fatalf("the store does not open: %v", err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		k.fatalf("store check: %v", err)
	}
}

// crashRev is one revision of a phase's bundle: a Namespace, the "site" ConfigMap, shared
// ConfigMaps every revision has and only ones of its own (all holding its number), a
// Deployment whose image tag is its number (never Ready when fail), and, for the ingest,
// megabytes of random text beside the manifests.
type crashRev struct {
	rev          uint64
	shared, only int
	deploy, fail bool
	noise        bool
	timeout      time.Duration
}

func (r crashRev) configMaps() map[string]bool {
	m := map[string]bool{"site": true}
	for i := range r.shared {
		m[fmt.Sprintf("shared-%03d", i)] = true
	}
	for i := range r.only {
		m[fmt.Sprintf("only-%d-%02d", r.rev, i)] = true
	}
	return m
}

func (r crashRev) image() string { return fmt.Sprintf("registry.local/web:%d", r.rev) }

// ship builds and signs r, writes it beside the stick and renames it onto it (so a scan
// never sees half a file), and removes the previous revision's archive: a stick carries the
// newest revision only, as a technician's would.
func (k *killRun) ship(r crashRev) {
	k.t.Helper()
	s, ns := k.s, k.s.ns
	k.revs[r.rev] = r
	files := map[string]string{
		"ferry.yaml": fmt.Sprintf("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: %s}\nspec:\n  version: 1.0.%d\n  components:\n"+
			"    - name: app\n      kustomize: {path: ./app, prune: true, wait: true, timeout: %s}\n", s.bundle, r.rev, r.timeout),
		"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n",
	}
	var cms strings.Builder
	for name := range r.configMaps() {
		fmt.Fprintf(&cms, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, namespace: %s}\ndata: {revision: \"%d\"}\n", name, ns, r.rev)
	}
	files["app/cm.yaml"] = cms.String()
	if r.deploy {
		labels := "app: web"
		if r.fail {
			labels += ", " + testbed.FailLabel + ": \"true\""
		}
		files["app/deploy.yaml"] = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: " + ns + "}\nspec:\n  replicas: 1\n" +
			"  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {" + labels + "}}\n    spec: {containers: [{name: web, image: " + r.image() + "}]}\n"
	}
	if r.noise {
		var key [32]byte
		for i := range key {
			key[i] = byte(k.rng.Uint32())
		}
		raw := make([]byte, ingestNoiseBytes)
		for i := range ingestNoiseFiles {
			rand.NewChaCha8(key).Read(raw)
			key[0]++
			files[fmt.Sprintf("app/noise-%d.bin", i)] = string(raw)
		}
	}
	mem, desc := s.signed(k.t, r.rev, files)
	name := fmt.Sprintf("%s-%d.tar", s.bundle, r.rev)
	tmp := filepath.Join(s.dir, name)
	if _, err := bundles.Copy(k.t.Context(), memSource{mem}, desc, mustAddress(k.t, tmp), bundles.Options{}); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.stick, name)); err != nil {
		k.t.Fatal(err)
	}
	os.Remove(filepath.Join(k.stick, fmt.Sprintf("%s-%d.tar", s.bundle, r.rev-1)))
}

// line matches the daemon's log line with message msg about revision rev (any revision
// when 0), followed by next.
func (k *killRun) line(msg string, rev uint64, next string) *regexp.Regexp {
	if strings.Contains(msg, " ") {
		msg = `"` + msg + `"`
	}
	n := `\d+`
	if rev != 0 {
		n = strconv.FormatUint(rev, 10)
	}
	return regexp.MustCompile(`msg=` + regexp.QuoteMeta(msg) + ` bundle=` + regexp.QuoteMeta(k.s.bundle) + ` revision=` + n + regexp.QuoteMeta(next))
}

// draw is a crash point: a uniformly random delay shorter than w.
func (k *killRun) draw(w time.Duration) time.Duration {
	if w <= 0 {
		return 0
	}
	return time.Duration(k.rng.Int64N(int64(w)))
}

// daemonProc is one run of the daemon as a child process of the test binary.
type daemonProc struct {
	cmd     *exec.Cmd
	started time.Time
	log     *lineLog
	exited  chan struct{} // closed once the process ended and its output is read
	err     error         // Wait's result, set before exited is closed
}

func (k *killRun) start() *daemonProc {
	k.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+k.s.config)
	l := &lineLog{changed: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = l, l
	p := &daemonProc{cmd: cmd, log: l, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	p.started = time.Now()
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	k.proc = p
	k.restarts++
	return p
}

// killAt SIGKILLs the running daemon at the given time; it must not have exited before.
func (k *killRun) killAt(at time.Time) {
	k.t.Helper()
	p := k.proc
	select {
	case <-time.After(time.Until(at)): // the crash point drawn, not a wait for a condition
	case <-p.exited:
		k.fatalf("the daemon exited by itself before it was killed: %v", p.err)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	k.killed++
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		k.fatalf("the daemon exited by itself before it was killed: %v", p.err)
	}
	k.past = append(k.past, p.log.String())
	k.killedProc, k.proc = p, nil
}

// finishedBefore counts, in the convergence figures, a restarted daemon that was killed only
// after it had finished what the restart left it (its log has done): how long that took from
// its start, which must be before deadline.
func (k *killRun) finishedBefore(done *regexp.Regexp, deadline time.Time) {
	k.t.Helper()
	p := k.killedProc
	lines, _ := p.log.since(0)
	i := slices.IndexFunc(lines, func(l logLine) bool { return done.MatchString(l.text) })
	if i < 0 {
		k.fatalf("the store says the phase is over, but the daemon killed last did not log %s", done)
	}
	if lines[i].at.After(deadline) {
		k.fatalf("the restarted daemon finished at %s, after the deadline %s", lines[i].at.Format(time.StampMilli), deadline.Format(time.StampMilli))
	}
	k.converge = append(k.converge, lines[i].at.Sub(p.started))
	k.fromLog++
	k.bound = max(k.bound, deadline.Sub(p.started))
}

// stop stops the running daemon with SIGTERM, as systemctl stop does.
func (k *killRun) stop() {
	k.t.Helper()
	p := k.proc
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		k.fatalf("the daemon did not stop within 20s of SIGTERM")
	}
	if p.err != nil {
		k.fatalf("the daemon stopped with %v", p.err)
	}
	k.past = append(k.past, p.log.String())
	k.proc = nil
}

// waitLine waits for a line of the running daemon's log that matches re and returns when it
// was written, and the line.
func (k *killRun) waitLine(re *regexp.Regexp, timeout time.Duration) (time.Time, string) {
	k.t.Helper()
	p := k.proc
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for i := 0; ; {
		lines, changed := p.log.since(i)
		for _, l := range lines {
			if re.MatchString(l.text) {
				return l.at, l.text
			}
		}
		i += len(lines)
		select {
		case <-changed:
		case <-p.exited:
			if lines, _ := p.log.since(i); slices.ContainsFunc(lines, func(l logLine) bool { return re.MatchString(l.text) }) {
				continue
			}
			k.fatalf("the daemon exited (%v) before logging %s", p.err, re)
		case <-timer.C:
			k.fatalf("the daemon did not log %s within %s", re, timeout)
		}
	}
}

// fatalf fails the phase with the logs of the daemons that ran for this revision.
func (k *killRun) fatalf(format string, args ...any) {
	k.t.Helper()
	for i, l := range k.past {
		k.t.Logf("log of daemon run %d of %d for this revision (killed or stopped):\n%s", i+1, len(k.past), l)
	}
	if k.proc != nil {
		k.t.Logf("log of the daemon running now:\n%s", k.proc.log)
	}
	k.t.Fatalf("FERRY_CRASH_SEED=%d, after %d kills (%d inside the phase): %s", k.seed, k.killed, k.inPhase, fmt.Sprintf(format, args...))
}

// figures says what the phase did: kills by where they landed, and how long a restarted
// daemon took to converge.
func (k *killRun) figures(phase string) string {
	var where []string
	for w, n := range k.kills {
		where = append(where, fmt.Sprintf("%s %d", w, n))
	}
	sort.Strings(where)
	c := slices.Clone(k.converge)
	slices.Sort(c)
	q := func(p float64) time.Duration {
		if len(c) == 0 {
			return 0
		}
		return c[max(0, int(math.Ceil(p*float64(len(c))))-1)].Round(time.Millisecond)
	}
	window := k.window.Round(time.Millisecond).String()
	if k.back > 0 {
		window += fmt.Sprintf(" (the rollback alone %s)", k.back.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s: %d kills inside the phase, %d in all (%s); %d revisions, %d daemon starts; crash points drawn in %s (the phase unkilled); "+
		"restart→converged over %d restarts with work left (%d of them killed after converging, timed by their log): min %s, median %s, p95 %s, max %s (deadline up to %s after the restart); phase took %s",
		phase, k.inPhase, k.killed, strings.Join(where, ", "), len(k.revs), k.restarts, window,
		len(c), k.fromLog, q(0), q(0.5), q(0.95), q(1), k.bound.Round(time.Second), time.Since(k.begin).Round(time.Second))
}

// lineLog is a daemon's output, kept line by line with the time each line arrived, so a
// test can act at the moment the daemon reaches a step.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []logLine
	changed chan struct{} // closed and replaced at each complete line
}

type logLine struct {
	at   time.Time
	text string
}

func (l *lineLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := slices.Index(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, logLine{at: now, text: string(l.partial[:i])})
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// since returns the lines from the i-th on, and a channel closed when more arrive.
func (l *lineLog) since(i int) ([]logLine, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines[i:]), l.changed
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, x := range l.lines {
		b.WriteString(x.text)
		b.WriteByte('\n')
	}
	b.Write(l.partial)
	return b.String()
}
