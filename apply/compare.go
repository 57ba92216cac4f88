package apply

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// covers reports whether the live object already holds every field Ferry sends with the
// value Ferry sends, and returns the first path that differs. Fields others added (status,
// defaults, labels of other managers, extra list items) are not differences: server-side
// apply would not touch them either. Empty maps and lists Ferry sends match absent ones.
//
// It is deliberately conservative where the API server normalises (quantities such as "0.5"
// vs "500m"): those read as different, which costs one apply the server answers as a no-op,
// after which the recorded resourceVersion matches and the object is skipped again.
func covers(desired, live any) (bool, string) {
	return coversAt(desired, live, "")
}

func coversAt(desired, live any, path string) (bool, string) {
	switch d := desired.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return isEmpty(d) && live == nil, path
		}
		for k, dv := range d {
			lv, ok := l[k]
			if !ok {
				if isEmpty(dv) {
					continue
				}
				return false, path + "/" + escapePointer(k)
			}
			if ok, p := coversAt(dv, lv, path+"/"+escapePointer(k)); !ok {
				return false, p
			}
		}
		return true, ""
	case []any:
		l, ok := live.([]any)
		if !ok {
			return len(d) == 0 && live == nil, path
		}
		// Each item Ferry sends must be found, in order, among the live items (others may
		// have added items: a webhook's sidecar, a finalizer).
		j := 0
		for i, dv := range d {
			for ; j < len(l); j++ {
				if ok, _ := coversAt(dv, l[j], ""); ok {
					break
				}
			}
			if j == len(l) {
				return false, path + "/" + strconv.Itoa(i)
			}
			j++
		}
		return true, ""
	case nil:
		return true, ""
	}
	if df, ok := number(desired); ok {
		lf, ok := number(live)
		return ok && df == lf, path
	}
	return reflect.DeepEqual(desired, live), path
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	case float64:
		return x, true
	case int32:
		return float64(x), true
	}
	return 0, false
}

func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// removePointer deletes the field a JSON pointer (RFC 6901) names from a copy-on-write of
// obj; a pointer that names nothing is not an error (the field may be optional).
func removePointer(obj map[string]any, pointer string) error {
	if pointer == "" || pointer[0] != '/' {
		return fmt.Errorf("ignore path %q is not a JSON pointer (it must start with /)", pointer)
	}
	parts := strings.Split(pointer[1:], "/")
	for i := range parts {
		parts[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(parts[i])
	}
	var cur any = obj
	for i, p := range parts {
		last := i == len(parts)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				delete(c, p)
				return nil
			}
			cur = c[p]
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n >= len(c) {
				return nil
			}
			if last {
				c[n] = nil // keeps positions of the items after it
				return nil
			}
			cur = c[n]
		default:
			return nil
		}
	}
	return nil
}
