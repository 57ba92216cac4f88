package apply

import (
	"fmt"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// serviceAccountUser is the user name the API server gives a service account's tokens, and
// the one the engine impersonates for a component that names serviceAccountName.
func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// clusterFor returns the connection a component's requests go through: the engine's own
// for user "", else one that impersonates user, so the API server's RBAC decides what the
// component may do (Flux's multi-tenancy). Callers hold e.mu.
func (e *Engine) clusterFor(user string) (*cluster, error) {
	if user == "" {
		return e.c, nil
	}
	if cc := e.clusters[user]; cc != nil {
		return cc, nil
	}
	cfg := rest.CopyConfig(e.c.cfg)
	// Groups are left to the API server, which adds system:serviceaccounts and
	// system:serviceaccounts:<namespace> for a service account's name.
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	cc := &cluster{cfg: cfg, dyn: dyn, mapper: e.c.mapper, concurrency: e.c.concurrency, poll: e.c.poll}
	if e.clusters == nil {
		e.clusters = map[string]*cluster{}
	}
	e.clusters[user] = cc
	return cc, nil
}

// refNamespace returns the namespace a reference of component c (substituteFrom,
// valuesFrom, healthChecks) names, ns or the component's own when ns is empty. A node that
// refuses cross-namespace references refuses any other namespace.
func (e *Engine) refNamespace(c *component, ns, field string) (string, error) {
	return e.opts.refNamespace(c.ns, ns, field)
}

func (env Env) refNamespace(own, ns, field string) (string, error) {
	if ns == "" || ns == own {
		return own, nil
	}
	if env.NoCrossNamespaceRefs {
		return "", fmt.Errorf("%s names namespace %q, but this node refuses references outside the component's namespace %q (noCrossNamespaceRefs)", field, ns, own)
	}
	return ns, nil
}

// confine refuses, before anything is sent, the objects of a tenant component (one that
// runs as a service account and sets targetNamespace) that are cluster-scoped or in
// another namespace, naming each.
func confine(c *component) error {
	if c.sa == "" || c.targetNS == "" {
		return nil
	}
	var out []string
	for _, o := range c.objs {
		if o.ref.Namespace != c.targetNS {
			out = append(out, o.ref.String())
		}
	}
	if len(out) == 0 {
		return nil
	}
	return fmt.Errorf("runs as %s in namespace %s, but has objects outside it (cluster-scoped or in another namespace): %s", c.sa, c.targetNS, strings.Join(out, ", "))
}
