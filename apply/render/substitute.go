package render

import (
	"fmt"
	"regexp"

	"github.com/fluxcd/pkg/envsubst"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/api/resource"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// SubstituteAnnotation turns substitution off for one object when set to "disabled" (Flux).
const SubstituteAnnotation = "kustomize.toolkit.fluxcd.io/substitute"

// varName is what Flux accepts as a variable name.
var varName = regexp.MustCompile(`^[_[:alpha:]][_[:alpha:][:digit:]]*$`)

// Substitute replaces ${VAR} and ${VAR:=default} in every object of rm with vars, as Flux's
// postBuild does, skipping objects annotated kustomize.toolkit.fluxcd.io/substitute: disabled.
// In strict mode a variable that is unset and has no default is an error naming the object;
// otherwise it becomes empty. Variable values never appear in errors.
func Substitute(rm resmap.ResMap, vars map[string]string, strict bool) error {
	for k := range vars {
		if !varName.MatchString(k) {
			return fmt.Errorf("substitute: %q is not a valid variable name", k)
		}
	}
	for _, res := range rm.Resources() {
		if res.GetAnnotations()[SubstituteAnnotation] == "disabled" {
			continue
		}
		if err := substituteOne(res, vars, strict); err != nil {
			return err
		}
	}
	return nil
}

func substituteOne(res *resource.Resource, vars map[string]string, strict bool) error {
	id := res.CurId().String()
	in, err := res.AsYAML()
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	// envsubst itself refuses a variable the mapping does not know and that has no default;
	// outside strict mode every unknown variable is simply empty.
	out, err := envsubst.Eval(string(in), func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok || !strict
	})
	if err != nil {
		return fmt.Errorf("%s: substitute: %w", id, err)
	}
	node, err := yaml.Parse(out)
	if err != nil {
		return fmt.Errorf("%s: after substitution the object is not valid YAML: %w", id, err)
	}
	res.RNode = *node
	return nil
}
