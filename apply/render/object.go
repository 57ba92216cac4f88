package render

import (
	"math"
	"strconv"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// Unstructured returns n as client-go's unstructured object: what decoding n.MarshalJSON()
// into one gives (strings, bool, int64, float64, nil, []any and map[string]any; a float with
// an integral value becomes int64, as it does after a trip through JSON), without printing
// YAML and JSON in between. The round trip allocates
// ~100 KiB per object of a typical Deployment and dominated applying thousands of objects.
//
// Only what the direct walk provably does alike is walked: plain strings, booleans, integers,
// floats and nulls in mappings with string keys and sequences. Anything else (anchors and
// aliases, merge keys, timestamps, binary, custom tags, duplicate keys, folded scalars and
// control characters, which YAML printing may change, NaN and infinities) takes the round trip itself, so the result is
// always the round trip's, error included; FuzzObject holds the two paths together.
func Unstructured(n *yaml.RNode) (*unstructured.Unstructured, error) {
	if y := n.YNode(); y != nil && y.Kind == yaml.MappingNode {
		if m, ok := direct(y, false).(map[string]any); ok {
			if u := (&unstructured.Unstructured{Object: m}); u.GetKind() != "" {
				return u, nil
			} // the decoder refuses an object without a kind, and says so
		}
	}
	return roundTrip(n)
}

// roundTrip is what direct must agree with.
func roundTrip(n *yaml.RNode) (*unstructured.Unstructured, error) {
	b, err := n.MarshalJSON()
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return u, nil
}

// indirect marks a node the direct walk leaves to the round trip.
type indirect struct{}

// direct converts y, or returns indirect{} anywhere below it when it cannot be sure to agree
// with the round trip. flow is true inside a flow collection ({…} or […]).
func direct(y *yaml.Node, flow bool) any {
	if y.Anchor != "" {
		return indirect{}
	}
	flow = flow || y.Style&yaml.FlowStyle != 0
	switch y.Kind {
	case yaml.MappingNode:
		if y.Tag != "" && y.Tag != "!!map" || len(y.Content)%2 != 0 {
			return indirect{}
		}
		m := make(map[string]any, len(y.Content)/2)
		for i := 0; i < len(y.Content); i += 2 {
			k, v := y.Content[i], y.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Anchor != "" || k.ShortTag() != "!!str" || !plainText(k.Value) {
				return indirect{} // merge keys (<<) resolve to !!merge
			}
			if _, dup := m[k.Value]; dup {
				return indirect{}
			}
			c := direct(v, flow)
			if _, ok := c.(indirect); ok {
				return c
			}
			m[k.Value] = c
		}
		return m
	case yaml.SequenceNode:
		if y.Tag != "" && y.Tag != "!!seq" {
			return indirect{}
		}
		s := make([]any, len(y.Content))
		for i, e := range y.Content {
			c := direct(e, flow)
			if _, ok := c.(indirect); ok {
				return c
			}
			s[i] = c
		}
		return s
	case yaml.ScalarNode:
		return scalar(y, flow)
	}
	return indirect{}
}

// scalar converts a string, or a scalar whose tag is the one its text resolves to untagged.
func scalar(y *yaml.Node, flow bool) any {
	tag := y.ShortTag()
	if tag == "!!str" {
		// yaml.v3 prints some folded scalars back with a line break more.
		if y.Style&yaml.FoldedStyle != 0 || !plainText(y.Value) {
			return indirect{}
		}
		return y.Value
	}
	if y.Tag != "" && (y.Style&yaml.TaggedStyle != 0 || y.Tag != (&yaml.Node{Kind: yaml.ScalarNode, Value: y.Value}).ShortTag()) {
		return indirect{}
	}
	switch tag {
	case "!!null":
		if y.Value == "" && flow {
			return indirect{} // printed as '' inside {…}
		}
		return nil
	case "!!bool":
		switch y.Value {
		case "true", "True", "TRUE":
			return true
		case "false", "False", "FALSE":
			return false
		}
	case "!!int":
		return integer(y.Value)
	case "!!float":
		return float(y.Value)
	}
	return indirect{}
}

// integer follows YAML 1.2's integer forms as yaml.v3 reads them (decimal, 0x, 0o, 0b,
// underscores) and JSON: an int64. Only the plain decimal forms are read here; the others, and
// integers beyond int64, are left to the round trip.
func integer(s string) any {
	if i, err := strconv.ParseInt(s, 0, 64); err == nil && plainInteger(s) {
		return i
	}
	return indirect{}
}

// plainInteger is true for the decimal forms both yaml.v3 and strconv read alike.
func plainInteger(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	if s == "" || len(s) > 1 && s[0] == '0' {
		return false // octal, hex and binary forms are left to the round trip
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// float reads a decimal float and gives what JSON gives back for it: int64 for an integral value
// (json prints 2.0 as 2), float64 otherwise.
func float(s string) any {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E', c == '-', c == '+':
		default:
			return indirect{} // .inf, .nan, underscores
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return indirect{}
	}
	if f != math.Trunc(f) {
		return f
	}
	if math.Abs(f) <= 1<<53 {
		return int64(f)
	}
	return indirect{} // JSON prints the shortest decimal, which is not f's exact value
}

// plainText is true for valid UTF-8 without the characters YAML printing may rewrite: control
// characters other than tab and newline, DEL, C1 controls, the Unicode line separators and
// the byte order mark.
func plainText(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || r >= 0x80 && r <= 0x9f || r == 0x2028 || r == 0x2029 || r == 0xfeff {
			return false
		}
		i += size
	}
	return true
}
