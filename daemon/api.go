package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/daemon/images"
	"github.com/ferrygitops/ferry/store"
)

// The local API: HTTP+JSON on the daemon's unix socket (owner-only). Paths:
//
//	GET  /v1/status                       []BundleStatus
//	GET  /v1/bundles/{name}/history       []store.Revision
//	POST /v1/bundles/{name}/rollback      {"revision": N} → apply.Report
//	POST /v1/bundles/{name}/suspend|resume|reconcile
//	POST /v1/import                       {"ref": "PATH|oci://…|s3://…"} → store.Revision
//	GET  /v1/events?after=N&limit=M       []store.Event
//
// Errors are {"error": "…"} with a 4xx or 5xx status.

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
	LastChange time.Time   `json:"lastChange"`
	LastError  string      `json:"lastError,omitempty"`
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
		if b, err := d.st.GetBundle(name); err != nil || b.Newest == 0 {
			reply(w, nil, notFound(name))
			return
		}
		d.kick(name)
		reply(w, map[string]string{"bundle": name, "result": "reconcile requested"}, nil)
	})
	mux.HandleFunc("POST /v1/import", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Ref string `json:"ref"`
		}
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		rev, err := d.Import(r.Context(), req.Ref)
		reply(w, rev, err)
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
	return mux
}

// Status returns every bundle's status, by name.
func (d *Daemon) Status() ([]BundleStatus, error) {
	bs, err := d.st.Bundles()
	if err != nil {
		return nil, err
	}
	out := []BundleStatus{}
	for _, b := range bs {
		s := BundleStatus{Bundle: b.Name, Revision: b.Current, LastGood: b.LastGood, Newest: b.Newest, Suspended: b.Suspended}
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

type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func notFound(name string) error {
	return &apiError{http.StatusNotFound, fmt.Sprintf("no bundle %q on this node", name)}
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{http.StatusBadRequest, "request body: " + err.Error()}
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
		case errors.Is(err, apply.ErrRolledBack), errors.Is(err, apply.ErrFailedBefore):
			status = http.StatusConflict
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": err.Error(), "result": v})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// Client talks to a daemon's socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{http: &http.Client{Transport: tr}}
}

// Do sends a request and decodes the reply into out (nil: ignore it). A daemon error is
// returned as an error with its message.
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
		return fmt.Errorf("is ferry daemon running? %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("daemon: %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}
