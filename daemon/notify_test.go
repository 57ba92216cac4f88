package daemon

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ferrygitops/ferry/store"
)

const webhookTestSecret = "correct-horse-battery-staple"

// webhookReceiver is a real HTTP receiver on loopback that answers with the status the test
// sets and hands every request it saw to the test.
type webhookReceiver struct {
	srv      *httptest.Server
	status   atomic.Int32
	requests chan webhookRequest
}

type webhookRequest struct {
	status int
	header http.Header
	body   []byte
	events []store.Event
}

func (r webhookRequest) seqs() []uint64 {
	var s []uint64
	for _, e := range r.events {
		s = append(s, e.Seq)
	}
	return s
}

func newWebhookReceiver(t *testing.T, status int) *webhookReceiver {
	t.Helper()
	r := &webhookReceiver{requests: make(chan webhookRequest, 1024)}
	r.status.Store(int32(status))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			t.Errorf("receiver: read body: %v", err)
		}
		var p struct {
			Events []store.Event `json:"events"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("receiver: body is not {\"events\": [...]}: %v", err)
		}
		code := int(r.status.Load())
		r.requests <- webhookRequest{status: code, header: req.Header.Clone(), body: body, events: p.Events}
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d", code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// next returns the next request the receiver saw, failing the test after 5s.
func (r *webhookReceiver) next(t *testing.T) webhookRequest {
	t.Helper()
	select {
	case req := <-r.requests:
		return req
	case <-time.After(5 * time.Second):
		t.Fatal("receiver: no request within 5s")
		return webhookRequest{}
	}
}

// accepted returns the batches answered 2xx until one ends with seq last.
func (r *webhookReceiver) accepted(t *testing.T, last uint64) []webhookRequest {
	t.Helper()
	var got []webhookRequest
	for {
		req := r.next(t)
		if req.status/100 != 2 {
			continue
		}
		got = append(got, req)
		if s := req.seqs(); len(s) > 0 && s[len(s)-1] >= last {
			return got
		}
	}
}

// assertQuiet fails if the receiver has a request the test did not consume.
func (r *webhookReceiver) assertQuiet(t *testing.T) {
	t.Helper()
	select {
	case req := <-r.requests:
		t.Fatalf("unexpected request %s", req.header.Get("X-Ferry-Delivery"))
	default:
	}
}

func notifyStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// notifyEvents appends n events and returns their sequence numbers.
func notifyEvents(t *testing.T, st *store.Store, n int) []uint64 {
	t.Helper()
	before, err := st.Events(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := st.AddEvent(store.Event{Bundle: "shop", Revision: uint64(i + 1), Reason: "RevisionHealthy",
			Message: fmt.Sprintf("event %d", len(before)+i)}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := st.Events(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range all[len(before):] {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// newFastNotifier is a notifier with millisecond backoff, so failures retry at once.
func newFastNotifier(t *testing.T, st *store.Store, cfg WebhookConfig, log *slog.Logger) *Notifier {
	t.Helper()
	n, err := NewNotifier(st, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	n.minBackoff, n.maxBackoff = time.Millisecond, 10*time.Millisecond
	return n
}

// startNotifier runs n until the returned stop is called (or the test ends); stop waits for
// Run to return and checks it returned nil.
func startNotifier(t *testing.T, n *Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not return within 5s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitWebhookCursor polls the webhook cursor until it is want, for at most 5s: the cursor is
// recorded just after the receiver answers, so it may trail the last request briefly.
func waitWebhookCursor(t *testing.T, st *store.Store, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := st.Cursor(webhookReader)
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor = %d, want %d", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func webhookSeqs(reqs []webhookRequest) []uint64 {
	var s []uint64
	for _, r := range reqs {
		s = append(s, r.seqs()...)
	}
	return s
}

// notifyLogBuffer is a log sink the test reads while Run writes to it.
type notifyLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *notifyLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *notifyLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The outbox holds: events written while the receiver is down are all delivered, in order,
// exactly once each, in batches of at most 100, once it is back; the cursor does not move
// while it is down and ends on the last event.
func TestNotifierDeliversBacklogAfterOutage(t *testing.T) {
	st := notifyStore(t, t.TempDir())
	rcv := newWebhookReceiver(t, http.StatusServiceUnavailable)
	want := notifyEvents(t, st, 230)
	logs := &notifyLogBuffer{}
	n := newFastNotifier(t, st, WebhookConfig{URL: rcv.srv.URL + "/hook/T0KEN-IN-PATH", Secret: webhookTestSecret},
		slog.New(slog.NewTextHandler(logs, nil)))
	startNotifier(t, n)

	// The notifier keeps trying while the receiver refuses, without advancing.
	for range 3 {
		if req := rcv.next(t); req.status != http.StatusServiceUnavailable {
			t.Fatalf("request answered %d while the receiver was down", req.status)
		}
	}
	if c, _ := st.Cursor(webhookReader); c != 0 {
		t.Fatalf("cursor advanced to %d while every request failed", c)
	}

	rcv.status.Store(http.StatusOK)
	got := rcv.accepted(t, want[len(want)-1])
	if seqs := webhookSeqs(got); !slices.Equal(seqs, want) {
		t.Fatalf("delivered seqs %v\nwant %v", seqs, want)
	}
	stored, _ := st.Events(0, 1000)
	var delivered []store.Event
	for _, req := range got {
		if len(req.events) == 0 || len(req.events) > webhookBatch {
			t.Errorf("batch of %d events, want 1..%d", len(req.events), webhookBatch)
		}
		delivered = append(delivered, req.events...)
		s := req.seqs()
		if id, want := req.header.Get("X-Ferry-Delivery"), fmt.Sprintf("%d-%d", s[0], s[len(s)-1]); id != want {
			t.Errorf("X-Ferry-Delivery = %q, want %q", id, want)
		}
		if ct := req.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		if ua := req.header.Get("User-Agent"); !strings.HasPrefix(ua, "ferry/") {
			t.Errorf("User-Agent = %q, want ferry/…", ua)
		}
	}
	for i := range stored {
		if !stored[i].Time.Equal(delivered[i].Time) {
			t.Errorf("event %d: time %v, want %v", stored[i].Seq, delivered[i].Time, stored[i].Time)
		}
		stored[i].Time, delivered[i].Time = time.Time{}, time.Time{}
	}
	if !slices.Equal(delivered, stored) {
		t.Error("delivered events differ from the store's")
	}
	waitWebhookCursor(t, st, want[len(want)-1])

	// Each failure was logged, and nothing secret was.
	out := logs.String()
	if !strings.Contains(out, "503 Service Unavailable") || !strings.Contains(out, "retry_in=") {
		t.Errorf("failures not logged with status and next retry:\n%s", out)
	}
	for _, secret := range []string{webhookTestSecret, "T0KEN-IN-PATH"} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
}

// Nothing lost, nothing repeated across a restart: a new notifier on the same store sends
// only what the previous one had not delivered.
func TestNotifierResumesAfterRestart(t *testing.T) {
	st := notifyStore(t, t.TempDir())
	rcv := newWebhookReceiver(t, http.StatusOK)
	first := notifyEvents(t, st, 3)
	stop := startNotifier(t, newFastNotifier(t, st, WebhookConfig{URL: rcv.srv.URL}, nil))
	if got := webhookSeqs(rcv.accepted(t, first[len(first)-1])); !slices.Equal(got, first) {
		t.Fatalf("first run delivered %v, want %v", got, first)
	}
	waitWebhookCursor(t, st, first[len(first)-1])
	stop()

	second := notifyEvents(t, st, 4)
	rcv.assertQuiet(t)
	stop = startNotifier(t, newFastNotifier(t, st, WebhookConfig{URL: rcv.srv.URL}, nil))
	if got := webhookSeqs(rcv.accepted(t, second[len(second)-1])); !slices.Equal(got, second) {
		t.Fatalf("after restart delivered %v, want only %v", got, second)
	}
	waitWebhookCursor(t, st, second[len(second)-1])
	stop()
	rcv.assertQuiet(t)
}

// At least once: a batch the receiver took but whose answer never came back is sent again,
// byte for byte under the same delivery id, even though an event was written meanwhile; the
// new event follows in a delivery of its own.
func TestNotifierResendsUnacknowledgedBatchWithSameDeliveryID(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string
		// lose drops the answer to the first request.
		lose func(w http.ResponseWriter, r *http.Request)
	}{
		{"connection lost", "", func(http.ResponseWriter, *http.Request) {
			panic(http.ErrAbortHandler) // close the connection without answering
		}},
		{"answer too slow", "100ms", func(_ http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // the client gives up after its timeout
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := notifyStore(t, t.TempDir())
			var calls atomic.Int32
			added := make(chan struct{})
			seen := make(chan webhookRequest, 16)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				seen <- webhookRequest{header: r.Header.Clone(), body: body}
				<-added // no answer, lost or not, before the test wrote its event
				if calls.Add(1) == 1 {
					tc.lose(w, r)
				}
			}))
			t.Cleanup(srv.Close)
			want := notifyEvents(t, st, 2)
			n := newFastNotifier(t, st, WebhookConfig{URL: srv.URL, Secret: webhookTestSecret, Timeout: tc.timeout}, nil)
			n.poll = time.Hour // the third event must come without a poll or a Kick
			startNotifier(t, n)

			next := func() webhookRequest {
				t.Helper()
				select {
				case r := <-seen:
					return r
				case <-time.After(5 * time.Second):
					t.Fatal("no request within 5s")
					return webhookRequest{}
				}
			}
			first := next()
			want = append(want, notifyEvents(t, st, 1)...)
			close(added)
			again, after := next(), next()

			if id := first.header.Get("X-Ferry-Delivery"); id != "1-2" || again.header.Get("X-Ferry-Delivery") != id {
				t.Errorf("delivery ids %q then %q, want 1-2 both times", id, again.header.Get("X-Ferry-Delivery"))
			}
			if !bytes.Equal(first.body, again.body) || first.header.Get("X-Ferry-Signature") != again.header.Get("X-Ferry-Signature") {
				t.Error("the resent batch differs from the first send")
			}
			if id := after.header.Get("X-Ferry-Delivery"); id != "3-3" {
				t.Errorf("event written during the retry went in delivery %q, want 3-3", id)
			}
			waitWebhookCursor(t, st, want[2])
		})
	}
}

// Retry delays double from 1s to the 5 minute cap, jittered within [d/2, d).
func TestNotifierBackoff(t *testing.T) {
	n, err := NewNotifier(notifyStore(t, t.TempDir()), WebhookConfig{URL: "https://h/"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for failures, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, 64 * time.Second, 128 * time.Second, 256 * time.Second,
		5 * time.Minute, 5 * time.Minute} {
		for range 50 {
			if got := n.backoff(failures); got < d/2 || got >= d {
				t.Fatalf("backoff after %d failures = %v, want in [%v, %v)", failures+1, got, d/2, d)
			}
		}
	}
	if got := n.backoff(1 << 20); got < webhookMaxBackoff/2 || got >= webhookMaxBackoff {
		t.Errorf("backoff after many failures = %v, want under the cap", got)
	}
}

// The receiver can check X-Ferry-Signature over the raw body with the shared secret; another
// secret does not verify; without a secret the header is absent.
func TestWebhookSignature(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret string
	}{
		{"with secret", webhookTestSecret},
		{"without secret", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := notifyStore(t, t.TempDir())
			rcv := newWebhookReceiver(t, http.StatusOK)
			want := notifyEvents(t, st, 2)
			startNotifier(t, newFastNotifier(t, st, WebhookConfig{URL: rcv.srv.URL, Secret: tc.secret}, nil))
			req := rcv.accepted(t, want[len(want)-1])[0]

			sig, present := req.header["X-Ferry-Signature"]
			if tc.secret == "" {
				if present {
					t.Fatalf("X-Ferry-Signature %q sent without a secret", sig)
				}
				return
			}
			if len(sig) != 1 {
				t.Fatalf("X-Ferry-Signature = %q, want one value", sig)
			}
			if !verifyWebhookSignature(tc.secret, req.body, sig[0]) {
				t.Errorf("X-Ferry-Signature %q does not verify over the body", sig[0])
			}
			if verifyWebhookSignature("some-other-secret-value", req.body, sig[0]) {
				t.Error("signature verifies with the wrong secret")
			}
			tampered := bytes.Replace(req.body, []byte("RevisionHealthy"), []byte("RevisionFailed!"), 1)
			if verifyWebhookSignature(tc.secret, tampered, sig[0]) {
				t.Error("signature verifies over a tampered body")
			}
		})
	}
}

// verifyWebhookSignature is what a receiver does, as it would for GitHub's
// X-Hub-Signature-256: HMAC the raw body, compare in constant time.
func verifyWebhookSignature(secret string, body []byte, header string) bool {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(header), []byte(want))
}

// A Kick delivers at once, well before the poll; without one, the poll still finds events
// another process wrote. Kick never blocks, with or without Run, and on a nil Notifier.
func TestNotifierKick(t *testing.T) {
	for _, tc := range []struct {
		name string
		kick bool
		poll time.Duration
	}{
		{"kick wakes the loop", true, time.Hour},
		{"poll finds unannounced events", false, 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := notifyStore(t, t.TempDir())
			rcv := newWebhookReceiver(t, http.StatusOK)
			n := newFastNotifier(t, st, WebhookConfig{URL: rcv.srv.URL}, nil)
			n.poll = tc.poll
			first := notifyEvents(t, st, 1)
			startNotifier(t, n)
			// Once the first event's cursor is recorded, Run has read the log for the last
			// time until it is woken.
			rcv.accepted(t, first[0])
			waitWebhookCursor(t, st, first[0])

			next := notifyEvents(t, st, 1)
			if tc.kick {
				n.Kick()
			}
			select {
			case req := <-rcv.requests:
				if got := req.seqs(); !slices.Equal(got, next) {
					t.Fatalf("delivered %v, want %v", got, next)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("event not delivered within 2s")
			}
		})
	}

	t.Run("never blocks", func(t *testing.T) {
		n := newFastNotifier(t, notifyStore(t, t.TempDir()), WebhookConfig{URL: "http://127.0.0.1:1/"}, nil)
		done := make(chan struct{})
		go func() {
			for range 1000 {
				n.Kick() // Run is not running: all but the first coalesce
			}
			var none *Notifier
			none.Kick()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("Kick blocked")
		}
	})
}

func TestWebhookConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  WebhookConfig
		want []string // substrings of the error, each naming a field; none means valid
	}{
		{"https", WebhookConfig{URL: "https://hooks.example.com/ferry"}, nil},
		{"http with everything", WebhookConfig{URL: "http://10.0.0.1:8080/x", Secret: webhookTestSecret,
			Timeout: "30s", Headers: map[string]string{"Authorization": "Bearer abc"}}, nil},
		{"missing url", WebhookConfig{}, []string{"url: required"}},
		{"bad scheme", WebhookConfig{URL: "ftp://hooks.example.com/"}, []string{`url: scheme "ftp"`}},
		{"no scheme", WebhookConfig{URL: "hooks.example.com/ferry"}, []string{`url: scheme ""`, "url: no host"}},
		{"missing host", WebhookConfig{URL: "https:///ferry"}, []string{"url: no host"}},
		{"port only", WebhookConfig{URL: "http://:8080/"}, []string{"url: no host"}},
		{"unparsable", WebhookConfig{URL: "http://user:pa ss@host/%zz"}, []string{"url: not a URL"}},
		{"short secret", WebhookConfig{URL: "https://h/", Secret: "tooshort"}, []string{"secret: 8 bytes: must be at least 16"}},
		{"bad timeout", WebhookConfig{URL: "https://h/", Timeout: "soon"}, []string{`timeout: "soon"`}},
		{"negative timeout", WebhookConfig{URL: "https://h/", Timeout: "-1s"}, []string{`timeout: "-1s"`}},
		{"header name", WebhookConfig{URL: "https://h/", Headers: map[string]string{"Bad Name": "v"}}, []string{`headers["Bad Name"]: not a valid header name`}},
		{"header value", WebhookConfig{URL: "https://h/", Headers: map[string]string{"X-Token": "a\r\nX-Evil: 1"}}, []string{`headers["X-Token"]: value holds a control character`}},
		{"reserved header", WebhookConfig{URL: "https://h/", Headers: map[string]string{"x-ferry-signature": "forged"}}, []string{`headers["x-ferry-signature"]: set by ferry`}},
		{"all problems at once", WebhookConfig{URL: "gopher://", Secret: "short", Timeout: "0s"},
			[]string{`url: scheme "gopher"`, "url: no host", "secret:", "timeout:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", tc.cfg)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{"tooshort", "pa ss", "a\r\nX-Evil"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q repeats a secret", err)
				}
			}
			if _, nerr := NewNotifier(notifyStore(t, t.TempDir()), tc.cfg, nil); nerr == nil {
				t.Error("NewNotifier accepted an invalid config")
			}
		})
	}
}

// The config decodes strictly from YAML and JSON with the documented field names, and logs
// without its secret or header values.
func TestWebhookConfigDecodeAndLog(t *testing.T) {
	const doc = `
url: https://hooks.example.com/ferry
secret: correct-horse-battery-staple
timeout: 30s
headers:
  Authorization: Bearer s3cr3t-t0ken
`
	want := WebhookConfig{URL: "https://hooks.example.com/ferry", Secret: webhookTestSecret, Timeout: "30s",
		Headers: map[string]string{"Authorization": "Bearer s3cr3t-t0ken"}}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	var fromYAML WebhookConfig
	if err := dec.Decode(&fromYAML); err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(want)
	var fromJSON WebhookConfig
	if err := json.Unmarshal(j, &fromJSON); err != nil {
		t.Fatal(err)
	}
	for _, got := range []WebhookConfig{fromYAML, fromJSON} {
		if fmt.Sprint(got) != fmt.Sprint(want) || got.Validate() != nil {
			t.Errorf("decoded %+v, want %+v", got, want)
		}
	}

	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "webhook", want)
	out := buf.String()
	for _, secret := range []string{webhookTestSecret, "s3cr3t-t0ken", "/ferry"} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, "https://hooks.example.com") || !strings.Contains(out, "Authorization") {
		t.Errorf("log lacks the endpoint or header names: %s", out)
	}
}

// A receiver that redirects is a failure naming the status: the cursor stays, and the
// target of the redirect never sees the events.
func TestNotifierRefusesRedirect(t *testing.T) {
	st := notifyStore(t, t.TempDir())
	target := newWebhookReceiver(t, http.StatusOK)
	redirected := make(chan struct{}, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected <- struct{}{}
		http.Redirect(w, r, target.srv.URL+"/moved", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	events := notifyEvents(t, st, 2)

	n := newFastNotifier(t, st, WebhookConfig{URL: srv.URL}, nil)
	batch, _ := st.Events(0, webhookBatch)
	if _, err := n.post(t.Context(), batch); err == nil || !strings.Contains(err.Error(), "302 Found") {
		t.Fatalf("post to a redirect: %v, want an error naming 302 Found", err)
	}

	stop := startNotifier(t, n)
	for range 3 { // retried, each time refused
		select {
		case <-redirected:
		case <-time.After(5 * time.Second):
			t.Fatal("no retry after a redirect")
		}
	}
	stop()
	if c, _ := st.Cursor(webhookReader); c != 0 {
		t.Errorf("cursor advanced to %d past a redirect (events up to %d)", c, events[len(events)-1])
	}
	target.assertQuiet(t)
}

// A failed delivery is logged as the daemon logs (JSON, for journald) with the keys the rest
// of the daemon uses: err for the error, retry_in a duration people read ("1.5s"), not
// nanoseconds.
func TestNotifierLogsFailuresWithStableKeys(t *testing.T) {
	st := notifyStore(t, t.TempDir())
	rcv := newWebhookReceiver(t, http.StatusServiceUnavailable)
	notifyEvents(t, st, 1)
	logs := &notifyLogBuffer{}
	n := newFastNotifier(t, st, WebhookConfig{URL: rcv.srv.URL}, slog.New(slog.NewJSONHandler(logs, nil)))
	stop := startNotifier(t, n)
	for range 2 {
		rcv.next(t)
	}
	stop()
	var failures int
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] != "webhook delivery failed" {
			continue
		}
		failures++
		if _, ok := rec["error"]; ok {
			t.Errorf("logged with key error, not err: %s", line)
		}
		if e, _ := rec["err"].(string); !strings.Contains(e, "503") {
			t.Errorf("err = %v, want the receiver's status: %s", rec["err"], line)
		}
		s, ok := rec["retry_in"].(string)
		if _, err := time.ParseDuration(s); !ok || err != nil {
			t.Errorf("retry_in = %v (%T), want a duration string: %s", rec["retry_in"], rec["retry_in"], line)
		}
	}
	if failures == 0 {
		t.Fatalf("no failed delivery logged:\n%s", logs)
	}
}
