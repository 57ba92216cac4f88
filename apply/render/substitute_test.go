package render

import (
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/kio"

	"github.com/ferrygitops/ferry/bundles"
)

// substituted runs Substitute over rm's objects and returns them as one YAML stream. The
// objects it was given must be left as they were: the engine substitutes its cached build.
func substituted(rm resmap.ResMap, vars map[string]string, strict bool) (string, error) {
	in := rm.ToRNodeSlice()
	before, _ := kio.StringAll(in)
	out, err := Substitute(in, vars, strict)
	if after, _ := kio.StringAll(in); after != before {
		panic("Substitute changed the objects it was given")
	}
	if err != nil {
		return "", err
	}
	y, err := AsYAML(out)
	return string(y), err
}

func TestSubstitute(t *testing.T) {
	rm, err := Kustomize(files(
		"deploy.yaml", strings.Replace(deploy, "replicas: 3", "replicas: ${REPLICAS}", 1),
		"cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {site: \"${SITE_ID}\", zone: \"${ZONE:=default-zone}\"}\n",
		"raw.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n  annotations: {kustomize.toolkit.fluxcd.io/substitute: disabled}\ndata: {script: \"echo ${HOME}\"}\n",
	), bundles.KustomizeSpec{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := substituted(rm, map[string]string{"REPLICAS": "2", "SITE_ID": "north-7"}, true)
	if err != nil {
		t.Fatal(err)
	}
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
		_, err = substituted(rm, map[string]string{"OTHER": "secret-value"}, true)
		return err
	}
	err := build()
	if err == nil || !strings.Contains(err.Error(), "SITE_ID") || !strings.Contains(err.Error(), "ConfigMap") {
		t.Fatalf("err = %v, want the unset variable and the object named", err)
	}
	if strings.Contains(err.Error(), "secret-value") {
		t.Fatal("a variable's value leaked into an error")
	}
	rm, _ := Kustomize(files("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\n"), bundles.KustomizeSpec{})
	if _, err := substituted(rm, map[string]string{"bad-name": "x"}, false); err == nil {
		t.Fatal("accepted an invalid variable name")
	}
}

func TestSubstituteLenientLeavesUnsetEmpty(t *testing.T) {
	rm, err := Kustomize(files("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {site: \"x${SITE_ID}y\"}\n"), bundles.KustomizeSpec{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := substituted(rm, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "site: xy") {
		t.Fatalf("output:\n%s", out)
	}
}
