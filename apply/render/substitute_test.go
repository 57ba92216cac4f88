package render

import (
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

func TestSubstitute(t *testing.T) {
	rm, err := Kustomize(files(
		"deploy.yaml", strings.Replace(deploy, "replicas: 3", "replicas: ${REPLICAS}", 1),
		"cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {site: \"${SITE_ID}\", zone: \"${ZONE:=default-zone}\"}\n",
		"raw.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n  annotations: {kustomize.toolkit.fluxcd.io/substitute: disabled}\ndata: {script: \"echo ${HOME}\"}\n",
	), bundles.KustomizeSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Substitute(rm, map[string]string{"REPLICAS": "2", "SITE_ID": "north-7"}, true); err != nil {
		t.Fatal(err)
	}
	out, _ := rm.AsYaml()
	for _, want := range []string{"replicas: 2", "site: north-7", "zone: default-zone", "script: echo ${HOME}"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestSubstituteStrict(t *testing.T) {
	build := func() error {
		rm, err := Kustomize(files("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {site: \"${SITE_ID}\"}\n"), bundles.KustomizeSpec{})
		if err != nil {
			t.Fatal(err)
		}
		return Substitute(rm, map[string]string{"OTHER": "secret-value"}, true)
	}
	err := build()
	if err == nil || !strings.Contains(err.Error(), "SITE_ID") || !strings.Contains(err.Error(), "ConfigMap") {
		t.Fatalf("err = %v, want the unset variable and the object named", err)
	}
	if strings.Contains(err.Error(), "secret-value") {
		t.Fatal("a variable's value leaked into an error")
	}
	rm, _ := Kustomize(files("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\n"), bundles.KustomizeSpec{})
	if err := Substitute(rm, map[string]string{"bad-name": "x"}, false); err == nil {
		t.Fatal("accepted an invalid variable name")
	}
}

func TestSubstituteLenientLeavesUnsetEmpty(t *testing.T) {
	rm, err := Kustomize(files("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {site: \"x${SITE_ID}y\"}\n"), bundles.KustomizeSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Substitute(rm, nil, false); err != nil {
		t.Fatal(err)
	}
	if out, _ := rm.AsYaml(); !strings.Contains(string(out), "site: xy") {
		t.Fatalf("output:\n%s", out)
	}
}
