package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/rollout"
)

// bundleRoutes adds the API paths of ferry tree and ferry remove:
//
//	GET  /v1/bundles/{name}/tree?revision=N   rollout.Tree (N omitted or 0: the running revision)
//	POST /v1/bundles/{name}/remove            apply.Removal; 409 while a rollout is open
func (d *Daemon) bundleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/bundles/{name}/tree", func(w http.ResponseWriter, r *http.Request) {
		var rev uint64
		if s := r.URL.Query().Get("revision"); s != "" {
			var err error
			if rev, err = strconv.ParseUint(s, 10, 64); err != nil {
				reply(w, nil, &apiError{http.StatusBadRequest, fmt.Sprintf("parameter revision=%q: want a revision number", s), nil})
				return
			}
		}
		t, err := d.eng.Tree(r.Context(), r.PathValue("name"), rev)
		reply(w, t, err)
	})
	mux.HandleFunc("POST /v1/bundles/{name}/remove", func(w http.ResponseWriter, r *http.Request) {
		// A removal, once started, finishes even if the client goes away.
		rm, err := d.Remove(context.WithoutCancel(r.Context()), r.PathValue("name"))
		if errors.Is(err, rollout.ErrRolloutInProgress) || errors.Is(err, rollout.ErrNotRunning) {
			err = &apiError{http.StatusConflict, err.Error(), err}
		}
		reply(w, rm, err)
	})
}

// Remove takes a bundle's objects out of the cluster and records it removed (ferry remove;
// see rollout.Manager.Remove). Its loop is kicked: a removal that failed part way is tried
// again there, and one that succeeded leaves it nothing to do.
func (d *Daemon) Remove(ctx context.Context, name string) (apply.Removal, error) {
	rm, err := d.eng.Remove(ctx, name)
	d.refreshInfo(name)
	d.kickNotify()
	if rm.Revision != 0 {
		d.kick(name)
	}
	return rm, err
}
