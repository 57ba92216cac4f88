package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/apply/decrypt"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon/images"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// Options are what the binary adds to a config.
type Options struct {
	// Log receives structured logs; nil discards them.
	Log *slog.Logger
	// Ready is called once the daemon serves its API (systemd's READY=1).
	Ready func()
	// Apply overrides applier options (tests shorten poll intervals).
	Apply apply.Options
	// Rollout overrides rollout options (tests shorten the deadline margin).
	Rollout rollout.Options
}

// Daemon is `ferry daemon`: it takes bundles from its sources, verifies and admits them,
// applies the newest revision of each bundle, corrects drift, and serves the local API.
type Daemon struct {
	cfg    *Config
	opts   Options
	log    *slog.Logger
	logs   *logRing // the recent log, for ferry logs
	st     *store.Store
	eng    *rollout.Manager
	policy verify.Policy
	m      *metrics
	notify *Notifier
	images *images.Server

	mu      sync.Mutex
	loops   map[string]chan struct{} // bundle → kick channel of its reconcile loop
	lastErr map[string]string        // bundle → last reconcile error, for `ferry status`
	started context.Context          // the Run context, for loops started later
	group   *errgroup.Group
	handled map[string]bool // candidate keys already verified (or refused for good)
	// importing counts the bytes of the `ferry import` in progress, if any.
	importing *bundles.Progress
	refused   map[string]bool // candidate keys a Refused event was written for
	paused    map[string]bool // bundles whose rollout is paused (one RolloutPaused event each time)
	receipts  receipts        // where the node's receipt goes, and its key
}

// New loads what the config names (trust policy, age key, kubeconfig) and opens the store.
// Every problem is reported before anything runs.
func New(cfg *Config, opts Options) (*Daemon, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	logs := newLogRing()
	log = slog.New(&ringHandler{next: log.Handler(), ring: logs})
	f, err := loadFiles(cfg)
	if err != nil {
		return nil, err
	}
	policy, restCfg := f.policy, f.rest
	aopts := opts.Apply
	aopts.Env.Vars, aopts.Env.Namespace, aopts.Env.Keys, aopts.Log = cfg.Variables, cfg.Namespace, f.keys, log
	aopts.DefaultServiceAccount, aopts.Env.NoCrossNamespaceRefs = cfg.DefaultServiceAccount, cfg.NoCrossNamespaceRefs
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("stateDir: %w", err)
	}
	margin, _ := ParseSize(cfg.SpaceMargin) // validated with the config; "" is the default
	st, err := store.Open(cfg.StateDir, store.Options{Keep: cfg.Retention, Log: log, SpaceMargin: margin})
	if err != nil {
		return nil, fmt.Errorf("stateDir: %w", err)
	}
	imgs := images.NewServer(st, log)
	if cfg.ImagesAddress != "off" && aopts.Images == nil {
		aopts.Images = imgs
	}
	ap, err := apply.New(restCfg, aopts)
	if err != nil {
		st.Close()
		return nil, err
	}
	ropts := opts.Rollout
	ropts.Log = log
	eng := rollout.New(st, ap, ropts)
	d := &Daemon{cfg: cfg, opts: opts, log: log, logs: logs, st: st, eng: eng, policy: policy, m: newMetrics(), images: imgs,
		loops: map[string]chan struct{}{}, lastErr: map[string]string{}, handled: map[string]bool{}, refused: map[string]bool{}, paused: map[string]bool{},
		receipts: receipts{kick: make(chan struct{}, 1)}}
	if cfg.Webhook != nil {
		if d.notify, err = NewNotifier(st, *cfg.Webhook, log); err != nil {
			st.Close()
			return nil, fmt.Errorf("webhook: %w", err)
		}
	}
	return d, nil
}

// CheckConfig loads every file the config names (trust policy and its keys, age key,
// kubeconfig, registry CA and credentials, S3 credentials) without opening the store, so it
// can run beside a running daemon (ferry daemon --check-config).
func CheckConfig(cfg *Config) error {
	_, err := loadFiles(cfg)
	return err
}

// files are what a config names, loaded.
type files struct {
	policy verify.Policy
	keys   *decrypt.Keys
	rest   *rest.Config
}

// loadFiles loads and checks every file cfg names; all problems are reported together.
func loadFiles(cfg *Config) (files, error) {
	var (
		f    files
		err  error
		errs []error
	)
	if f.policy, err = verify.LoadPolicy(cfg.Trust); err != nil {
		errs = append(errs, fmt.Errorf("trust: %w", err))
	}
	if cfg.AgeKeyFile != "" {
		if f.keys, err = decrypt.LoadKeys(cfg.AgeKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("ageKeyFile: %w", err))
		}
	}
	if f.rest, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig); err != nil {
		errs = append(errs, fmt.Errorf("kubeconfig: %w", err))
	}
	readable := func(field, path string) {
		if path == "" {
			return
		}
		if fh, err := os.Open(path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		} else {
			fh.Close()
		}
	}
	for i, s := range cfg.Sources {
		field := fmt.Sprintf("sources[%d]", i)
		if r := s.Registry; r != nil {
			readable(field+".registry.caFile", r.CAFile)
			readable(field+".registry.dockerConfig", r.DockerConfig)
		}
		if s3 := s.S3; s3 != nil {
			readable(field+".s3.credentialsFile", s3.CredentialsFile)
		}
	}
	return f, errors.Join(errs...)
}

// Close closes the store. Call it after Run returned.
func (d *Daemon) Close() error { return d.st.Close() }

// Run serves until ctx is done: the API socket, metrics, notifications, one poller per
// source and one reconcile loop per bundle. It returns the first error that stops it.
func (d *Daemon) Run(ctx context.Context) error {
	// A node that sends receipts has its key from the start: headquarters can collect
	// node.pub before the first stick comes back.
	if d.wantsReceipts() {
		n, err := d.nodeKey()
		if err != nil {
			return err
		}
		d.log.Info("node key", "node", n.name, "key", n.key.ID, "public", n.pub)
	}
	ln, err := listenUnix(d.cfg.Socket)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	d.mu.Lock()
	d.started, d.group = ctx, g
	d.mu.Unlock()
	api := &http.Server{Handler: d.apiHandler(), ReadHeaderTimeout: 5 * time.Second}
	g.Go(func() error { return serve(ctx, api, ln) })
	if d.cfg.MetricsAddress != "off" {
		mln, err := net.Listen("tcp", d.cfg.MetricsAddress)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metricsAddress: %w", err)
		}
		ms := &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error { return serve(ctx, ms, mln) })
	}
	if d.cfg.ImagesAddress != "off" {
		iln, err := net.Listen("tcp", d.cfg.ImagesAddress)
		if err != nil {
			ln.Close()
			return fmt.Errorf("imagesAddress: %w", err)
		}
		g.Go(func() error { return d.images.Run(ctx, iln) })
	}
	if d.notify != nil {
		g.Go(func() error { return d.notify.Run(ctx) })
	}
	if d.wantsReceipts() {
		g.Go(func() error { d.receiptLoop(ctx); return nil })
	}
	for _, s := range d.cfg.Sources {
		g.Go(func() error { d.pollSource(ctx, s.Name, sourceOf(s)); return nil })
	}
	// A poller's pass that shutdown stopped waiting for may still admit a bundle and kick its
	// loop: once ctx is done, kicks start no loop, so nothing is added to g after it drains.
	g.Go(func() error {
		<-ctx.Done()
		d.mu.Lock()
		d.started = nil
		d.mu.Unlock()
		return nil
	})
	bs, err := d.st.Bundles()
	if err != nil {
		return err
	}
	for _, b := range bs {
		d.kick(b.Name) // resumes an interrupted rollout, applies what arrived while stopped
	}
	d.log.Info("daemon started", "socket", d.cfg.Socket, "sources", len(d.cfg.Sources), "bundles", len(bs))
	if d.opts.Ready != nil {
		d.opts.Ready()
	}
	return g.Wait()
}

func serve(ctx context.Context, s *http.Server, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(sctx)
	}()
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// listenUnix listens on path, owner-only: the directory 0700 and the socket 0600.
func listenUnix(path string) (net.Listener, error) {
	if err := socketDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket: %s exists and is not a socket", path)
		}
		os.Remove(path) // left by a daemon that died
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket: %w", err)
	}
	return ln, nil
}

// socketDir makes the socket's directory 0700, owned by this process's user, or refuses one
// that exists otherwise: in a directory others may write to, another user could rename the
// daemon's socket and put one of their own in its place, and the root CLI would talk to it.
func socketDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory (a symlink?); remove it so the daemon can create it 0700", dir)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s is owned by uid %d, not by this daemon's user (uid %d); remove it, or chown it and chmod 0700", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%s has mode %04o: others could replace the socket in it; chmod 0700 %s (or remove it)", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// pollSource polls one source until ctx is done. A poll error (a registry or bucket out of
// reach, a stick that stopped answering) is logged and retried at the next interval; it never
// touches what runs.
//
// Each pass runs on a goroutine of its own, and pollSource stops waiting for it when ctx is
// done: a read(2) on a failing USB device can block in the kernel for ever, and Run, which
// waits for its pollers, must still return. Every call on a stick has a deadline and honours
// ctx (bundles.Guard and the readers behind bundles.OpenSource), so a pass ends soon after;
// only a call that never returns is left behind, holding its own buffer and its file. A
// candidate whose read stalled is not read again until that read has returned (the stick
// answered again or was pulled): another read would stall as well.
func (d *Daemon) pollSource(ctx context.Context, name string, s source) {
	stalled := map[string]<-chan struct{}{} // candidate key → closed when its stuck read returned
	pass := func() {
		cands, err := s.poll(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("source poll failed", "source", name, "err", err)
		}
		for _, c := range cands {
			d.mu.Lock()
			done := d.handled[c.key]
			d.mu.Unlock()
			if done {
				continue
			}
			if stuck, ok := stalled[c.key]; ok {
				select {
				case <-stuck:
					delete(stalled, c.key)
				default:
					continue
				}
			}
			_, err := d.ingest(ctx, name, c)
			var se *bundles.StallError
			if errors.As(err, &se) {
				stalled[c.key] = se.Done()
				continue
			}
			if err != nil && (ctx.Err() != nil || retryable(err) || unsignedYet(c, err)) {
				continue // a registry, bucket or disk problem: try again at the next poll
			}
			d.mu.Lock()
			d.handled[c.key] = true
			d.mu.Unlock()
		}
	}
	for {
		done := make(chan struct{})
		go func() { defer close(done); pass() }()
		select {
		case <-ctx.Done():
			// Every call of a pass honours ctx, so it ends at once unless a read is stuck
			// in the kernel: that one is left behind after a short grace, the rest end
			// before Run returns (and the store is closed).
			select {
			case <-done:
			case <-time.After(passGrace):
			}
			return
		case <-done:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.interval()):
		}
	}
}

// retryable reports errors that reading the same copy again may not meet: the network, a
// registry or S3 server failing, a full disk. Anything else (signatures, content, junk on a
// stick, a replay) is final for that copy until it changes.
func retryable(err error) bool {
	return errors.Is(err, store.ErrNoSpace) || bundles.Transient(err) || apply.Transient(err)
}

// unsignedYet reports a registry bundle with no signature at all: CI pushes the bundle,
// then signs it, and a poll between the two must not give up on that digest (the tag does
// not move when the signature arrives). It is read again at each poll, with one event.
func unsignedYet(c candidate, err error) bool {
	return c.addr.Kind == bundles.KindRegistry && errors.Is(err, bundles.ErrNoSignatures)
}

// ingest verifies and admits one candidate. A refusal is an event (and a metric), never a
// change to what runs.
func (d *Daemon) ingest(ctx context.Context, sourceName string, c candidate) (*store.Revision, error) {
	// The receipt goes back on the stick whatever became of the bundle: headquarters learns
	// what the node holds either way.
	if c.receiptDir != "" {
		defer func() {
			d.receipts.addStick(c.receiptDir, c.guard)
			d.receipts.kickWrite()
		}()
	}
	src, desc, err := bundles.OpenSource(ctx, c.addr, c.opts)
	if err == nil {
		defer src.Close()
		var rev *store.Revision
		rev, err = IngestCounted(ctx, d.st, src, desc, d.policy, sourceName+": "+c.addr.String(), c.progress)
		if err == nil {
			var n int64
			for _, b := range rev.Blobs {
				n += b.Size
			}
			d.m.ingestBytes.WithLabelValues(sourceName).Add(float64(n))
			d.log.Info("admitted", "bundle", rev.Name, "revision", rev.Revision, "version", rev.Version, "source", sourceName, "digest", desc.Digest.String())
			d.kick(rev.Name)
			d.kickNotify()
			return rev, nil
		}
	}
	if errors.Is(err, store.ErrDowngrade) {
		d.log.Debug("already have it", "source", sourceName, "from", c.addr.String())
		return nil, err
	}
	if errors.Is(err, verify.ErrUntrusted) {
		d.m.verifyFailures.WithLabelValues(sourceName).Inc()
	}
	d.mu.Lock()
	first := !d.refused[c.key]
	d.refused[c.key] = true
	d.mu.Unlock()
	if ctx.Err() == nil && first { // one event per copy, not one per poll
		d.log.Warn("bundle refused", "source", sourceName, "from", c.addr.String(), "err", err)
		_ = d.st.AddEvent(store.Event{Reason: "Refused", Message: fmt.Sprintf("%s: %s: %v", sourceName, c.addr, err)})
		d.kickNotify()
	}
	return nil, err
}

func (d *Daemon) kickNotify() {
	if d.notify != nil {
		d.notify.Kick()
	}
}

// kick wakes the reconcile loop of a bundle, starting it if needed.
func (d *Daemon) kick(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch, ok := d.loops[name]
	if !ok {
		if d.started == nil {
			return
		}
		ch = make(chan struct{}, 1)
		d.loops[name] = ch
		ctx := d.started
		d.group.Go(func() error { d.loop(ctx, name, ch); return nil })
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// loop reconciles one bundle: at a kick, at the drift interval, and after an error with a
// backoff from 1s to 5m. rollout.Manager makes applies to the cluster one at a time.
func (d *Daemon) loop(ctx context.Context, name string, kick <-chan struct{}) {
	failures := 0
	for {
		wait := d.cfg.DriftInterval.or(5 * time.Minute)
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-time.After(wait):
		}
		for {
			err := d.reconcile(ctx, name)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				failures = 0
				break
			}
			failures++
			backoff := min(time.Second<<min(failures-1, 9), 5*time.Minute)
			if errors.Is(err, errWaitingForAPI) || rollout.Paused(ctx, err) {
				// The node's own trouble (k3s restarting, a full disk): tried again soon,
				// so a rollout resumes within seconds of it being over.
				backoff = min(backoff, pausedRetry)
			}
			d.log.Warn("reconcile failed; will retry", "bundle", name, "retry_in", backoff.String(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			case <-kick:
			}
		}
	}
}

var errWaitingForAPI = errors.New("waiting for the API server")

// passGrace is how long shutdown waits for a poller's pass to end before leaving it behind.
const passGrace = 2 * time.Second

// pausedRetry bounds the wait between attempts while the API server is away or the state
// directory cannot be written.
const pausedRetry = 5 * time.Second

// reconcile does what the bundle needs now: finish an interrupted rollout, roll out the
// newest admitted revision, or check the current one for drift. It returns an error only
// for what is worth retrying; a revision that failed and was rolled back is recorded, not
// retried.
func (d *Daemon) reconcile(ctx context.Context, name string) error {
	b, err := d.st.GetBundle(name)
	if err != nil {
		return err
	}
	if b.Suspended {
		return nil
	}
	if err := d.eng.Ping(ctx); err != nil {
		err = fmt.Errorf("%w: %w", errWaitingForAPI, err)
		if b.Txn != nil && ctx.Err() == nil {
			d.pause(name, err)
		}
		d.mu.Lock()
		d.lastErr[name] = err.Error()
		d.mu.Unlock()
		return err
	}
	begin := time.Now()
	var (
		rep rollout.Report
		op  string
	)
	switch target, terr := d.target(name, b); {
	case terr != nil:
		return terr
	case b.Txn != nil:
		op = "resume"
		rep, err = d.eng.Resume(ctx, name)
	case target != 0:
		op = "rollout"
		rep, err = d.eng.Rollout(ctx, name, target)
	case b.Current != 0 && b.Current == b.LastGood:
		op = "sync"
		rep, err = d.eng.Sync(ctx, name)
	default:
		return nil
	}
	if op != "sync" && ctx.Err() == nil && rollout.Paused(ctx, err) {
		d.pause(name, err)
	} else if err == nil || rep.State != "" {
		d.resumed(name)
	}
	d.m.reconcileDuration.WithLabelValues(name, op).Observe(time.Since(begin).Seconds())
	d.m.drift.WithLabelValues(name).Add(float64(len(rep.Drift)))
	if len(rep.Drift) > 0 {
		d.driftEvent(name, rep)
	}
	if rep.RolledBackTo != 0 {
		d.m.rollbacks.WithLabelValues(name).Inc()
	}
	d.kickNotify()
	d.refreshInfo(name)
	d.receipts.kickWrite()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err == nil:
		delete(d.lastErr, name)
		return nil
	case errors.Is(err, rollout.ErrRolledBack) || (op == "rollout" && rep.State == store.StateFailed):
		d.lastErr[name] = err.Error()
		return nil // recorded; the revision waits for a newer one or an explicit retry
	default:
		d.lastErr[name] = err.Error()
		return err
	}
}

// pause records that the open rollout of a bundle stopped for the node's reasons (the API
// server out of reach, the state directory not writable): its deadline stops running, and
// one RolloutPaused event says why. The rollout is resumed by the loop's next attempt. Both
// writes are best effort: on a full disk they may fail too, and the log still says it.
func (d *Daemon) pause(name string, cause error) {
	if err := d.eng.Pause(name); err != nil {
		d.log.Warn("rollout pause not recorded", "bundle", name, "err", err)
	}
	d.mu.Lock()
	first := !d.paused[name]
	d.paused[name] = true
	d.mu.Unlock()
	if !first {
		return
	}
	what := "the API server is out of reach"
	if store.WriteFailed(cause) {
		what = "the state directory cannot be written"
	}
	d.log.Warn("rollout paused", "bundle", name, "because", what, "err", cause)
	msg := fmt.Sprintf("rollout paused: %s (%v); it resumes when that is over, and the time paused does not count against its deadline", what, cause)
	if err := d.st.AddEvent(store.Event{Bundle: name, Reason: "RolloutPaused", Message: msg}); err != nil {
		d.log.Warn("event", "err", err)
	}
	d.kickNotify()
}

func (d *Daemon) resumed(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.paused, name)
}

// driftEvent records drift in the event log (and so on the webhook): how many objects, how
// many corrected, the first few by name.
func (d *Daemon) driftEvent(name string, rep rollout.Report) {
	corrected := 0
	var names []string
	for _, dr := range rep.Drift {
		if dr.Corrected {
			corrected++
		}
		if len(names) < 3 {
			names = append(names, dr.Object.String()+" "+dr.Path)
		}
	}
	msg := fmt.Sprintf("%d objects drifted, %d corrected: %s", len(rep.Drift), corrected, strings.Join(names, ", "))
	if len(rep.Drift) > len(names) {
		msg += ", …"
	}
	if err := d.st.AddEvent(store.Event{Bundle: name, Revision: rep.Revision, Reason: "Drift", Message: msg}); err != nil {
		d.log.Warn("event", "err", err)
	}
}

// target is the newest admitted revision newer than the current one that has not failed.
func (d *Daemon) target(name string, b store.Bundle) (uint64, error) {
	revs, err := d.st.Revisions(name)
	if err != nil {
		return 0, err
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i].Revision > revs[j].Revision })
	for _, r := range revs {
		if r.Revision <= b.Current {
			break
		}
		if r.State == store.StateVerified {
			return r.Revision, nil
		}
	}
	return 0, nil
}

// Import verifies and admits a bundle from an address (ferry import).
func (d *Daemon) Import(ctx context.Context, ref string) (*store.Revision, error) {
	addr, err := bundles.ParseAddress(ref)
	if err != nil {
		return nil, err
	}
	p := bundles.NewProgress(io.Discard, "import "+ref, 0)
	d.mu.Lock()
	d.importing = p
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.importing == p {
			d.importing = nil
		}
		d.mu.Unlock()
	}()
	return d.ingest(ctx, "import", candidate{addr: addr, progress: p})
}

// ImportProgress is the import in progress, for `ferry import`'s progress line.
type ImportProgress struct {
	Active bool  `json:"active"`
	Done   int64 `json:"done"`
	Total  int64 `json:"total"`
}

func (d *Daemon) importProgress() ImportProgress {
	d.mu.Lock()
	p := d.importing
	d.mu.Unlock()
	if p == nil {
		return ImportProgress{}
	}
	done, total := p.Snapshot()
	return ImportProgress{Active: true, Done: done, Total: total}
}

// RollbackTo applies a stored revision again (ferry rollback); the newer revisions are
// recorded rolled back in the same transaction that opens the rollout, so the daemon stays
// on it until a newer revision arrives.
func (d *Daemon) RollbackTo(ctx context.Context, name string, rev uint64) (rollout.Report, error) {
	rep, err := d.eng.RollbackTo(ctx, name, rev)
	d.refreshInfo(name)
	d.kickNotify()
	return rep, err
}
