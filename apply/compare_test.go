package apply

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundles"
)

func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCovers(t *testing.T) {
	desired := `{"metadata":{"name":"a","labels":{"x":"1"}},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"c","image":"i:1","env":[]}]}}},"data":{}}`
	cases := []struct {
		name, live string
		want       bool
		path       string
	}{
		{"equal", desired, true, ""},
		{"others added fields, labels, list items, status", `{"metadata":{"name":"a","labels":{"x":"1","team":"ops"},"resourceVersion":"9"},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"sidecar"},{"name":"c","image":"i:1","imagePullPolicy":"IfNotPresent"}]}}},"status":{"ready":1}}`, true, ""},
		{"value changed", `{"metadata":{"name":"a","labels":{"x":"1"}},"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"c","image":"i:1"}]}}}}`, false, "/spec/replicas"},
		{"label removed", `{"metadata":{"name":"a"},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"c","image":"i:1"}]}}}}`, false, "/metadata/labels"},
		{"list item changed", `{"metadata":{"name":"a","labels":{"x":"1"}},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"c","image":"i:2"}]}}}}`, false, "/spec/template/spec/containers/0"},
		{"type changed", `{"metadata":{"name":"a","labels":{"x":"1"}},"spec":{"replicas":"2","template":{"spec":{"containers":[{"name":"c","image":"i:1"}]}}}}`, false, "/spec/replicas"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok, path := covers(obj(t, desired), obj(t, c.live))
			if ok != c.want || (!ok && path != c.path) {
				t.Fatalf("covers = %v at %q, want %v at %q", ok, path, c.want, c.path)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	u := &unstructured.Unstructured{Object: obj(t, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"n"},"data":{"k":"v","skip":"me"}}`)}
	o, err := newObject(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	live := func(rv, v string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: obj(t, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"n","resourceVersion":"`+rv+`"},"data":{"k":"`+v+`","skip":"other"}}`)}
	}
	rec := map[string]Entry{o.ref.key(): {ObjectRef: o.ref, Hash: o.hash, ResourceVersion: "5"}}
	ignoreSkip := &bundles.DriftDetection{Ignore: []bundles.IgnoreRule{{Paths: []string{"/data/skip"}}}}
	cases := []struct {
		name    string
		set     syncSet
		live    *unstructured.Unstructured
		apply   bool
		drifted bool
	}{
		{"new to Ferry", syncSet{}, live("5", "v"), true, false},
		{"unchanged, same version", syncSet{prev: rec}, live("5", "v"), false, false},
		{"version moved, Ferry's fields intact", syncSet{prev: rec, drift: ignoreSkip}, live("6", "v"), false, false},
		{"drifted, enabled", syncSet{prev: rec}, live("6", "x"), true, true},
		{"drifted, warn", syncSet{prev: rec, drift: &bundles.DriftDetection{Mode: DriftWarn}}, live("6", "x"), false, true},
		{"drifted, disabled", syncSet{prev: rec, drift: &bundles.DriftDetection{Mode: DriftDisabled}}, live("6", "x"), false, false},
		{"deleted by hand", syncSet{prev: rec}, nil, true, true},
		{"maybe sent before a crash", syncSet{prev: map[string]Entry{o.ref.key(): {ObjectRef: o.ref, Hash: o.hash}}}, live("5", "v"), true, false},
		{"changed in the bundle", syncSet{prev: map[string]Entry{o.ref.key(): {ObjectRef: o.ref, Hash: "old", ResourceVersion: "5"}}}, live("5", "v"), true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			apply, d := c.set.decide(o, c.live)
			if apply != c.apply || (d != nil) != c.drifted {
				t.Fatalf("apply %v drift %v, want %v %v", apply, d, c.apply, c.drifted)
			}
		})
	}
	// Without the ignore rule, the other manager's value of /data/skip is drift.
	if apply, d := (syncSet{prev: rec}).decide(o, live("6", "v")); !apply || d == nil || d.Path != "/data/skip" {
		t.Fatalf("ignore rule: apply %v drift %+v", apply, d)
	}
}

func TestSecretStringDataIsFolded(t *testing.T) {
	u := &unstructured.Unstructured{Object: obj(t, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"stringData":{"p":"pw"},"data":{"q":"cQ=="}}`)}
	o, err := newObject(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := o.obj.Object["data"].(map[string]any)
	if o.obj.Object["stringData"] != nil || data["p"] != "cHc=" || data["q"] != "cQ==" {
		t.Fatalf("%v", o.obj.Object)
	}
}

func TestRemovePointer(t *testing.T) {
	m := obj(t, `{"spec":{"replicas":2,"a/b":{"c~d":1},"list":[{"x":1},{"x":2}]}}`)
	for _, p := range []string{"/spec/replicas", "/spec/a~1b/c~0d", "/spec/list/0", "/spec/missing/deep", "/spec/list/9"} {
		if err := removePointer(m, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := removePointer(m, "spec"); err == nil {
		t.Fatal("a pointer without / was accepted")
	}
	b, _ := json.Marshal(m)
	if string(b) != `{"spec":{"a/b":{},"list":[null,{"x":2}]}}` {
		t.Fatalf("got %s", b)
	}
}

// A layer that cannot be read is named once, not "component app: component app: …".
func TestLayerErrorNamesTheComponentOnce(t *testing.T) {
	src := memory.New()
	m := &bundles.Metadata{SchemaVersion: bundles.SchemaVersion, Name: "x", Version: "1.0.0", Revision: 1,
		Created:    time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		Components: []bundles.Component{{Name: "app", Type: bundles.TypeKustomize, Kustomize: &bundles.KustomizeSpec{Path: "."}}}}
	desc, err := bundles.Pack(t.Context(), src, m, [][]byte{[]byte("not a gzip layer")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(t.Context(), src, desc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Env{}.build(t.Context(), src, b, 0)
	if err == nil || strings.Count(err.Error(), "component app") != 1 {
		t.Fatalf("err = %v, want the component named once", err)
	}
}
