package daemon

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/ferrygitops/ferry/store"
)

// Limits and defaults of webhook delivery.
const (
	// webhookReader is the name under which the store keeps the notifier's cursor.
	webhookReader = "webhook"
	// webhookBatch is the most events one request carries.
	webhookBatch = 100
	// webhookResponseLimit bounds how much of a response body is read; the rest is dropped
	// with the connection.
	webhookResponseLimit = 64 << 10
	// webhookDefaultTimeout bounds one request when WebhookConfig.Timeout is empty.
	webhookDefaultTimeout = 10 * time.Second
	// webhookPoll is how often the log is read without a Kick, for events that another
	// process (ferry CLI on the node) wrote.
	webhookPoll = 10 * time.Second
	// Retry delays double from webhookMinBackoff up to webhookMaxBackoff, with jitter.
	webhookMinBackoff = time.Second
	webhookMaxBackoff = 5 * time.Minute
	// webhookMinSecret is the shortest HMAC key accepted: 128 bits.
	webhookMinSecret = 16
)

// Headers a notifier sets itself: a configured value would break the body's framing or the
// meaning of the signature.
var webhookReservedHeaders = []string{
	"Content-Length", "Content-Type", "Host", "Transfer-Encoding",
	"X-Ferry-Delivery", "X-Ferry-Signature",
}

// WebhookConfig is where a node posts its events.
type WebhookConfig struct {
	// URL receives the POSTs; http or https with a host. Only its scheme and host are ever
	// logged, since Slack-style hooks carry their token in the path.
	URL string `yaml:"url" json:"url"`
	// Secret, if set, is the HMAC-SHA256 key the X-Ferry-Signature header is computed with;
	// at least 16 bytes. It is never logged: LogValue redacts it.
	Secret string `yaml:"secret,omitempty" json:"secret,omitempty"`
	// Timeout bounds one request, as a Go duration ("30s"); empty means 10s.
	Timeout string `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// Headers are added to every request (an Authorization token, say). Their values are
	// never logged.
	Headers map[string]string `yaml:"headers,omitempty" json:"headers,omitempty"`
}

// Validate returns every problem of c, joined, each naming its field.
func (c WebhookConfig) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, fmt.Errorf("%s: %s", p.field, p.msg))
	}
	return errors.Join(errs...)
}

// problems are what Validate reports, by field (relative to the webhook block).
func (c WebhookConfig) problems() []fieldProblem {
	var errs []fieldProblem
	bad := func(field, format string, a ...any) {
		errs = append(errs, fieldProblem{field, fmt.Sprintf(format, a...)})
	}
	if c.URL == "" {
		bad("url", "required")
	} else if u, err := url.Parse(c.URL); err != nil {
		// url.Parse's error repeats the URL, credentials and all: keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		bad("url", "not a URL: %v", err)
	} else {
		if u.Scheme != "http" && u.Scheme != "https" {
			bad("url", "scheme %q: must be http or https", u.Scheme)
		}
		if u.Hostname() == "" {
			bad("url", "no host")
		}
	}
	if c.Secret != "" && len(c.Secret) < webhookMinSecret {
		bad("secret", "%d bytes: must be at least %d", len(c.Secret), webhookMinSecret)
	}
	if c.Timeout != "" {
		if d, err := time.ParseDuration(c.Timeout); err != nil || d <= 0 {
			bad("timeout", "%q: must be a positive duration such as 30s", c.Timeout)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		field := fmt.Sprintf("headers[%q]", name)
		switch {
		case !webhookHeaderName(name):
			bad(field, "not a valid header name")
		case slices.Contains(webhookReservedHeaders, http.CanonicalHeaderKey(name)):
			bad(field, "set by ferry, cannot be configured")
		case !webhookHeaderValue(c.Headers[name]):
			// The value itself is not shown: it is often a credential.
			bad(field, "value holds a control character")
		}
	}
	return errs
}

// LogValue shows c without its secret or header values.
func (c WebhookConfig) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("url", webhookEndpoint(c.URL))}
	if c.Secret != "" {
		attrs = append(attrs, slog.String("secret", "[REDACTED]"))
	}
	if c.Timeout != "" {
		attrs = append(attrs, slog.String("timeout", c.Timeout))
	}
	if len(c.Headers) > 0 {
		attrs = append(attrs, slog.Any("headers", slices.Sorted(maps.Keys(c.Headers))))
	}
	return slog.GroupValue(attrs...)
}

// Notifier posts the store's event log to a webhook.
//
// The event log is the outbox: every state change is written to it in the same bbolt
// transaction as the change itself, so an event exists if and only if its change happened,
// whatever the network does. The notifier reads the log after its cursor (reader "webhook"
// in the store), posts up to 100 events per request and advances the cursor only after a
// 2xx answer. Events are never dropped: a failing receiver is retried with exponential
// backoff (1s doubling to 5m, jittered) for as long as it takes, and the backlog waits in
// the log.
//
// Delivery is at least once. A timeout, a lost answer or a crash after the receiver took a
// batch but before the cursor was recorded sends that batch again. Within one Run, a failed
// batch is re-sent as it was, byte for byte under the same X-Ferry-Delivery id, even if
// events were added meanwhile; after a restart the re-sent range starts at the same seq but
// may run further. Seqs increase strictly per node, so a receiver de-duplicates exactly by
// dropping every event whose seq it has already recorded; the delivery id, "<first
// seq>-<last seq>", lets it skip a repeated request whole.
//
// Each request is
//
//	POST <url>
//	Content-Type: application/json
//	User-Agent: ferry/<version>
//	X-Ferry-Delivery: <first seq>-<last seq>
//	X-Ferry-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the secret>
//
//	{"events": [{"seq": 1, "time": "…", "bundle": "…", "revision": 3, "reason": "…", "message": "…"}, …]}
//
// X-Ferry-Signature, present only when a secret is configured, works like GitHub's
// X-Hub-Signature-256: the receiver computes the HMAC over the raw body bytes, before
// parsing them, and compares in constant time. Redirects are not followed: a 3xx is a
// failure naming its status, since re-posting a signed body elsewhere is not ferry's call.
//
// One Notifier per store: two would race on the cursor.
type Notifier struct {
	st       *store.Store
	url      string // may hold a token: never logged, only endpoint is
	endpoint string // scheme://host of url
	secret   []byte
	header   http.Header
	client   *http.Client
	log      *slog.Logger
	kick     chan struct{}

	// The package's constants, unless a test shortens them before Run.
	minBackoff, maxBackoff, poll time.Duration
}

// NewNotifier returns a notifier of st's events to the webhook cfg, which it validates.
// log receives delivery failures; nil discards them.
func NewNotifier(st *store.Store, cfg WebhookConfig, log *slog.Logger) (*Notifier, error) {
	if st == nil {
		return nil, errors.New("no store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	timeout := webhookDefaultTimeout
	if cfg.Timeout != "" {
		timeout, _ = time.ParseDuration(cfg.Timeout) // checked by Validate
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	header := make(http.Header, len(cfg.Headers)+4)
	for k, v := range cfg.Headers {
		header.Set(k, v)
	}
	header.Set("Content-Type", "application/json")
	if header.Get("User-Agent") == "" {
		header.Set("User-Agent", webhookUserAgent())
	}
	var transport http.RoundTripper = &http.Transport{Proxy: http.ProxyFromEnvironment}
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		transport = t.Clone() // its own connection pool, the default's proxy and TLS settings
	}
	n := &Notifier{
		st:       st,
		url:      cfg.URL,
		endpoint: webhookEndpoint(cfg.URL),
		header:   header,
		client: &http.Client{
			Transport: transport,
			Timeout:   timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // hand the 3xx to post, which refuses it
			},
		},
		kick:       make(chan struct{}, 1),
		minBackoff: webhookMinBackoff,
		maxBackoff: webhookMaxBackoff,
		poll:       webhookPoll,
	}
	if cfg.Secret != "" {
		n.secret = []byte(cfg.Secret)
	}
	n.log = log.With("component", "webhook", "endpoint", n.endpoint)
	return n, nil
}

// Kick makes Run read the event log now rather than at its next poll. It never blocks, and
// kicks that arrive while one is pending coalesce into it. A nil Notifier's Kick does
// nothing, so callers need not check whether a webhook is configured. A Kick does not cut
// short the backoff after a failure.
func (n *Notifier) Kick() {
	if n == nil {
		return
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Run delivers events until ctx is done, then returns nil. It returns an error only if it
// cannot read its cursor when it starts; later failures, of the receiver or of the store,
// are logged once per attempt and retried with backoff, so that notifications never stop
// the daemon.
func (n *Notifier) Run(ctx context.Context) error {
	defer n.client.CloseIdleConnections()
	cursor, err := n.st.Cursor(webhookReader)
	if err != nil {
		return fmt.Errorf("webhook: read cursor: %w", err)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	failures := 0
	var pending []store.Event // the batch being delivered, kept across retries
	for {
		err := n.flush(ctx, &cursor, &pending)
		if ctx.Err() != nil {
			return nil
		}
		wait, kick := n.poll, n.kick
		if err != nil {
			wait, kick = n.backoff(failures), nil
			failures++
			n.log.Warn("webhook delivery failed", "attempt", failures, "retry_in", wait.Round(time.Millisecond).String(), "err", err)
		} else if failures > 0 {
			n.log.Info("webhook delivery recovered", "failed_attempts", failures, "cursor", cursor)
			failures = 0
		}
		timer.Reset(wait) // Go ≥1.23 timers: no stale tick survives Reset
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-kick:
		}
	}
}

// flush posts every event after *cursor, a batch at a time, advancing *cursor with the
// store's copy after each batch is acknowledged. *pending is the batch a failed call left,
// sent again first and as it was, so that its delivery id keeps naming the same events.
func (n *Notifier) flush(ctx context.Context, cursor *uint64, pending *[]store.Event) error {
	for {
		retry := *pending != nil
		if !retry {
			events, err := n.st.Events(*cursor, webhookBatch)
			if err != nil {
				return fmt.Errorf("read events after %d: %w", *cursor, err)
			}
			if len(events) == 0 {
				return nil
			}
			*pending = events
		}
		batch := *pending
		id, err := n.post(ctx, batch)
		if err != nil {
			return err
		}
		last := batch[len(batch)-1].Seq
		// Until this is recorded, a crash sends the batch again: at least once.
		if err := n.st.SetCursor(webhookReader, last); err != nil {
			return fmt.Errorf("delivery %s: record cursor: %w", id, err)
		}
		*cursor, *pending = last, nil
		n.log.Debug("webhook delivered", "delivery", id, "events", len(batch))
		// A short batch just read means the log ended there; a retried one may be older
		// than events written since, so read on.
		if !retry && len(batch) < webhookBatch {
			return nil
		}
	}
}

// webhookPayload is the body of a request.
type webhookPayload struct {
	Events []store.Event `json:"events"`
}

// post sends one batch and returns its delivery id; nil error means a 2xx answer.
func (n *Notifier) post(ctx context.Context, events []store.Event) (string, error) {
	id := fmt.Sprintf("%d-%d", events[0].Seq, events[len(events)-1].Seq)
	body, err := json.Marshal(webhookPayload{Events: events})
	if err != nil {
		return id, fmt.Errorf("delivery %s: encode: %w", id, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return id, fmt.Errorf("delivery %s: %w", id, err)
	}
	req.Header = n.header.Clone()
	req.Header.Set("X-Ferry-Delivery", id)
	if n.secret != nil {
		req.Header.Set("X-Ferry-Signature", webhookSignature(n.secret, body))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		// *url.Error repeats the whole URL, whose path may be the hook's token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return id, fmt.Errorf("delivery %s: post: %w", id, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, webhookResponseLimit))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return id, nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		to := ""
		if loc := resp.Header.Get("Location"); loc != "" {
			to = " to " + webhookEndpoint(loc)
		}
		return id, fmt.Errorf("delivery %s: webhook answered %s (redirect%s); redirects are not followed: configure the final URL", id, resp.Status, to)
	default:
		return id, fmt.Errorf("delivery %s: webhook answered %s: %q", id, resp.Status, webhookSnippet(answer, 256))
	}
}

// backoff is the wait after the failures+1-th consecutive failure: minBackoff doubled per
// earlier failure up to maxBackoff, then jittered into [d/2, d) so that nodes cut off
// together do not all come back at the same instant.
func (n *Notifier) backoff(failures int) time.Duration {
	d := n.minBackoff
	for range failures {
		if d >= n.maxBackoff {
			break
		}
		d *= 2
	}
	d = min(d, n.maxBackoff)
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// webhookSignature is the X-Ferry-Signature value of body.
func webhookSignature(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhookEndpoint is the part of a webhook URL that may be logged: scheme and host.
func webhookEndpoint(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "[invalid URL]"
	}
	return u.Scheme + "://" + u.Host
}

func webhookUserAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "ferry/" + v
}

func webhookSnippet(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// webhookHeaderName reports whether s is a field name: a token of RFC 9110 §5.6.2.
func webhookHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// webhookHeaderValue reports whether s has no control character other than tab
// (RFC 9110 §5.5); net/http would refuse every request otherwise, forever.
func webhookHeaderValue(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
