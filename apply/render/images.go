package render

import (
	"sort"

	"sigs.k8s.io/kustomize/api/resmap"
)

// Images returns the container images the objects in rm run, sorted and without duplicates:
// every `image` of a container, init container or ephemeral container list anywhere in an
// object (Pods, workload templates, CronJob job templates, and custom resources shaped alike).
func Images(rm resmap.ResMap) []string {
	seen := map[string]bool{}
	for _, res := range rm.Resources() {
		m, err := res.Map()
		if err != nil {
			continue
		}
		collectImages(m, seen, 0)
	}
	return sortedSet(seen)
}

// ImagesOf returns the images one object's containers, init and ephemeral containers run,
// sorted, each once.
func ImagesOf(obj map[string]any) []string {
	seen := map[string]bool{}
	collectImages(obj, seen, 0)
	return sortedSet(seen)
}

func sortedSet(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func collectImages(v any, seen map[string]bool, depth int) {
	if depth > 64 {
		return
	}
	switch t := v.(type) {
	case map[string]any:
		for k, child := range t {
			if k == "containers" || k == "initContainers" || k == "ephemeralContainers" {
				if list, ok := child.([]any); ok {
					for _, c := range list {
						if cm, ok := c.(map[string]any); ok {
							if im, ok := cm["image"].(string); ok && im != "" {
								seen[im] = true
							}
						}
					}
				}
			}
			collectImages(child, seen, depth+1)
		}
	case []any:
		for _, child := range t {
			collectImages(child, seen, depth+1)
		}
	}
}
