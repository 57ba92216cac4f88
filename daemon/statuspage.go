package daemon

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferrygitops/ferry/daemon/images"
	"github.com/ferrygitops/ferry/store"
)

// The status page: GET / on the metrics address, for a technician with a phone and no
// command line. It shows what `ferry status`, `ferry history` and `ferry events` show, read
// through the same functions as the API, in plain words. It is read-only and runs no
// script: the page refreshes itself with a meta tag, and its Content-Security-Policy allows
// nothing but the inline style block, so a bundle name or an error text that came from a
// stick can neither run nor load anything even if the template's escaping were bypassed.

//go:embed statuspage.html
var statusPageHTML string

var statusPageTemplate = template.Must(template.New("status").Parse(statusPageHTML))

const (
	// recentEvents is how many events the page lists per bundle, and for the node.
	recentEvents = 20
	// eventPage is how many events one read of the store's log returns.
	eventPage = 500
	// pageRefresh is the meta refresh interval, in seconds.
	pageRefresh = 10
)

// statusPageCSP allows the page its inline style and nothing else: no script, no frame, no
// fetch, no form target.
const statusPageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

// statusPage adds the technician's status page to the metrics mux, at exactly "/" (GET and
// HEAD): other paths stay 404.
func (d *Daemon) statusPage(mux *http.ServeMux) {
	tail := &eventTail{by: map[string][]store.Event{}}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", statusPageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "text/html; charset=utf-8")
		v := d.statusView(r.Context(), tail, time.Now())
		var buf bytes.Buffer
		if err := statusPageTemplate.Execute(&buf, v); err != nil {
			// Rendered to a buffer first, so a template error never leaves half a page.
			d.log.Error("status page", "err", err)
			http.Error(w, "the status page could not be made: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if v.Problem != "" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		w.Write(buf.Bytes())
	})
}

// statusView is what the template shows; every text in it is final, in plain words.
type statusView struct {
	Node      string
	Generated moment
	Refresh   int
	Problem   string // the daemon could not read its own state
	Bundles   []bundleView
	// NodeEvents are events that belong to no bundle: refused sticks, a restored state.
	NodeEvents []eventView
}

type bundleView struct {
	Name string
	verdict
	Running    string // "revision 2, version 1.0.2", or "nothing yet"
	LastChange moment
	LastError  string
	History    []historyRow
	Events     []eventView
	// ImagesNote replaces Images when there is nothing to list: the endpoint is off, could
	// not be read, or holds no image of this bundle.
	ImagesNote string
	Images     []imageRow
}

type historyRow struct {
	Revision uint64
	Version  string
	State    string
	Tone     string
	Running  bool
	Admitted moment
}

type eventView struct {
	When     moment
	What     string
	Tone     string
	Revision uint64
	Message  string
}

type imageRow struct {
	Name      string
	Digest    string // shortened
	Served    bool
	Revisions string // "revision 1", "revisions 1, 2"
}

// moment is a time as the page shows it: how long ago, and when in UTC.
type moment struct {
	Ago, UTC, RFC3339 string
}

func momentOf(t, now time.Time) moment {
	if t.IsZero() {
		return moment{}
	}
	return moment{Ago: ago(t, now), UTC: t.UTC().Format("2006-01-02 15:04:05 UTC"), RFC3339: t.UTC().Format(time.RFC3339)}
}

// ago says how long before now t was, the way a person would.
func ago(t, now time.Time) string {
	d := now.Sub(t)
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit + " ago"
		}
		return strconv.FormatInt(n, 10) + " " + unit + "s ago"
	}
	switch {
	case d < -time.Minute:
		return "later than this node's clock"
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int64(d/time.Hour), "hour")
	case d < 365*24*time.Hour:
		return plural(int64(d/(24*time.Hour)), "day")
	default:
		return "over a year ago"
	}
}

// statusView reads the node's state through the functions the API uses (Status, the
// store's revisions and events, the image endpoint's list) and puts it in words.
func (d *Daemon) statusView(ctx context.Context, tail *eventTail, now time.Time) statusView {
	v := statusView{Generated: momentOf(now, now), Refresh: pageRefresh}
	v.Node, _ = os.Hostname()
	if v.Node == "" {
		v.Node = "this node"
	}
	var problems []string
	statuses, err := d.Status()
	if err != nil {
		problems = append(problems, "the bundles: "+err.Error())
	}
	events, err := tail.read(d.st)
	if err != nil {
		problems = append(problems, "the event log: "+err.Error())
	}
	var (
		held      []images.Held
		imagesErr error
	)
	if d.cfg.ImagesAddress != "off" {
		held, imagesErr = d.images.Held(ctx)
	}
	for _, s := range statuses {
		revs, err := d.st.Revisions(s.Bundle)
		if err != nil {
			problems = append(problems, "the history of "+s.Bundle+": "+err.Error())
		}
		b, err := d.st.GetBundle(s.Bundle)
		if err != nil {
			problems = append(problems, "the record of "+s.Bundle+": "+err.Error())
		}
		bv := bundleView{Name: s.Bundle, LastChange: momentOf(lastChange(s, revs), now), LastError: s.LastError, Running: "nothing yet"}
		bv.verdict = health(s, b.Txn, revs)
		if s.Revision != 0 {
			bv.Running = "revision " + strconv.FormatUint(s.Revision, 10)
			if s.Version != "" {
				bv.Running += ", version " + s.Version
			}
		}
		if bv.LastError == "" {
			bv.LastError = failureNote(s, revs)
		}
		for _, r := range slices.Backward(revs) {
			bv.History = append(bv.History, historyRow{Revision: r.Revision, Version: r.Version,
				State: stateWords(r.State, r.Revision == s.Revision), Tone: stateTone(r.State),
				Running: r.Revision == s.Revision, Admitted: momentOf(r.Admitted, now)})
		}
		for _, e := range events[s.Bundle] {
			bv.Events = append(bv.Events, eventOf(e, now))
		}
		bv.Images, bv.ImagesNote = imagesOf(s.Bundle, d.cfg.ImagesAddress == "off", held, imagesErr)
		v.Bundles = append(v.Bundles, bv)
	}
	for _, e := range events[""] {
		v.NodeEvents = append(v.NodeEvents, eventOf(e, now))
	}
	if len(problems) > 0 {
		v.Problem = "The daemon could not read " + strings.Join(problems, "; ") + "."
	}
	return v
}

// verdict is a bundle's state in a few words, with a colour, a sentence of detail and the
// command that moves it on, if one is needed.
type verdict struct {
	Health  string // "Healthy", "Rolling out revision 3", "Failed — rolled back to revision 2"
	Tone    string // ok | busy | bad | off: the colour of Health
	Detail  string
	Command string
}

// health judges a bundle from its status, its open rollout (txn, or nil) and its revisions,
// oldest first.
func health(s BundleStatus, txn *store.Txn, revs []store.Revision) verdict {
	rev := func(n uint64) string { return "revision " + strconv.FormatUint(n, 10) }
	var newest *store.Revision
	if n := len(revs); n > 0 {
		newest = &revs[n-1]
	}
	newer := newest != nil && newest.Revision > s.Revision
	switch {
	case s.Applying != 0 && txn != nil && txn.Phase == store.StateFailed:
		return verdict{"Failed — rolling back to " + rev(txn.LastGood), "bad",
			"Revision " + strconv.FormatUint(s.Applying, 10) + " did not become healthy; the node is putting " + rev(txn.LastGood) + " back.", ""}
	case s.Applying != 0 && txn != nil && !txn.Paused.IsZero():
		return verdict{"Rollout of " + rev(s.Applying) + " paused", "busy",
			"The node cannot go on for now: the cluster does not answer, or the disk cannot be written. It carries on by itself once it can.", ""}
	case s.Applying != 0:
		return verdict{"Rolling out " + rev(s.Applying), "busy", "The node is installing this revision and waits for it to become healthy.", ""}
	case s.Revision == 0 && newest != nil && (newest.State == store.StateFailed || newest.State == store.StateRolledBack):
		return verdict{"Failed — " + rev(newest.Revision) + " could not be installed", "bad",
			"Nothing of this bundle runs. Bring a newer revision, or try this one again with:", "ferry rollback " + s.Bundle + " " + strconv.FormatUint(newest.Revision, 10)}
	case s.Suspended:
		return verdict{"Suspended", "off", "Nothing is installed or corrected until someone runs:", "ferry resume " + s.Bundle}
	case s.Revision == 0:
		return verdict{"Waiting to install " + rev(s.Newest), "busy", "The node has received this bundle and installs it as soon as the cluster answers.", ""}
	case s.State == store.StateFailed:
		return verdict{"Failed — " + rev(s.Revision) + " is not healthy", "bad", "There is no earlier good revision to go back to.", ""}
	case newer && newest.State == store.StateRolledBack && failedOnce(*newest):
		return verdict{"Failed — rolled back to " + rev(s.Revision), "bad",
			"Revision " + strconv.FormatUint(newest.Revision, 10) + " did not become healthy, so " + rev(s.Revision) + " runs again. It stays so until a newer revision arrives.", ""}
	case newer && newest.State == store.StateRolledBack:
		return verdict{"Rolled back to " + rev(s.Revision), "off",
			"Someone went back from revision " + strconv.FormatUint(newest.Revision, 10) + " by hand. It stays so until a newer revision arrives.", ""}
	case newer && newest.State == store.StateVerified:
		return verdict{"Waiting to roll out " + rev(newest.Revision), "busy", "The node has received a newer revision and rolls it out next.", ""}
	case s.State == store.StateHealthy:
		return verdict{"Healthy", "ok", "", ""}
	default:
		return verdict{stateWords(s.State, true), stateTone(s.State), "", ""}
	}
}

// lastChange is when anything last happened to the bundle's revisions: the status's last
// change is the running revision's, which an automatic rollback to it does not move.
func lastChange(s BundleStatus, revs []store.Revision) time.Time {
	last := s.LastChange
	for _, r := range revs {
		if n := len(r.History); n > 0 && r.History[n-1].Time.After(last) {
			last = r.History[n-1].Time
		}
	}
	return last
}

// failedOnce reports whether a revision failed before it was rolled back (an automatic
// rollback), rather than being set aside by `ferry rollback`.
func failedOnce(r store.Revision) bool {
	for _, t := range r.History {
		if t.State == store.StateFailed {
			return true
		}
	}
	return false
}

// failureNote is the reason the newest revision failed, from its history, when the daemon
// holds no error of its own (it keeps the last one in memory only, until a reconcile
// succeeds or it restarts).
func failureNote(s BundleStatus, revs []store.Revision) string {
	if len(revs) == 0 {
		return ""
	}
	r := revs[len(revs)-1]
	if r.Revision == s.Revision || (r.State != store.StateFailed && r.State != store.StateRolledBack) {
		return ""
	}
	for _, t := range slices.Backward(r.History) {
		if t.State == store.StateFailed && t.Note != "" {
			return fmt.Sprintf("Revision %d: %s", r.Revision, t.Note)
		}
	}
	return ""
}

func stateWords(st store.State, running bool) string {
	switch st {
	case store.StateVerified:
		return "Received, not installed yet"
	case store.StateApplying:
		return "Rolling out"
	case store.StateHealthy:
		if !running {
			return "Was healthy"
		}
		return "Healthy"
	case store.StateFailed:
		return "Failed"
	case store.StateRolledBack:
		return "Rolled back"
	}
	return string(st)
}

func stateTone(st store.State) string {
	switch st {
	case store.StateHealthy:
		return "ok"
	case store.StateApplying, store.StateVerified:
		return "busy"
	case store.StateFailed, store.StateRolledBack:
		return "bad"
	}
	return "off"
}

// eventWords names the event log's reasons (store and daemon) in plain words.
var eventWords = map[string]struct{ what, tone string }{
	"Admitted":                    {"Received and verified", "off"},
	string(store.StateApplying):   {"Rolling out", "busy"},
	string(store.StateHealthy):    {"Healthy", "ok"},
	string(store.StateFailed):     {"Failed", "bad"},
	string(store.StateRolledBack): {"Rolled back", "bad"},
	"suspended":                   {"Suspended", "off"},
	"resumed":                     {"Resumed", "off"},
	"Refused":                     {"Refused a bundle", "bad"},
	"RolloutPaused":               {"Rollout paused", "busy"},
	"Drift":                       {"Changes on the cluster undone", "busy"},
	"StateRestored":               {"State restored from its backup", "busy"},
	"GCHeld":                      {"Clean-up held back", "off"},
}

func eventOf(e store.Event, now time.Time) eventView {
	w, ok := eventWords[e.Reason]
	if !ok {
		w.what, w.tone = e.Reason, "off"
	}
	return eventView{When: momentOf(e.Time, now), What: w.what, Tone: w.tone, Revision: e.Revision, Message: e.Message}
}

// imagesOf lists the held images that a revision of bundle carries, or says why there are
// none to list.
func imagesOf(bundle string, off bool, held []images.Held, err error) ([]imageRow, string) {
	switch {
	case off:
		return nil, "This node does not serve images."
	case err != nil:
		return nil, "The node could not list its images: " + err.Error()
	}
	var out []imageRow
	for _, h := range held {
		var revs []string
		for _, r := range h.Revisions { // "bundle/N"
			if n, ok := strings.CutPrefix(r, bundle+"/"); ok {
				if _, err := strconv.ParseUint(n, 10, 64); err == nil {
					revs = append(revs, n)
				}
			}
		}
		if len(revs) == 0 {
			continue
		}
		dg := h.Digest
		if i := strings.IndexByte(dg, ':'); i >= 0 && len(dg) > i+13 {
			dg = dg[:i+13] + "…"
		}
		which := "revision " + revs[0]
		if len(revs) > 1 {
			which = "revisions " + strings.Join(revs, ", ")
		}
		out = append(out, imageRow{Name: h.Name, Digest: dg, Served: h.Served, Revisions: which})
	}
	if len(out) == 0 {
		return nil, "No images came with this bundle."
	}
	return out, ""
}

// eventTail keeps the newest events of each bundle ("" for the node's own). The log only
// grows, so each page reads only what was added since the one before.
type eventTail struct {
	mu    sync.Mutex
	after uint64
	by    map[string][]store.Event // oldest first, at most recentEvents each
}

// read brings the tail up to date and returns it, newest first.
func (t *eventTail) read(st *store.Store) (map[string][]store.Event, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var err error
	for {
		var evs []store.Event
		if evs, err = st.Events(t.after, eventPage); err != nil {
			break
		}
		for _, e := range evs {
			l := append(t.by[e.Bundle], e)
			if len(l) > recentEvents {
				l = slices.Clone(l[len(l)-recentEvents:])
			}
			t.by[e.Bundle], t.after = l, e.Seq
		}
		if len(evs) < eventPage {
			break
		}
	}
	out := make(map[string][]store.Event, len(t.by))
	for k, l := range t.by {
		r := slices.Clone(l)
		slices.Reverse(r)
		out[k] = r
	}
	return out, err
}
