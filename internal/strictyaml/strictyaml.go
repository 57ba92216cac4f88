// Package strictyaml decodes the YAML files users write (the daemon's config, a trust
// policy) with errors as ferry.yaml's: every problem at once, each as FILE:LINE: field.path:
// what is wrong, "did you mean" for a misspelt field, and no Go type names.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem of a file, at a line and field.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Field != "":
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.Field != "":
		return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Decode decodes the single YAML document b into v (a pointer to a struct). Unknown fields,
// anywhere, and values of the wrong type are all reported, joined; the root node is returned
// for later checks (Line, Has).
func Decode(file string, b []byte, v any) (*yaml.Node, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: file, Msg: "empty document"}
		}
		return nil, &Error{File: file, Line: lineIn(err.Error()), Msg: trimLine(err.Error())}
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, &Error{File: file, Line: more.Line, Msg: "more than one YAML document"}
	}
	var errs []error
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	unknown(file, doc, reflect.TypeOf(v).Elem(), "", &errs)
	paths := map[int]string{}
	index(doc, "", paths)
	if err := doc.Decode(v); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, append(errs, &Error{File: file, Msg: err.Error()})[0]
		}
		for _, m := range te.Errors {
			line := lineIn(m)
			errs = append(errs, &Error{File: file, Line: line, Field: paths[line], Msg: plain(trimLine(m))})
		}
	}
	return &root, errors.Join(errs...)
}

// unknown reports the mapping keys of n that t (a struct) has no field for, recursively.
func unknown(file string, n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.AliasNode:
		return
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			unknown(file, c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		return
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			unknown(file, n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), errs)
		}
		return
	case t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode:
		return
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return // decodes itself
	}
	fields, inlineMap := fieldsOf(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		f, ok := fields[key.Value]
		switch {
		case ok:
			unknown(file, val, f, join(path, key.Value), errs)
		case !inlineMap:
			msg := "unknown field"
			if s := suggest(key.Value, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			*errs = append(*errs, &Error{File: file, Line: key.Line, Field: join(path, key.Value), Msg: msg})
		}
	}
}

// fieldsOf maps the YAML names of t's fields (inline structs flattened) to their types, and
// says whether an inline map takes any other key.
func fieldsOf(t reflect.Type) (map[string]reflect.Type, bool) {
	out := map[string]reflect.Type{}
	inlineMap := false
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Map {
				inlineMap = true
				continue
			}
			sub, m := fieldsOf(ft)
			for k, v := range sub {
				out[k] = v
			}
			inlineMap = inlineMap || m
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out, inlineMap
}

// index records, for each line that holds a value, the field path of that value.
func index(n *yaml.Node, path string, out map[int]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			out[n.Content[i+1].Line] = p
			if _, ok := out[n.Content[i].Line]; !ok {
				out[n.Content[i].Line] = p
			}
			index(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if _, ok := out[c.Line]; !ok || c.Kind != yaml.MappingNode {
				out[c.Line] = p
			}
			index(c, p, out)
		}
	}
}

// Has reports whether the document sets the field at path (dotted, as Error.Field).
func Has(root *yaml.Node, path string) bool { return find(root, path) != nil }

// Line is the line of the field at path, 0 if the document does not set it.
func Line(root *yaml.Node, path string) int {
	if n := find(root, path); n != nil {
		return n.Line
	}
	return 0
}

func find(n *yaml.Node, path string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		if name != "" {
			if n.Kind != yaml.MappingNode {
				return nil
			}
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					next = n.Content[i+1]
				}
			}
			if next == nil {
				return nil
			}
			n = next
		}
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return nil
			}
			n = n.Content[idx]
		}
	}
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var lineRE = regexp.MustCompile(`line (\d+): `)

func lineIn(msg string) int {
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

func trimLine(msg string) string {
	msg = strings.TrimPrefix(msg, "yaml: ")
	if loc := lineRE.FindStringIndex(msg); loc != nil {
		return msg[:loc[0]] + msg[loc[1]:]
	}
	return msg
}

// plain rewrites yaml's type errors without Go type names: "cannot unmarshal !!str `x` into
// int" becomes "want a number, not `x`".
var typeErr = regexp.MustCompile("^cannot unmarshal !!(\\w+) `?([^`]*)`? into (.+)$")

func plain(msg string) string {
	m := typeErr.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	want := m[3]
	switch {
	case strings.HasPrefix(want, "int"), strings.HasPrefix(want, "uint"), strings.HasPrefix(want, "float"):
		want = "a number"
	case want == "bool":
		want = "true or false"
	case want == "string":
		want = "a string"
	case strings.HasPrefix(want, "[]"):
		want = "a list"
	case strings.HasPrefix(want, "map["), !strings.Contains(want, "."):
		want = "a mapping"
	default:
		want = "a mapping"
	}
	got := map[string]string{"str": "a string", "int": "a number", "bool": "a boolean", "seq": "a list", "map": "a mapping", "float": "a number"}[m[1]]
	if got == "" {
		got = m[1]
	}
	if m[2] != "" && m[1] != "seq" && m[1] != "map" {
		return fmt.Sprintf("want %s, not %s %q", want, got, m[2])
	}
	return fmt.Sprintf("want %s, not %s", want, got)
}

// suggest is the known field closest to key, when it is close enough to be a typo.
func suggest(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(strings.ToLower(key), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" && bestD > len(key)/3+1 {
		return ""
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
