package daemon

import "net/http"

// bundleRoutes adds GET /v1/bundles/{name}/tree and POST /v1/bundles/{name}/remove (being written).
func (d *Daemon) bundleRoutes(mux *http.ServeMux) {}
