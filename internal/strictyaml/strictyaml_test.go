package strictyaml

import (
	"strings"
	"testing"
)

type inner struct {
	Name  string `yaml:"name"`
	Count int    `yaml:"count"`
}

type doc struct {
	Title  string            `yaml:"title"`
	Items  []inner           `yaml:"items"`
	ByName map[string]inner  `yaml:"byName"`
	Labels map[string]string `yaml:"labels"`
	Flag   bool              `yaml:"flag"`
}

func TestDecodeReportsEveryProblemAtItsLine(t *testing.T) {
	src := `title: x
items:
  - name: a
    cuont: 2
  - name: b
    count: ten
byName:
  one: {name: c, nmae: d}
flag: maybe
tilte: y
`
	var d doc
	_, err := Decode("f.yaml", []byte(src), &d)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"f.yaml:4: items[0].cuont: unknown field (did you mean count?)",
		`f.yaml:6: items[1].count: want a number, not a string "ten"`,
		"f.yaml:8: byName.one.nmae: unknown field (did you mean name?)",
		`f.yaml:9: flag: want true or false, not a string "maybe"`,
		"f.yaml:10: tilte: unknown field (did you mean title?)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "strictyaml.") || strings.Contains(err.Error(), "!!") {
		t.Errorf("a Go type name or YAML tag in the message:\n%v", err)
	}
	// What decoded is kept: the caller can go on checking.
	if d.Title != "x" || len(d.Items) != 2 || d.Items[0].Name != "a" {
		t.Errorf("decoded %+v", d)
	}
}

func TestDecodeRefusesWhatIsNotOneDocument(t *testing.T) {
	for src, want := range map[string]string{
		"":                        "f.yaml: empty document",
		"title: a\n---\ntitle: b": "more than one YAML document",
		"title: [unclosed":        "f.yaml",
	} {
		var d doc
		if _, err := Decode("f.yaml", []byte(src), &d); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", src, err, want)
		}
	}
}

func TestHasAndLine(t *testing.T) {
	root, err := Decode("f.yaml", []byte("title: a\nitems:\n  - name: b\n    count: 0\n"), &doc{})
	if err != nil {
		t.Fatal(err)
	}
	if !Has(root, "items[0].count") || Line(root, "items[0].count") != 4 || Has(root, "flag") || Line(root, "items[3].name") != 0 {
		t.Fatal("Has/Line disagree with the document")
	}
}

func TestSuggestOnlyCloseNames(t *testing.T) {
	var d doc
	_, err := Decode("f.yaml", []byte("zzzzzz: 1\n"), &d)
	if err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Fatalf("err = %v, want no suggestion for a name close to none", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("title: x\nitems: [{name: a, count: 1}]\n"))
	f.Add([]byte("byName: {a: {nmae: 1}}\nflag: [1]\n"))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			return
		}
		var d doc
		root, err := Decode("f.yaml", b, &d)
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml") {
			t.Fatalf("error not naming the file: %v", err)
		}
		_ = root
	})
}
