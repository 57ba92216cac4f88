package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrygitops/ferry/daemon/images"
	"github.com/ferrygitops/ferry/receipt"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// The local API: HTTP+JSON on the daemon's unix socket (owner-only). Paths:
//
//	GET  /v1/status                       []BundleStatus
//	GET  /v1/bundles/{name}/history       []store.Revision
//	POST /v1/bundles/{name}/rollback      {"revision": N} → rollout.Report
//	POST /v1/bundles/{name}/suspend|resume|reconcile
//	POST /v1/import                       {"ref": "PATH|oci://…|s3://…"} → store.Revision
//	POST /v1/preview                      {"ref": …} → Preview (verified, nothing written)
//	GET  /v1/events?after=N&limit=M       []store.Event
//	GET  /v1/logs?after=N&level=L&bundle=B&limit=M&wait=D
//	                                      []LogRecord (wait: up to D for a first one)
//
// Errors are {"error": "…", "reason": "…"} with a 4xx or 5xx status; reason names the kind of
// error a client may branch on (see [APIError]), or is absent.

// BundleStatus is what `ferry status` shows, the site technician's first questions first.
type BundleStatus struct {
	Bundle     string      `json:"bundle"`
	Revision   uint64      `json:"revision"`
	Version    string      `json:"version,omitempty"`
	State      store.State `json:"state,omitempty"`
	LastGood   uint64      `json:"lastGood"`
	Newest     uint64      `json:"newest"`
	Suspended  bool        `json:"suspended"`
	Applying   uint64      `json:"applying,omitempty"`
	LastChange time.Time   `json:"lastChange,omitzero"`
	LastError  string      `json:"lastError,omitempty"`
	// Removed is when ferry remove took the bundle out of the cluster (Revision is 0 since).
	Removed time.Time `json:"removed,omitzero"`
}

// SignedReceipt is the node's receipt as GET /v1/receipt serves it: the file's name and
// bytes, and its signature file's.
type SignedReceipt struct {
	Name      string `json:"name"`
	File      string `json:"file"`
	Signature string `json:"signature"`
}

// maxRequestBytes bounds an API request body.
const maxRequestBytes = 64 << 10

func (d *Daemon) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		out, err := d.Status()
		reply(w, out, err)
	})
	mux.HandleFunc("GET /v1/bundles/{name}/history", func(w http.ResponseWriter, r *http.Request) {
		revs, err := d.st.Revisions(r.PathValue("name"))
		if err == nil && len(revs) == 0 {
			err = notFound(r.PathValue("name"))
		}
		reply(w, revs, err)
	})
	mux.HandleFunc("POST /v1/bundles/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Revision uint64 `json:"revision"`
		}
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		if _, err := d.st.GetRevision(r.PathValue("name"), req.Revision); err != nil {
			reply(w, nil, err)
			return
		}
		// A rollback, once started, finishes even if the client goes away.
		rep, err := d.RollbackTo(context.WithoutCancel(r.Context()), r.PathValue("name"), req.Revision)
		reply(w, rep, err)
	})
	for _, action := range []string{"suspend", "resume"} {
		mux.HandleFunc("POST /v1/bundles/{name}/"+action, func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			err := d.st.SetSuspended(name, action == "suspend")
			if err == nil && action == "resume" {
				d.kick(name)
			}
			d.kickNotify()
			reply(w, map[string]string{"bundle": name, "result": map[string]string{"suspend": "suspended", "resume": "resumed"}[action]}, err)
		})
	}
	mux.HandleFunc("POST /v1/bundles/{name}/reconcile", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		b, err := d.st.GetBundle(name)
		if err != nil || b.Newest == 0 {
			reply(w, nil, notFound(name))
			return
		}
		if b.Suspended {
			// The loop's pass does nothing for a suspended bundle: say so rather than
			// report a request nothing will act on.
			reply(w, nil, &apiError{http.StatusConflict, fmt.Sprintf("bundle %q is suspended: nothing is reconciled until it is resumed (ferry resume %s)", name, name), ErrSuspended})
			return
		}
		d.kick(name)
		reply(w, map[string]string{"bundle": name, "result": "reconcile requested"}, nil)
	})
	mux.HandleFunc("POST /v1/import", func(w http.ResponseWriter, r *http.Request) {
		var req refRequest
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		rev, err := d.Import(r.Context(), req.Ref)
		reply(w, rev, err)
	})
	mux.HandleFunc("POST /v1/preview", func(w http.ResponseWriter, r *http.Request) {
		var req refRequest
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		p, err := d.Preview(r.Context(), req.Ref)
		reply(w, p, err)
	})
	mux.HandleFunc("GET /v1/receipt", func(w http.ResponseWriter, r *http.Request) {
		file, sig, err := d.SignedReceipt()
		var out *SignedReceipt
		if err == nil {
			out = &SignedReceipt{Name: d.receipts.node.name + receipt.Suffix, File: string(file), Signature: string(sig)}
		}
		reply(w, out, err)
	})
	mux.HandleFunc("GET /v1/import/progress", func(w http.ResponseWriter, r *http.Request) {
		reply(w, d.importProgress(), nil)
	})
	mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		held, err := d.images.Held(r.Context())
		if held == nil && err == nil {
			held = []images.Held{}
		}
		reply(w, held, err)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil || limit <= 0 || limit > 1000 {
			limit = 100
		}
		evs, err := d.st.Events(after, limit)
		reply(w, evs, err)
	})
	mux.HandleFunc("GET /v1/logs", func(w http.ResponseWriter, r *http.Request) {
		q, wait, err := logQuery(r)
		if err != nil {
			reply(w, nil, err)
			return
		}
		// A follower's wait ends when the daemon stops, not only when it hangs up.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		d.mu.Lock()
		if d.started != nil {
			defer context.AfterFunc(d.started, cancel)()
		}
		d.mu.Unlock()
		reply(w, d.logs.wait(ctx, q, wait), nil)
	})
	d.bundleRoutes(mux)
	return mux
}

// refRequest is the body of POST /v1/import and /v1/preview: where the bundle is.
type refRequest struct {
	Ref string `json:"ref"`
}

// maxLogWait bounds how long GET /v1/logs waits for a record (ferry logs -f asks again).
const maxLogWait = time.Minute

// logQuery reads the parameters of GET /v1/logs; a wrong one is a 400 naming it.
func logQuery(r *http.Request) (LogQuery, time.Duration, error) {
	v := r.URL.Query()
	q := LogQuery{Bundle: v.Get("bundle"), Level: slog.LevelInfo, Limit: logKeep}
	bad := func(name string, err error) error {
		return &apiError{http.StatusBadRequest, fmt.Sprintf("parameter %s=%q: %v", name, v.Get(name), err), nil}
	}
	var err error
	if s := v.Get("after"); s != "" {
		if q.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			return q, 0, bad("after", err)
		}
	}
	if s := v.Get("level"); s != "" {
		if q.Level, err = ParseLogLevel(s); err != nil {
			return q, 0, bad("level", errors.New("want debug, info, warn or error"))
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit <= 0 {
			return q, 0, bad("limit", errors.New("want a positive number"))
		}
	}
	var wait time.Duration
	if s := v.Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 {
			return q, 0, bad("wait", errors.New("want a duration such as 30s"))
		}
	}
	return q, min(wait, maxLogWait), nil
}

// Status returns every bundle's status, by name.
func (d *Daemon) Status() ([]BundleStatus, error) {
	bs, err := d.st.Bundles()
	if err != nil {
		return nil, err
	}
	out := []BundleStatus{}
	for _, b := range bs {
		s := BundleStatus{Bundle: b.Name, Revision: b.Current, LastGood: b.LastGood, Newest: b.Newest, Suspended: b.Suspended, Removed: b.Removed}
		if b.Txn != nil {
			s.Applying = b.Txn.Revision
		}
		if r, err := d.st.GetRevision(b.Name, b.Current); err == nil {
			s.Version, s.State = r.Version, r.State
			if n := len(r.History); n > 0 {
				s.LastChange = r.History[n-1].Time
			} else {
				s.LastChange = r.Admitted
			}
		}
		d.mu.Lock()
		s.LastError = d.lastErr[b.Name]
		d.mu.Unlock()
		out = append(out, s)
	}
	return out, nil
}

// ErrSuspended is the reply to a request that a suspended bundle does not act on (ferry
// reconcile).
var ErrSuspended = errors.New("bundle is suspended")

// ErrUnreachable is returned by [Client.Do] when nothing answers on the socket: the daemon is
// not running, or listens on another socket.
var ErrUnreachable = errors.New("ferry daemon not reachable")

// reasons are the errors a client branches on, by the name the reply carries: [APIError]
// matches the same sentinel on the client side.
var reasons = []struct {
	name string
	err  error
}{
	{"AlreadyAdmitted", store.ErrAlreadyAdmitted},
	{"Untrusted", verify.ErrUntrusted},
	{"Suspended", ErrSuspended},
	{"NotFound", store.ErrNotFound},
}

func reasonOf(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return ""
}

// apiError is an error with the status to reply with; is, if set, is the sentinel it
// matches.
type apiError struct {
	status int
	msg    string
	is     error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.is }

func notFound(name string) error {
	return &apiError{http.StatusNotFound, fmt.Sprintf("no bundle %q on this node", name), store.ErrNotFound}
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{http.StatusBadRequest, "request body: " + err.Error(), nil}
	}
	return nil
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status := http.StatusInternalServerError
		var ae *apiError
		switch {
		case errors.As(err, &ae):
			status = ae.status
		case errors.Is(err, store.ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, rollout.ErrRolledBack), errors.Is(err, rollout.ErrFailedBefore):
			status = http.StatusConflict
		case errors.Is(err, verify.ErrUntrusted):
			status = http.StatusUnprocessableEntity
		}
		w.WriteHeader(status)
		body := map[string]any{"error": err.Error(), "result": v}
		if reason := reasonOf(err); reason != "" {
			body["reason"] = reason
		}
		json.NewEncoder(w).Encode(body)
		return
	}
	json.NewEncoder(w).Encode(v)
}

// APIError is an error reply of the daemon. It matches (errors.Is) the sentinel its Reason
// names (verify.ErrUntrusted, ErrSuspended, store.ErrNotFound), so a client branches on it as
// it would on the daemon's own error.
type APIError struct {
	Status  int    // the HTTP status
	Reason  string // Untrusted, Suspended, NotFound, or empty
	Message string
}

func (e *APIError) Error() string { return e.Message }

func (e *APIError) Unwrap() error {
	for _, r := range reasons {
		if r.name == e.Reason {
			return r.err
		}
	}
	return nil
}

// Client talks to a daemon's socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Do sends a request and decodes the reply into out (nil: ignore it). A daemon error is
// returned as an *APIError; a socket nobody answers on as an error wrapping ErrUnreachable.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ferry"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// Only a failed dial means nobody is there; an error after it (a reply cut short)
		// is the daemon's.
		if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w on %s (is it running? --socket names another): %w", ErrUnreachable, c.socket, err)
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error  string `json:"error"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = "daemon: " + resp.Status
		}
		return &APIError{Status: resp.StatusCode, Reason: e.Reason, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}
