package bundles

import "testing"

func TestScopeAllows(t *testing.T) {
	s := &Scope{Bundles: []string{"team-a-*", "shared"}, Namespaces: []string{"team-a", "team-a-*"}}
	for _, tc := range []struct {
		bundle, ns string
		bOK, nsOK  bool
	}{
		{"team-a-web", "team-a", true, true},
		{"shared", "team-a-db", true, true},
		{"team-b", "team-b", false, false},
		{"team-a", "", false, false}, // "team-a-*" needs the dash; cluster-scoped is outside any namespace list
	} {
		if got := s.AllowsBundle(tc.bundle); got != tc.bOK {
			t.Errorf("AllowsBundle(%q) = %v", tc.bundle, got)
		}
		if got := s.AllowsNamespace(tc.ns); got != tc.nsOK {
			t.Errorf("AllowsNamespace(%q) = %v", tc.ns, got)
		}
	}
	var unscoped *Scope
	if !unscoped.AllowsBundle("x") || !unscoped.AllowsNamespace("") || !(&Scope{ServiceAccount: "sa"}).AllowsNamespace("") {
		t.Error("a scope without limits limits")
	}
}
