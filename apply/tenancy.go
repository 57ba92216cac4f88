package apply

import (
	"fmt"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/ferrygitops/ferry/bundles"
)

// serviceAccountUser is the user name the API server gives a service account's tokens, and
// the one the applier impersonates for a component that names serviceAccountName.
func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// clusterFor returns the connection a component's requests go through: the applier's own
// for user "", else one that impersonates user, so the API server's RBAC decides what the
// component may do (Flux's multi-tenancy).
func (ap *Applier) clusterFor(user string) (*cluster, error) {
	if user == "" {
		return ap.c, nil
	}
	ap.cmu.Lock()
	defer ap.cmu.Unlock()
	if cc := ap.clusters[user]; cc != nil {
		return cc, nil
	}
	cfg := rest.CopyConfig(ap.c.cfg)
	// Groups are left to the API server, which adds system:serviceaccounts and
	// system:serviceaccounts:<namespace> for a service account's name.
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	cc := &cluster{cfg: cfg, dyn: dyn, mapper: ap.c.mapper, concurrency: ap.c.concurrency, poll: ap.c.poll}
	if ap.clusters == nil {
		ap.clusters = map[string]*cluster{}
	}
	ap.clusters[user] = cc
	return cc, nil
}

// refNamespace returns the namespace a reference of component c (substituteFrom,
// valuesFrom, healthChecks) names, ns or the component's own when ns is empty. A node that
// refuses cross-namespace references refuses any other namespace.
func (ap *Applier) refNamespace(c *Component, ns, field string) (string, error) {
	env := ap.opts.Env
	env.scopes = c.scopes
	return env.refNamespace(c.home, ns, field)
}

// refNamespace also holds references to the namespaces the signing keys' scopes allow: a
// reference is read with the component's identity, which is Ferry's own when the scope names
// no service account.
func (env Env) refNamespace(own, ns, field string) (string, error) {
	if ns == "" {
		ns = own
	}
	if ns != own && env.NoCrossNamespaceRefs {
		return "", fmt.Errorf("%s names namespace %q, but this node refuses references outside the component's namespace %q (noCrossNamespaceRefs)", field, ns, own)
	}
	for _, sc := range env.scopes {
		if !sc.AllowsNamespace(ns) {
			return "", fmt.Errorf("%s names namespace %q, but its bundle's signing key may only reach namespaces %s", field, ns, strings.Join(sc.Namespaces, ","))
		}
	}
	return ns, nil
}

// confine refuses, before anything is sent, the objects a component may not hold, naming
// each: for a tenant (a component that runs as a service account and sets
// targetNamespace), objects outside that namespace; for a bundle whose signing keys are
// scoped to namespaces, objects outside them. Cluster-scoped objects fail both.
func confine(c *Component, objs []*object) error {
	var out []string
	for _, o := range objs {
		if !c.allows(o.ref.Namespace) {
			out = append(out, o.ref.String())
		}
	}
	if len(out) == 0 {
		return nil
	}
	var why []string
	if c.sa != "" && c.targetNS != "" {
		why = append(why, fmt.Sprintf("runs as %s in namespace %s", c.sa, c.targetNS))
	}
	for _, sc := range c.scopes {
		if len(sc.Namespaces) > 0 {
			why = append(why, "its bundle's signing key may only ship to namespaces "+strings.Join(sc.Namespaces, ","))
		}
	}
	return fmt.Errorf("%s, but has objects outside (cluster-scoped or in another namespace): %s", strings.Join(why, "; "), strings.Join(out, ", "))
}

// allows reports whether the component may hold an object in namespace ns ("" for a
// cluster-scoped one).
func (c *Component) allows(ns string) bool {
	if c.sa != "" && c.targetNS != "" && ns != c.targetNS {
		return false
	}
	for _, sc := range c.scopes {
		if !sc.AllowsNamespace(ns) {
			return false
		}
	}
	return true
}

// confined reports whether confine can refuse anything of the component.
func (c *Component) confined() bool {
	if c.sa != "" && c.targetNS != "" {
		return true
	}
	for _, sc := range c.scopes {
		if len(sc.Namespaces) > 0 {
			return true
		}
	}
	return false
}

// scope applies the signing keys' scopes to component c before anything is sent: its
// namespace must be one they allow, and a key that names a service account makes the
// component run as it (a component naming another is refused). sa is the component's own
// serviceAccountName; the one to run as is returned.
func scope(c *Component, scopes []*bundles.Scope, sa string) (string, error) {
	c.scopes = scopes
	forced := ""
	for _, sc := range scopes {
		if !sc.AllowsNamespace(c.ns) {
			return "", fmt.Errorf("works in namespace %s, but its bundle's signing key may only ship to namespaces %s", c.ns, strings.Join(sc.Namespaces, ","))
		}
		if !sc.AllowsNamespace(c.home) {
			return "", fmt.Errorf("lives in namespace %s, but its bundle's signing key may only ship to namespaces %s", c.home, strings.Join(sc.Namespaces, ","))
		}
		if sc.ServiceAccount == "" {
			continue
		}
		if forced != "" && forced != sc.ServiceAccount {
			return "", fmt.Errorf("its bundle's signing keys name different service accounts (%s, %s)", forced, sc.ServiceAccount)
		}
		forced = sc.ServiceAccount
	}
	switch {
	case forced == "":
		return sa, nil
	case sa != "" && sa != forced:
		return "", fmt.Errorf("serviceAccountName is %s, but its bundle's signing key may only ship as service account %s", sa, forced)
	}
	return forced, nil
}
