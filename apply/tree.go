package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"helm.sh/helm/v3/pkg/release"
	helmdriver "helm.sh/helm/v3/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
)

// TreeComponent is one component of a Tree, in the order the revision applies them.
type TreeComponent struct {
	Name string `json:"name"`
	// Release is a Helm component's release; Objects are then the release's.
	Release *ReleaseHealth `json:"release,omitempty"`
	Objects []ObjectHealth `json:"objects"`
}

// ReleaseHealth is a Helm release and the status of its latest Helm revision.
type ReleaseHealth struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Version is the Helm revision this Ferry revision deployed (0: Helm never finished).
	Version int    `json:"version,omitempty"`
	Status  string `json:"status"` // as ObjectHealth.Status
	Message string `json:"message,omitempty"`
}

// ObjectHealth is one object of a Tree and its kstatus now.
type ObjectHealth struct {
	Object ObjectRef `json:"object"`
	ID     string    `json:"id"` // Object.String()
	// Status is kstatus's: Current, InProgress, Failed, Terminating, NotFound (absent, or no
	// longer carrying the bundle's label), or Unknown (not read).
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// TreeOptions are the data Tree works from.
type TreeOptions struct {
	Bundle string
	// Inventories are the revision's, by component.
	Inventories map[string]Inventory
	// Order is the components' names in the order the revision applies them.
	Order []string
}

// Tree returns the objects the inventories list, by component in opts.Order, with their
// health now, as `ferry tree` shows them (as `flux tree kustomization` does). Live objects
// are read as each component's identity, with one LIST per resource and namespace filtered
// by the bundle's label, as health is during a rollout; a Helm release's status is read
// from Helm's storage. Tree writes nothing.
func (ap *Applier) Tree(ctx context.Context, opts TreeOptions) ([]TreeComponent, error) {
	name, invs := opts.Bundle, opts.Inventories
	// One listing per identity: the components that run as the same one share its LISTs.
	byIdentity := map[string][]ObjectRef{}
	for _, inv := range invs {
		for _, o := range inv.Objects {
			byIdentity[inv.ServiceAccount] = append(byIdentity[inv.ServiceAccount], o.ObjectRef)
		}
	}
	health := map[string]map[string]ObjectHealth{}
	for sa, refs := range byIdentity {
		cc, err := ap.clusterFor(sa)
		if err != nil {
			return nil, err
		}
		health[sa] = cc.health(ctx, name, refs)
	}
	out := []TreeComponent{}
	for _, cname := range opts.Order {
		inv := invs[cname]
		tc := TreeComponent{Name: cname, Objects: make([]ObjectHealth, 0, len(inv.Objects))}
		if rec := inv.Release; rec != nil {
			cc, err := ap.clusterFor(inv.ServiceAccount)
			if err != nil {
				return nil, err
			}
			rh := releaseHealth(cc, *rec)
			tc.Release = &rh
		}
		for _, o := range inv.Objects {
			tc.Objects = append(tc.Objects, health[inv.ServiceAccount][o.key()])
		}
		out = append(out, tc)
	}
	return out, nil
}

// health reads refs live (see live) and computes each one's kstatus, by key. Kinds the API
// server no longer serves are NotFound; a LIST that fails leaves its objects Unknown.
func (c *cluster) health(ctx context.Context, bundle string, refs []ObjectRef) map[string]ObjectHealth {
	out := map[string]ObjectHealth{}
	var served []ObjectRef
	for _, r := range refs {
		if _, err := c.mapping(r.GVK()); err != nil {
			h := ObjectHealth{Object: r, ID: r.String(), Status: status.UnknownStatus.String(), Message: err.Error()}
			if meta.IsNoMatchError(err) {
				h.Status, h.Message = status.NotFoundStatus.String(), "its kind is not served by the API server"
			}
			out[r.key()] = h
			continue
		}
		served = append(served, r)
	}
	live, err := c.live(ctx, bundle, served)
	for _, r := range served {
		out[r.key()] = objectHealth(r, live[r.key()], err)
	}
	return out
}

// objectHealth is the kstatus of u, the live copy of r (nil when it was not found; listErr
// is the error of the reads, if any).
func objectHealth(r ObjectRef, u *unstructured.Unstructured, listErr error) ObjectHealth {
	h := ObjectHealth{Object: r, ID: r.String()}
	switch {
	case u == nil && listErr != nil:
		h.Status, h.Message = status.UnknownStatus.String(), "not read: "+listErr.Error()
	case u == nil:
		h.Status, h.Message = status.NotFoundStatus.String(), "not in the cluster with the label "+LabelBundle
	default:
		st, err := status.Compute(u)
		if err != nil {
			h.Status, h.Message = status.UnknownStatus.String(), err.Error()
			break
		}
		h.Status, h.Message = st.Status.String(), st.Message
	}
	return h
}

// releaseHealth reads the latest Helm revision of a release from Helm's storage (Secrets in
// its namespace), as the identity that installed it. It goes to the storage driver, not to
// an action.Configuration: Tree runs beside rollouts and must share nothing with them.
func releaseHealth(cc *cluster, rec Release) ReleaseHealth {
	h := ReleaseHealth{Name: rec.Name, Namespace: rec.Namespace, Version: rec.Version}
	cs, err := kubernetes.NewForConfig(cc.cfg)
	if err != nil {
		h.Status, h.Message = status.UnknownStatus.String(), err.Error()
		return h
	}
	rels, err := helmdriver.NewSecrets(cs.CoreV1().Secrets(rec.Namespace)).Query(map[string]string{"name": rec.Name, "owner": "helm"})
	switch {
	case errors.Is(err, helmdriver.ErrReleaseNotFound):
		h.Status, h.Message = status.NotFoundStatus.String(), "no such Helm release"
		return h
	case err != nil:
		h.Status, h.Message = status.UnknownStatus.String(), "not read: "+err.Error()
		return h
	}
	last := slices.MaxFunc(rels, func(a, b *release.Release) int { return a.Version - b.Version })
	msg := fmt.Sprintf("Helm revision %d %s", last.Version, last.Info.Status)
	if d := last.Info.Description; d != "" {
		msg += ": " + d
	}
	h.Message = msg
	switch st := last.Info.Status; {
	case st == release.StatusDeployed:
		h.Status = status.CurrentStatus.String()
	case st.IsPending():
		h.Status = status.InProgressStatus.String()
	case st == release.StatusUninstalling:
		h.Status = status.TerminatingStatus.String()
	case st == release.StatusUninstalled:
		h.Status = status.NotFoundStatus.String()
	default: // failed, superseded as the latest, unknown
		h.Status = status.FailedStatus.String()
	}
	return h
}
