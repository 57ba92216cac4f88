package apply

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Labels and annotations Ferry reads and writes on cluster objects.
const (
	// FieldManager is the server-side apply field manager of every write.
	FieldManager = "ferry"
	// LabelBundle and LabelComponent mark the objects Ferry applied; prune and the live
	// listing that lets unchanged objects be skipped only look at objects carrying them.
	LabelBundle    = "ferry.dev/bundle"
	LabelComponent = "ferry.dev/component"
	// PruneAnnotation set to "disabled" keeps an object when it leaves the bundle; Flux's
	// FluxPruneAnnotation is honoured the same way.
	PruneAnnotation     = "ferry.dev/prune"
	FluxPruneAnnotation = "kustomize.toolkit.fluxcd.io/prune"
)

// ObjectRef names one object. Version is kept to address it; it is not part of its identity.
type ObjectRef struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func refOf(u *unstructured.Unstructured) ObjectRef {
	gvk := u.GroupVersionKind()
	return ObjectRef{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: u.GetNamespace(), Name: u.GetName()}
}

// GVK returns the group, version and kind.
func (r ObjectRef) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind}
}

// String names the object the way kubectl does: Deployment.apps web/api, Namespace web.
func (r ObjectRef) String() string {
	s := r.Kind
	if r.Group != "" {
		s += "." + r.Group
	}
	s += " "
	if r.Namespace != "" {
		s += r.Namespace + "/"
	}
	return s + r.Name
}

// key is the object's identity: the same object under two API versions is one object.
func (r ObjectRef) key() string {
	return r.Group + "/" + r.Kind + "/" + r.Namespace + "/" + r.Name
}

// stage orders applies: definitions every other object may need go first (Flux applies
// CRDs, Namespaces and cluster-wide classes and RBAC before the rest).
func (r ObjectRef) stage() int {
	switch r.Group + "/" + r.Kind {
	case "apiextensions.k8s.io/CustomResourceDefinition", "/Namespace",
		"rbac.authorization.k8s.io/ClusterRole", "rbac.authorization.k8s.io/ClusterRoleBinding",
		"storage.k8s.io/StorageClass", "scheduling.k8s.io/PriorityClass",
		"node.k8s.io/RuntimeClass", "networking.k8s.io/IngressClass":
		return 0
	}
	return 1
}

// object is one object Ferry wants in the cluster, normalised, with the hash of what is sent.
type object struct {
	ref  ObjectRef
	obj  *unstructured.Unstructured
	hash string
	key  []byte // keys the hash when the node decrypts (a hash of a Secret must not be guessable)
}

// newObject normalises u (Secrets' stringData folded into data, as the API server would, so
// the live object can be compared with what was sent) and hashes it, keyed with key when
// set (see decrypt.Keys.HashKey).
func newObject(u *unstructured.Unstructured, key []byte) (*object, error) {
	if u.GetAPIVersion() == "v1" && u.GetKind() == "Secret" {
		if err := foldStringData(u.Object); err != nil {
			return nil, fmt.Errorf("%s: %w", refOf(u), err)
		}
	}
	o := &object{ref: refOf(u), obj: u, key: key}
	return o, o.rehash()
}

// rehash records the hash of what will be sent; call it after any change to the object.
func (o *object) rehash() error {
	b, err := json.Marshal(o.obj.Object) // map keys are sorted: the encoding is canonical
	if err != nil {
		return fmt.Errorf("%s: %w", o.ref, err)
	}
	if o.key != nil {
		mac := hmac.New(sha256.New, o.key)
		mac.Write(b)
		o.hash = hex.EncodeToString(mac.Sum(nil)[:16])
		return nil
	}
	sum := sha256.Sum256(b)
	o.hash = hex.EncodeToString(sum[:16])
	return nil
}

func foldStringData(m map[string]any) error {
	sd, ok := m["stringData"].(map[string]any)
	if !ok {
		return nil
	}
	data, _ := m["data"].(map[string]any)
	if data == nil {
		data = map[string]any{}
	}
	for k, v := range sd {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("stringData.%s is not a string", k)
		}
		data[k] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	m["data"] = data
	delete(m, "stringData")
	return nil
}

// pruneDisabled reports whether an object asks to be kept when it leaves the bundle.
func pruneDisabled(u *unstructured.Unstructured) bool {
	a := u.GetAnnotations()
	return strings.EqualFold(a[PruneAnnotation], "disabled") || strings.EqualFold(a[FluxPruneAnnotation], "disabled")
}
