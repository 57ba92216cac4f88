package render

import (
	"strings"
	"testing"

	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
)

func TestDiffMasksSecretsAndFindsChanges(t *testing.T) {
	secret := func(pw string) Object {
		n := mustNode(t, "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: web}\nstringData: {password: "+pw+"}\n")
		if err := maskSecret(n); err != nil {
			t.Fatal(err)
		}
		s, _ := n.String()
		return Object{Component: "web", ID: "Secret web/db", YAML: s}
	}
	cm := func(v string) Object {
		return Object{Component: "web", ID: "ConfigMap web/site", YAML: "kind: ConfigMap\ndata:\n  v: " + v + "\n"}
	}
	gone := Object{Component: "infra", ID: "Namespace old", YAML: "kind: Namespace\n"}
	changes := Diff([]Object{secret("hunter2"), cm("1"), gone}, []Object{secret("hunter3"), cm("1")})
	var got []string
	for _, c := range changes {
		got = append(got, c.Action+" "+c.ID)
		if strings.Contains(c.Diff, "hunter") {
			t.Fatalf("a secret value is visible in the diff:\n%s", c.Diff)
		}
	}
	if strings.Join(got, "; ") != "removed Namespace old; changed Secret web/db" {
		t.Fatalf("changes: %v", got)
	}
	if !strings.Contains(changes[1].Diff, "<hidden ") {
		t.Fatalf("changed secret shows no masked value:\n%s", changes[1].Diff)
	}
	if len(Diff([]Object{cm("1")}, []Object{cm("1")})) != 0 {
		t.Fatal("identical renders differ")
	}
}

func mustNode(t *testing.T, s string) *kyaml.RNode {
	t.Helper()
	n, err := kyaml.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
