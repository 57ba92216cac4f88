package render

import (
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

var chartFiles = []string{
	"chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.3.0\n",
	"chart/values.yaml", "replicas: 1\nimage: web:1\ncolor: blue\n",
	"chart/templates/_helpers.tpl", "{{- define \"web.name\" -}}{{ .Release.Name }}-web{{- end -}}\n",
	"chart/templates/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ include \"web.name\" . }}\n  namespace: {{ .Release.Namespace }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web, color: {{ .Values.color }}}}\n    spec: {containers: [{name: web, image: {{ .Values.image }}}]}\n",
	"chart/templates/NOTES.txt", "Thanks for installing.\n",
	"chart/crds/widgets.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n",
	"values/00-site.yaml", "replicas: 2\ncolor: green\n",
}

func TestHelmRendersWithFluxValueOrder(t *testing.T) {
	spec := bundles.HelmSpec{Chart: "chart", TargetNamespace: "edge", ValuesFiles: []string{"values/00-site.yaml"},
		Values: map[string]any{"replicas": 3}}
	rm, err := Helm(files(chartFiles...), "web", spec)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := rm.AsYaml()
	s := string(out)
	// chart default < valuesFiles < inline values
	for _, want := range []string{"replicas: 3", "color: green", "image: web:1", "name: edge-web-web", "namespace: edge", "kind: CustomResourceDefinition"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "Thanks for installing") {
		t.Error("NOTES.txt rendered as an object")
	}
	if rm.Size() != 2 {
		t.Fatalf("got %d objects, want the CRD and the Deployment", rm.Size())
	}
	if strings.Index(s, "CustomResourceDefinition") > strings.Index(s, "kind: Deployment") {
		t.Error("CRDs must come first")
	}
}

func TestHelmRefusals(t *testing.T) {
	tests := []struct {
		name  string
		files bundles.Files
		spec  bundles.HelmSpec
		want  string
	}{
		{"no chart", files("values/a.yaml", "x: 1\n"), bundles.HelmSpec{Chart: "chart"}, "no chart"},
		{"bad template", files("chart/Chart.yaml", "apiVersion: v2\nname: x\nversion: 1.0.0\n", "chart/templates/a.yaml", "{{ .Values.x.y.z }"), bundles.HelmSpec{Chart: "chart"}, "helm template"},
		{"missing values file", files(chartFiles...), bundles.HelmSpec{Chart: "chart", ValuesFiles: []string{"values/nope.yaml"}}, "values/nope.yaml"},
		{"template fails", files("chart/Chart.yaml", "apiVersion: v2\nname: x\nversion: 1.0.0\n", "chart/templates/a.yaml", "{{ fail \"site id required\" }}"), bundles.HelmSpec{Chart: "chart"}, "site id required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Helm(tt.files, "x", tt.spec); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
