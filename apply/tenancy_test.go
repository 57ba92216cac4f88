package apply

import (
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

func TestScopeOfComponent(t *testing.T) {
	deployer := &bundles.Scope{Namespaces: []string{"team-a"}, ServiceAccount: "deployer"}
	for _, tc := range []struct {
		name, ns, sa string
		scopes       []*bundles.Scope
		want, err    string
		home         string // default ns
	}{
		{"unscoped keeps its own", "team-a", "own", nil, "own", "", ""},
		{"forced", "team-a", "", []*bundles.Scope{deployer}, "deployer", "", ""},
		{"same name", "team-a", "deployer", []*bundles.Scope{deployer}, "deployer", "", ""},
		{"other name", "team-a", "admin", []*bundles.Scope{deployer}, "", "may only ship as service account deployer", ""},
		{"other namespace", "team-b", "", []*bundles.Scope{deployer}, "", "may only ship to namespaces team-a", ""},
		{"keys disagree", "team-a", "", []*bundles.Scope{deployer, {ServiceAccount: "other"}}, "", "different service accounts", ""},
		// A Flux Kustomization living in flux-system that targets team-a: its service account
		// and references would be in flux-system, which the key does not allow.
		{"lives elsewhere", "team-a", "", []*bundles.Scope{deployer}, "", "lives in namespace flux-system", "flux-system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Component{ns: tc.ns, home: tc.home}
			if c.home == "" {
				c.home = tc.ns
			}
			got, err := scope(c, tc.scopes, tc.sa)
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) || got != tc.want {
				t.Fatalf("scope = %q, %v; want %q, %q", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestConfine(t *testing.T) {
	obj := func(ns string) *object { return &object{ref: ObjectRef{Kind: "ConfigMap", Namespace: ns, Name: "x"}} }
	tenant := &Component{sa: "system:serviceaccount:team-a:d", targetNS: "team-a"}
	if err := confine(tenant, []*object{obj("team-a")}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*object{obj("team-b"), obj("")} {
		if err := confine(tenant, []*object{obj("team-a"), o}); err == nil || !strings.Contains(err.Error(), o.ref.String()) {
			t.Errorf("%s: %v", o.ref, err)
		}
	}
	// Ferry's own components and tenants without targetNamespace are left to RBAC.
	for _, c := range []*Component{{}, {sa: "system:serviceaccount:team-a:d"}} {
		if err := confine(c, []*object{obj(""), obj("team-b")}); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	scoped := &Component{scopes: []*bundles.Scope{{Namespaces: []string{"team-*"}}}}
	if err := confine(scoped, []*object{obj("team-b")}); err != nil {
		t.Fatal(err)
	}
	if err := confine(scoped, []*object{obj("kube-system")}); err == nil || !strings.Contains(err.Error(), "team-*") {
		t.Fatalf("scoped: %v", err)
	}
}
