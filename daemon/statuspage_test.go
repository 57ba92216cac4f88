package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/store"
)

// get asks h for path with method and returns the recorded reply.
func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), method, path, nil))
	return w
}

// admit verifies and stores revision rev of bundle name, signed with k.
func admit(t *testing.T, d *Daemon, k keyPair, name string, rev uint64) {
	t.Helper()
	src := memory.New()
	desc := makeBundle(t, src, name, rev, strings.Repeat("x", int(rev)))
	sign(t, src, desc, k)
	if _, err := Ingest(t.Context(), d.st, memSource{src}, desc, k.policy, "usb"); err != nil {
		t.Fatal(err)
	}
}

func TestStatusPageEmptyNodeAndRoutes(t *testing.T) {
	_, policy := writeTrust(t)
	d := testDaemon(t, policy)
	h := d.metricsHandler()

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		w := get(t, h, method, "/")
		if w.Code != http.StatusOK {
			t.Fatalf("%s /: %d %s", method, w.Code, w.Body)
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-store",
			"Content-Type":            "text/html; charset=utf-8",
		} {
			if got := w.Header().Get(k); got != want {
				t.Errorf("%s /: %s is %q, want %q", method, k, got, want)
			}
		}
	}
	body := get(t, h, http.MethodGet, "/").Body.String()
	for _, want := range []string{"Nothing has been installed on this node yet.", "Insert a stick with a bundle or run <code>ferry import</code>.",
		`<meta http-equiv="refresh" content="10">`, "Page made "} {
		if !strings.Contains(body, want) {
			t.Errorf("empty node's page lacks %q:\n%s", want, body)
		}
	}
	for _, bad := range []string{`class="bundle"`, "<script", "<no value>"} {
		if strings.Contains(body, bad) {
			t.Errorf("empty node's page holds %q", bad)
		}
	}

	// Only "/" is the page: the other paths of the mux answer as before, unknown ones 404.
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/index.html", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodPut, "/", http.StatusMethodNotAllowed},
	} {
		w := get(t, h, c.method, c.path)
		if w.Code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, w.Code, c.code)
		}
		if c.path != "/" && strings.Contains(w.Body.String(), "Nothing has been installed") {
			t.Errorf("%s %s answered with the status page", c.method, c.path)
		}
	}
}

// A revision that failed and was rolled back: the page says so in words, shows the running
// revision, the error (escaped: it comes from outside), the history and the events.
func TestStatusPageRollback(t *testing.T) {
	k, policy := writeTrust(t)
	d := testDaemon(t, policy)
	h := d.metricsHandler()
	admit(t, d, k, "site", 1)
	admit(t, d, k, "site", 2)

	page := func() string {
		t.Helper()
		w := get(t, h, http.MethodGet, "/")
		if w.Code != http.StatusOK {
			t.Fatalf("GET /: %d %s", w.Code, w.Body)
		}
		return w.Body.String()
	}
	if p := page(); !strings.Contains(p, "Waiting to install revision 2") || !strings.Contains(p, "nothing yet") {
		t.Errorf("before any rollout the page does not say it waits for revision 2:\n%s", p)
	}

	deadline := time.Now().Add(time.Hour)
	if err := d.st.Begin("site", 1, deadline, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.st.SetState("site", 1, store.StateHealthy, "all Ready"); err != nil {
		t.Fatal(err)
	}
	if err := d.st.Begin("site", 2, deadline, ""); err != nil {
		t.Fatal(err)
	}
	if p := page(); !strings.Contains(p, "Rolling out revision 2") {
		t.Errorf("during the rollout of 2 the page does not say so:\n%s", p)
	}
	if err := d.st.SetState("site", 2, store.StateFailed, `Deployment site/web: <script>alert("x")</script> not Ready`); err != nil {
		t.Fatal(err)
	}
	if err := d.st.SetState("site", 2, store.StateRolledBack, "rolled back to 1"); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.lastErr["site"] = `rollout 2: <script>alert("x")</script>`
	d.mu.Unlock()

	p := page()
	for _, want := range []string{
		`<h2>site</h2>`,
		`<p class="health bad">Failed — rolled back to revision 1</p>`,
		`<dd class="running">revision 1, version 1.0.1</dd>`,
		`rollout 2: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`,
		"Received and verified", "Rolled back", "Healthy",
		"This node does not serve images.",
		"just now",
	} {
		if !strings.Contains(p, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "<no value>", "%!"} {
		if strings.Contains(p, bad) {
			t.Errorf("page holds %q", bad)
		}
	}
	if n := strings.Count(p, `<tr class="revision">`); n != 2 {
		t.Errorf("history has %d rows, want 2", n)
	}
	// Newest first: revision 2 above 1 in the history, its rollback the first event.
	if i, j := strings.Index(p, `<td class="num">2</td>`), strings.Index(p, `<td class="num">1</td>`); i < 0 || j < 0 || i > j {
		t.Errorf("history is not newest first (2 at %d, 1 at %d)", i, j)
	}
	first := p[strings.Index(p, `<li class="event">`):]
	if !strings.HasPrefix(first, `<li class="event"><span class="tag bad">Rolled back</span> revision 2`) {
		t.Errorf("first event is not revision 2's rollback: %.200s", first)
	}

	// Once the daemon forgets its error (a restart), the page gives the failure's reason.
	d.mu.Lock()
	delete(d.lastErr, "site")
	d.mu.Unlock()
	if p := page(); !strings.Contains(p, "Revision 2: Deployment site/web: &lt;script&gt;") || strings.Contains(p, "<script") {
		t.Errorf("without the daemon's error the page does not show revision 2's failure, escaped")
	}
}

func TestHealthWords(t *testing.T) {
	rev := func(n uint64, st store.State, history ...store.State) store.Revision {
		r := store.Revision{Name: "site", Revision: n, State: st}
		for _, h := range history {
			r.History = append(r.History, store.Transition{State: h})
		}
		return r
	}
	healthy1 := rev(1, store.StateHealthy, store.StateApplying, store.StateHealthy)
	for _, c := range []struct {
		name   string
		status BundleStatus
		txn    *store.Txn
		revs   []store.Revision
		health string
		tone   string
	}{
		{"healthy", BundleStatus{Revision: 1, State: store.StateHealthy}, nil, []store.Revision{healthy1}, "Healthy", "ok"},
		{"rolling out", BundleStatus{Revision: 2, Applying: 2, State: store.StateApplying}, &store.Txn{Revision: 2, LastGood: 1, Phase: store.StateApplying},
			[]store.Revision{healthy1, rev(2, store.StateApplying)}, "Rolling out revision 2", "busy"},
		{"rolling back", BundleStatus{Revision: 2, Applying: 2, State: store.StateFailed}, &store.Txn{Revision: 2, LastGood: 1, Phase: store.StateFailed},
			[]store.Revision{healthy1, rev(2, store.StateFailed)}, "Failed — rolling back to revision 1", "bad"},
		{"paused", BundleStatus{Revision: 2, Applying: 2}, &store.Txn{Revision: 2, Phase: store.StateApplying, Paused: time.Now()},
			[]store.Revision{healthy1, rev(2, store.StateApplying)}, "Rollout of revision 2 paused", "busy"},
		{"rolled back", BundleStatus{Revision: 1, State: store.StateHealthy}, nil,
			[]store.Revision{healthy1, rev(2, store.StateRolledBack, store.StateApplying, store.StateFailed, store.StateRolledBack)}, "Failed — rolled back to revision 1", "bad"},
		{"rolled back by hand", BundleStatus{Revision: 1, State: store.StateHealthy}, nil,
			[]store.Revision{healthy1, rev(2, store.StateRolledBack, store.StateHealthy, store.StateRolledBack)}, "Rolled back to revision 1", "off"},
		{"first revision failed", BundleStatus{Revision: 0, Newest: 1}, nil,
			[]store.Revision{rev(1, store.StateFailed, store.StateApplying, store.StateFailed)}, "Failed — revision 1 could not be installed", "bad"},
		{"failed in place", BundleStatus{Revision: 1, State: store.StateFailed}, nil,
			[]store.Revision{rev(1, store.StateFailed)}, "Failed — revision 1 is not healthy", "bad"},
		{"waiting", BundleStatus{Revision: 0, Newest: 1}, nil, []store.Revision{rev(1, store.StateVerified)}, "Waiting to install revision 1", "busy"},
		{"newer waiting", BundleStatus{Revision: 1, Newest: 2, State: store.StateHealthy}, nil,
			[]store.Revision{healthy1, rev(2, store.StateVerified)}, "Waiting to roll out revision 2", "busy"},
		{"suspended", BundleStatus{Bundle: "site", Revision: 1, State: store.StateHealthy, Suspended: true}, nil, []store.Revision{healthy1}, "Suspended", "off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := health(c.status, c.txn, c.revs)
			if v.Health != c.health || v.Tone != c.tone {
				t.Errorf("health %q (%s), want %q (%s)", v.Health, v.Tone, c.health, c.tone)
			}
		})
	}
	if v := health(BundleStatus{Bundle: "site", Revision: 1, State: store.StateHealthy, Suspended: true}, nil, []store.Revision{healthy1}); v.Command != "ferry resume site" {
		t.Errorf("a suspended bundle's command is %q", v.Command)
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"},
		{59 * time.Second, "just now"},
		{time.Minute, "1 minute ago"},
		{5*time.Minute + 30*time.Second, "5 minutes ago"},
		{time.Hour, "1 hour ago"},
		{47 * time.Hour, "47 hours ago"},
		{3 * 24 * time.Hour, "3 days ago"},
		{400 * 24 * time.Hour, "over a year ago"},
		{-5 * time.Minute, "later than this node's clock"},
	} {
		if got := ago(now.Add(-c.d), now); got != c.want {
			t.Errorf("ago(%s) = %q, want %q", c.d, got, c.want)
		}
	}
	if m := momentOf(now.Add(-5*time.Minute), now); m.UTC != "2026-11-25 11:55:00 UTC" || m.Ago != "5 minutes ago" {
		t.Errorf("moment %+v", m)
	}
}

// The tail keeps the newest events of each bundle, newest first, and reads only new ones.
func TestEventTail(t *testing.T) {
	_, policy := writeTrust(t)
	d := testDaemon(t, policy)
	add := func(bundle string, n int) {
		for range n {
			if err := d.st.AddEvent(store.Event{Bundle: bundle, Reason: "Drift"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	tail := &eventTail{by: map[string][]store.Event{}}
	add("a", recentEvents+5)
	add("", 2)
	got, err := tail.read(d.st)
	if err != nil {
		t.Fatal(err)
	}
	if len(got["a"]) != recentEvents || got["a"][0].Seq != uint64(recentEvents+5) || got["a"][recentEvents-1].Seq != 6 {
		t.Fatalf("tail of a: %d events, from %d", len(got["a"]), got["a"][0].Seq)
	}
	if len(got[""]) != 2 {
		t.Fatalf("node events: %v", got[""])
	}
	add("a", 1)
	if got, _ = tail.read(d.st); len(got["a"]) != recentEvents || got["a"][0].Seq != uint64(recentEvents+8) {
		t.Fatalf("after one more event the tail of a starts at %d", got["a"][0].Seq)
	}
}
