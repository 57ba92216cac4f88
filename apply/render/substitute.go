package render

import (
	"fmt"
	"regexp"

	"github.com/fluxcd/pkg/envsubst"
	"sigs.k8s.io/kustomize/kyaml/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// SubstituteAnnotation turns substitution off for one object when set to "disabled" (Flux).
const SubstituteAnnotation = "kustomize.toolkit.fluxcd.io/substitute"

// varName is what Flux accepts as a variable name.
var varName = regexp.MustCompile(`^[_[:alpha:]][_[:alpha:][:digit:]]*$`)

// Substitute replaces ${VAR} and ${VAR:=default} in every object of nodes with vars, as
// Flux's postBuild does, skipping objects annotated kustomize.toolkit.fluxcd.io/substitute:
// disabled, and returns the objects substituted (nodes itself is not changed). In strict mode
// a variable that is unset and has no default is an error naming the object; otherwise it
// becomes empty. Variable values never appear in errors.
func Substitute(nodes []*yaml.RNode, vars map[string]string, strict bool) ([]*yaml.RNode, error) {
	for k := range vars {
		if !varName.MatchString(k) {
			return nil, fmt.Errorf("substitute: %q is not a valid variable name", k)
		}
	}
	out := make([]*yaml.RNode, len(nodes))
	for i, n := range nodes {
		if n.GetAnnotations()[SubstituteAnnotation] == "disabled" {
			out[i] = n
			continue
		}
		s, err := substituteOne(n, vars, strict)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// substituteOne substitutes in the object's YAML as kustomize prints it (through JSON, as
// Flux's kustomize-controller does with Resource.AsYAML), so a value lands in the same text.
func substituteOne(n *yaml.RNode, vars map[string]string, strict bool) (*yaml.RNode, error) {
	id := n.GetKind() + " " + n.GetNamespace() + "/" + n.GetName()
	j, err := n.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	in, err := sigsyaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	// envsubst itself refuses a variable the mapping does not know and that has no default;
	// outside strict mode every unknown variable is simply empty.
	out, err := envsubst.Eval(string(in), func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok || !strict
	})
	if err != nil {
		return nil, fmt.Errorf("%s: substitute: %w", id, err)
	}
	node, err := yaml.Parse(out)
	if err != nil {
		return nil, fmt.Errorf("%s: after substitution the object is not valid YAML: %w", id, err)
	}
	return node, nil
}
