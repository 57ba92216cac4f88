package render

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// sameAsRoundTrip fails t unless Unstructured(n) gives what the round trip through JSON gives,
// error for error.
func sameAsRoundTrip(t *testing.T, n *yaml.RNode) {
	t.Helper()
	want, wantErr := roundTrip(n)
	got, err := Unstructured(n)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v, the round trip's %v", err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got.Object, want.Object) {
		t.Fatalf("got  %#v\nwant %#v", got.Object, want.Object)
	}
}

// edges are documents where YAML's and JSON's readings differ most.
var edges = []string{
	"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {a: '1', b: \"true\", c: ~, d: null, e: ''}\n",
	"kind: X\nint: [0, -0, +5, 7, 007, 0x1F, 0o17, 0b101, 1_000, 9223372036854775807, 9223372036854775808, -9223372036854775808, 99999999999999999999]\n",
	"kind: X\nfloat: [1.0, 2.5, -0.0, 1e3, 1E-7, 1e21, 1e300, .5, 5., .inf, -.Inf, .nan, 9.223372036854775807e18, 1_0.5]\n",
	"kind: X\nbool: [true, True, TRUE, false, yes, no, on, off, y, n]\n",
	"kind: X\ntags: [!!str 1, !!int '2', !!float 3, !!bool true, !!null '', !!binary aGVsbG8=, !custom x, !!timestamp 2001-12-14]\n",
	"kind: X\ntime: [2001-12-14, 2001-12-14t21:59:43.10-05:00, '2001-12-14']\n",
	"kind: X\nbase: &b {a: 1}\nderived: {<<: *b, c: 2}\n",
	"kind: X\nkeys: {1: a, true: b, null: c, 1.5: d, '2': e}\n",
	"kind: X\ntext: [\"tab\\there\", \"line\\nbreak\", \"cr\\r\\n\", \"nul\\0\", \"bell\\a\", \"nel\\N\", \"ls\\L\", \"bom\\uFEFF\", \"é😀\", \"\\x7f\", \"trailing \", \" leading\"]\n",
	"kind: X\nblock: |\n  a\n  b\nfolded: >-\n  a\n  b\nkeep: |+\n  a\n\n",
	"kind: X\nempty: {map: {}, seq: [], str: '', nested: [[], [{}]]}\n",
	"kind: X\nhuge: 123456789012345678901234567890\nneg: -1e-400\n",
}

func TestUnstructuredAgreesWithTheRoundTrip(t *testing.T) {
	for _, doc := range edges {
		t.Run(strings.SplitN(doc, "\n", 3)[1], func(t *testing.T) {
			n, err := yaml.Parse(doc)
			if err != nil {
				t.Fatal(err)
			}
			sameAsRoundTrip(t, n)
		})
	}
}

// Kustomize builds nodes in code as well as by parsing: tags set without the style a parser
// would give them.
func TestUnstructuredAgreesOnNodesBuiltInCode(t *testing.T) {
	for _, s := range []struct{ tag, value string }{
		{"!!str", "123"}, {"!!str", "true"}, {"!!str", ""}, {"!!int", "abc"}, {"!!int", "12"},
		{"!!null", "abc"}, {"!!null", ""}, {"!!float", "1"}, {"!!bool", "yes"}, {"!!bool", "true"},
		{"", "12"}, {"", "x"}, {"!", "x"}, {"tag:yaml.org,2002:int", "3"},
	} {
		t.Run(s.tag+" "+s.value, func(t *testing.T) {
			n, err := yaml.Parse("kind: X\nmetadata: {name: a}\n")
			if err != nil {
				t.Fatal(err)
			}
			v := &yaml.Node{Kind: yaml.ScalarNode, Tag: s.tag, Value: s.value}
			if err := n.PipeE(yaml.SetField("v", yaml.NewRNode(v))); err != nil {
				t.Fatal(err)
			}
			sameAsRoundTrip(t, n)
		})
	}
}

// benchDeployment is an ordinary Deployment, as kustomize prints one.
const benchDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web, "app.kubernetes.io/version": "1.2"}
  annotations: {note: "multi\nline"}
spec:
  replicas: 3
  revisionHistoryLimit: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.local/web@sha256:0123
        args: ["--ratio", "0.75", --verbose]
        ports: [{containerPort: 8080, protocol: TCP}]
        resources: {limits: {cpu: 500m, memory: 128Mi}}
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2.0}
        env: [{name: EMPTY, value: ""}, {name: NULL}]
      securityContext: {runAsNonRoot: true, fsGroup: 1000}
`

// The point of Unstructured is to skip the round trip for ordinary objects.
func TestUnstructuredWalksOrdinaryObjectsDirectly(t *testing.T) {
	n, err := yaml.Parse(benchDeployment)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := direct(n.YNode(), false).(indirect); ok {
		t.Fatal("an ordinary Deployment took the round trip")
	}
	sameAsRoundTrip(t, n)
}

func FuzzUnstructured(f *testing.F) {
	for _, doc := range edges {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		if len(doc) > 1<<16 {
			return
		}
		n, err := yaml.Parse(doc)
		if err != nil || n.YNode() == nil || n.YNode().Kind != yaml.MappingNode {
			return
		}
		sameAsRoundTrip(t, n)
	})
}

// BenchmarkUnstructured compares the direct walk with the round trip it replaces, on the
// Deployment of TestUnstructuredWalksOrdinaryObjectsDirectly.
func BenchmarkUnstructured(b *testing.B) {
	n, err := yaml.Parse(benchDeployment)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    func(*yaml.RNode) (*unstructured.Unstructured, error)
	}{{"direct", Unstructured}, {"roundTrip", roundTrip}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.f(n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
