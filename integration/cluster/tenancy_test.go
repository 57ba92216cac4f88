package cluster

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

var (
	serviceAccounts = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
	roleBindings    = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}
	clusterRoles    = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}
)

const tenant = "system:serviceaccount:team-a:deployer"

// tenants sets up what a platform team gives an application team: namespace team-a with a
// service account deployer bound to the built-in admin role there, and namespace team-b
// (another team's) with an object of its own.
func tenants(t *testing.T, n *node) {
	t.Helper()
	if n.get(t, namespaces, "", "team-a") != nil {
		return
	}
	n.createNamespace(t, "team-a")
	n.createNamespace(t, "team-b")
	n.createObject(t, serviceAccounts, "team-a", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "deployer"}})
	n.createObject(t, roleBindings, "team-a", map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "deployer-admin"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "deployer", "namespace": "team-a"}}})
	// team-b lets team-a read (view), not write: the API server answers reads, and refuses
	// the tenant's apply itself.
	n.createObject(t, roleBindings, "team-b", map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "team-a-views"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "deployer", "namespace": "team-a"}}})
	n.createObject(t, configMaps, "team-b", map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "theirs"},
		"data": map[string]any{"value": "team-b's"}})
}

const crb = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: team-a-takes-over}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: deployer, namespace: team-a}]
`

// TestTenantForbiddenByTheAPIServer: a component that runs as a tenant's service account
// (named on the component, or the node's default) and holds an object in another team's
// namespace, or a ClusterRoleBinding, fails with the API server's Forbidden: the server's
// RBAC (Node,RBAC, as k3s runs it) decides, and nothing of the component is written — the
// tenant's own ConfigMap is not created, the other team's object is untouched. Where the
// tenant may read but not write (team-b), it is the server-side dry run of the apply that
// is refused, before the first real write.
func TestTenantForbiddenByTheAPIServer(t *testing.T) {
	for _, tc := range []struct {
		name, comp, other, verb string
		opts                    apply.Options
	}{
		{"other namespace", "- name: app\n  kustomize: {path: ./app, serviceAccountName: deployer}\n", cm("team-b", "theirs", "team-a's now"), "cannot patch", apply.Options{}},
		{"cluster binding", "- name: app\n  kustomize: {path: ./app, serviceAccountName: deployer}\n", crb, "cannot list", apply.Options{}},
		{"default service account", "- name: app\n  kustomize: {path: ./app}\n", crb, "cannot list", apply.Options{DefaultServiceAccount: "deployer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Namespace = "team-a" // the component's namespace, without targetNamespace
			n := newNode(t, "tenant-"+strings.ReplaceAll(tc.name, " ", "-"), tc.opts)
			tenants(t, n)
			ctx := ctxTimeout(t, time.Minute)
			n.admit(t, 1, tc.comp, map[string]string{"app/mine.yaml": cm("team-a", "mine-"+n.bundle, "v1"), "app/other.yaml": tc.other})
			_, err := n.eng.Rollout(ctx, n.bundle, 1)
			if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), tenant) || !strings.Contains(err.Error(), tc.verb) {
				t.Fatalf("want the API server's Forbidden for %s, got %v", tenant, err)
			}
			t.Logf("refused: %v", err)
			if n.get(t, configMaps, "team-a", "mine-"+n.bundle) != nil {
				t.Fatal("the tenant's own object was written although the component was refused")
			}
			if got := settings(t, n, "team-b", "theirs"); got["value"] != "team-b's" {
				t.Fatalf("the other team's object changed: %v", got)
			}
			if n.get(t, schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, "", "team-a-takes-over") != nil {
				t.Fatal("the tenant created a ClusterRoleBinding")
			}
			if n.state(t, 1) != store.StateFailed {
				t.Fatalf("revision state %s", n.state(t, 1))
			}
		})
	}
}

// TestTenantTargetNamespaceConfines: with targetNamespace set, a tenant component's
// cluster-scoped objects are refused by Ferry before anything is sent, each named; the
// platform's component (no service account) in the same bundle may create them.
func TestTenantTargetNamespaceConfines(t *testing.T) {
	n := newNode(t, "confine", apply.Options{})
	tenants(t, n)
	ctx := ctxTimeout(t, time.Minute)
	n.admit(t, 1, "- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, serviceAccountName: deployer}\n",
		map[string]string{"app/kustomization.yaml": "resources: [mine.yaml, crb.yaml]\n", "app/mine.yaml": cm("x", "confined", "v1"), "app/crb.yaml": crb})
	n.reqs.reset()
	_, err := n.eng.Rollout(ctx, "confine", 1)
	if err == nil || !strings.Contains(err.Error(), "ClusterRoleBinding.rbac.authorization.k8s.io team-a-takes-over") || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("want Ferry's refusal naming the ClusterRoleBinding, got %v", err)
	}
	if _, writes, log := n.reqs.reset(); writes != 0 {
		t.Fatalf("%d writes before the refusal: %v", writes, log)
	}
	// The platform's component runs as Ferry and creates cluster-scoped objects.
	n.admit(t, 2, "- name: platform\n  kustomize: {path: ./platform}\n- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, serviceAccountName: deployer}\n",
		map[string]string{"platform/role.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: platform-reader}\nrules: []\n",
			"app/mine.yaml": cm("x", "confined", "v1")})
	if _, err := n.eng.Rollout(ctx, "confine", 2); err != nil {
		t.Fatal(err)
	}
	if n.get(t, clusterRoles, "", "platform-reader") == nil || n.get(t, configMaps, "team-a", "confined") == nil {
		t.Fatal("the platform's ClusterRole or the tenant's ConfigMap is missing")
	}
	if w := n.reqs.writersSince(); w[tenant] == 0 {
		t.Fatalf("no write impersonated the tenant: %v", w)
	}
}

// TestTenantRollbackRunsAsTenant: a tenant's revision that fails its health check is rolled
// back, and every write of the rollout and of the rollback — apply, prune — impersonates
// the tenant; a tenant's Helm release is installed as the tenant too (its storage Secrets
// in the tenant's namespace).
func TestTenantRollbackRunsAsTenant(t *testing.T) {
	n := newNode(t, "tenant-rb", apply.Options{})
	tenants(t, n)
	ctx := ctxTimeout(t, 3*time.Minute)
	comp := "- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, serviceAccountName: deployer, prune: true, wait: true, timeout: 10s}\n" +
		"- name: web\n  helm: {chart: ./charts/app, targetNamespace: team-a, serviceAccountName: deployer, timeout: 30s}\n"
	files := chart("1.0.0")
	files["app/d.yaml"] = deployment("team-a", "tenant-web", false)
	n.reqs.reset()
	n.admit(t, 1, comp, files)
	if _, err := n.eng.Rollout(ctx, "tenant-rb", 1); err != nil {
		t.Fatal(err)
	}
	if h := helmHistory(t, "team-a", "team-a-web"); statuses(h) != "1:deployed" {
		t.Fatalf("tenant release: %s", statuses(h))
	}
	files["app/d.yaml"] = deployment("team-a", "tenant-web", true)
	files["app/added.yaml"] = cm("team-a", "added", "v2")
	n.admit(t, 2, comp, files)
	if _, err := n.eng.Rollout(ctx, "tenant-rb", 2); !errors.Is(err, rollout.ErrRolledBack) {
		t.Fatalf("want a rollback, got %v", err)
	}
	if n.get(t, configMaps, "team-a", "added") != nil {
		t.Fatal("the object the failed revision added survived the rollback")
	}
	w := n.reqs.writersSince()
	if len(w) != 1 || w[tenant] == 0 {
		t.Fatalf("writes not all as the tenant: %v", w)
	}
	t.Logf("writes by identity: %v", w)
}

// TestNoCrossNamespaceRefs: with the node's noCrossNamespaceRefs, substituteFrom,
// valuesFrom, healthChecks and dependsOn reaching another namespace are refused before
// anything is sent.
func TestNoCrossNamespaceRefs(t *testing.T) {
	n := newNode(t, "xns", apply.Options{Env: apply.Env{NoCrossNamespaceRefs: true}})
	tenants(t, n)
	ctx := ctxTimeout(t, time.Minute)
	for i, comp := range []string{
		"- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, postBuild: {substituteFrom: [{kind: ConfigMap, name: theirs, namespace: team-b}]}}\n",
		"- name: web\n  helm: {chart: ./charts/app, targetNamespace: team-a, valuesFrom: [{kind: ConfigMap, name: theirs, namespace: team-b, valuesKey: value, targetPath: settings.stolen}]}\n",
		"- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, healthChecks: [{apiVersion: v1, kind: ConfigMap, name: theirs, namespace: team-b}]}\n",
		"- name: app\n  kustomize: {path: ./app, targetNamespace: team-a}\n- name: other\n  kustomize: {path: ./app, targetNamespace: team-b, dependsOn: [{name: app}]}\n",
		// Flux compares the namespaces the Kustomizations live in, not where they apply (and
		// a reference to another namespace names it; without it, the build refuses).
		"- name: app\n  kustomize: {path: ./app, namespace: team-a, targetNamespace: team-a}\n- name: other\n  kustomize: {path: ./app, namespace: team-b, targetNamespace: team-a, dependsOn: [{name: app, namespace: team-a}]}\n",
	} {
		files := chart("1.0.0")
		files["app/mine.yaml"] = cm("team-a", "xns", "${value}")
		n.reqs.reset()
		n.admit(t, uint64(i+1), comp, files)
		_, err := n.eng.Rollout(ctx, "xns", uint64(i+1))
		if err == nil || !(strings.Contains(err.Error(), `names namespace "team-b"`) || strings.Contains(err.Error(), "depends on app in namespace team-a")) {
			t.Fatalf("component %d: want a refusal of the cross-namespace reference, got %v", i, err)
		}
		if _, writes, log := n.reqs.reset(); writes != 0 {
			t.Fatalf("%d writes before the refusal: %v", writes, log)
		}
	}
}

// TestSigningKeyScopes: a bundle signed by a key scoped to namespace team-a and service
// account deployer runs as deployer without naming it; a component of it that works in
// another namespace, names another service account, or holds a cluster-scoped object —
// in a kustomize component or rendered by a Helm chart — is refused before anything is
// sent.
func TestSigningKeyScopes(t *testing.T) {
	n := newNode(t, "scoped", apply.Options{})
	tenants(t, n)
	ctx := ctxTimeout(t, 2*time.Minute)
	sc := bundles.Scope{Bundles: []string{"scoped"}, Namespaces: []string{"team-a"}, ServiceAccount: "deployer"}
	n.reqs.reset()
	n.admitSigned(t, 1, "- name: app\n  kustomize: {path: ./app, targetNamespace: team-a}\n", map[string]string{"app/mine.yaml": cm("x", "scoped", "v1")}, sc)
	if _, err := n.eng.Rollout(ctx, "scoped", 1); err != nil {
		t.Fatal(err)
	}
	if w := n.reqs.writersSince(); len(w) != 1 || w[tenant] == 0 {
		t.Fatalf("the scoped bundle did not run as the key's service account: %v", w)
	}
	clusterRole := "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: scoped-escape}\nrules: []\n"
	files := chart("1.0.0")
	files["charts/app/templates/escape.yaml"] = clusterRole
	files["app/mine.yaml"] = cm("x", "scoped", "v2")
	for i, tc := range []struct{ comp, want string }{
		{"- name: app\n  kustomize: {path: ./app, targetNamespace: team-b}\n", "may only ship to namespaces team-a"},
		{"- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, serviceAccountName: admin}\n", "may only ship as service account deployer"},
		// The dry run of the install, as the key's service account, meets the API server's
		// Forbidden on the ClusterRole (or Ferry's confinement names it).
		{"- name: scoped-web\n  helm: {chart: ./charts/app, targetNamespace: team-a}\n", `"scoped-escape"`},
		{"- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, postBuild: {substituteFrom: [{kind: Secret, name: x, namespace: kube-system}]}}\n", "may only reach namespaces team-a"},
	} {
		rev := uint64(i + 2)
		n.reqs.reset()
		n.admitSigned(t, rev, tc.comp, files, sc)
		_, err := n.eng.Rollout(ctx, "scoped", rev)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("revision %d: want a refusal naming %q, got %v", rev, tc.want, err)
		}
		t.Logf("revision %d refused: %v", rev, err)
		// The refused revision rolls back to revision 1, which changes nothing.
		if _, writes, log := n.reqs.reset(); writes != 0 {
			t.Fatalf("revision %d: %d writes: %v", rev, writes, log)
		}
	}
	if n.get(t, clusterRoles, "", "scoped-escape") != nil {
		t.Fatal("the chart's ClusterRole was created")
	}
	// A key scoped to namespaces without a service account cannot ship a Helm component:
	// its templates would read the cluster (lookup) with Ferry's credentials.
	noSA := bundles.Scope{Namespaces: []string{"team-a"}}
	n.admitSigned(t, 10, "- name: scoped-web\n  helm: {chart: ./charts/app, targetNamespace: team-a}\n", chart("1.0.0"), noSA)
	if _, err := n.eng.Rollout(ctx, "scoped", 10); err == nil || !strings.Contains(err.Error(), "needs one") {
		t.Fatalf("a Helm component under a namespace-only scope: %v", err)
	}
	if got := settings(t, n, "team-a", "scoped"); got["value"] != "v1" {
		t.Fatalf("revision 1's object changed: %v", got)
	}

	// A chart that holds a cluster-scoped object only on upgrade passes an install-time check;
	// the dry run of the real upgrade, as the key's service account, refuses it.
	upg := chart("1.0.0")
	upg["charts/app/templates/later.yaml"] = "{{- if .Release.IsUpgrade }}\n" + clusterRole + "{{- end }}\n"
	comp := "- name: later\n  helm: {chart: ./charts/app, targetNamespace: team-a, timeout: 30s}\n"
	n.admitSigned(t, 11, comp, upg, sc)
	if _, err := n.eng.Rollout(ctx, "scoped", 11); err != nil {
		t.Fatal(err)
	}
	upg["charts/app/values.yaml"] = "settings: {color: green}\nfail: false\n"
	n.admitSigned(t, 12, comp, upg, sc)
	if _, err := n.eng.Rollout(ctx, "scoped", 12); err == nil || !strings.Contains(err.Error(), `"scoped-escape"`) {
		t.Fatalf("an upgrade-only ClusterRole: %v", err)
	}
	if n.get(t, clusterRoles, "", "scoped-escape") != nil {
		t.Fatal("the upgrade's ClusterRole was created")
	}
}

// TestTenantForceRecreates: force (delete and create an object whose immutable fields
// changed) works for a tenant too: the dry run does not stop what only a recreate can do.
func TestTenantForceRecreates(t *testing.T) {
	n := newNode(t, "tenant-force", apply.Options{})
	tenants(t, n)
	ctx := ctxTimeout(t, time.Minute)
	comp := "- name: app\n  kustomize: {path: ./app, targetNamespace: team-a, serviceAccountName: deployer, force: true}\n"
	frozen := func(v string) string { return cm("x", "frozen", v) + "immutable: true\n" }
	n.admit(t, 1, comp, map[string]string{"app/cm.yaml": frozen("v1")})
	if _, err := n.eng.Rollout(ctx, "tenant-force", 1); err != nil {
		t.Fatal(err)
	}
	n.admit(t, 2, comp, map[string]string{"app/cm.yaml": frozen("v2")})
	if _, err := n.eng.Rollout(ctx, "tenant-force", 2); err != nil {
		t.Fatal(err)
	}
	if got := settings(t, n, "team-a", "frozen"); got["value"] != "v2" {
		t.Fatalf("the immutable ConfigMap was not recreated: %v", got)
	}
}

// TestComponentLivesInItsNamespace: a component whose namespace is team-a (a Flux
// Kustomization living there, as --from-flux imports it) runs as team-a's service account on a
// node whose own namespace is default, reads substituteFrom and health checks without a
// namespace in team-a, and is refused, as team-a's account, where that account may not write.
func TestComponentLivesInItsNamespace(t *testing.T) {
	n := newNode(t, "lives-in", apply.Options{})
	tenants(t, n)
	n.createObject(t, configMaps, "team-a", map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "team-vars"},
		"data": map[string]any{"TEAM": "team-a's own vars"}})
	ctx := ctxTimeout(t, time.Minute)
	comp := "- name: app\n  kustomize:\n    path: ./app\n    namespace: team-a\n    serviceAccountName: deployer\n    wait: true\n" +
		"    postBuild: {substituteFrom: [{kind: ConfigMap, name: team-vars}]}\n    healthChecks: [{apiVersion: v1, kind: ConfigMap, name: team-vars}]\n"
	n.admit(t, 1, comp, map[string]string{"app/mine.yaml": cm("team-a", "lives-"+n.bundle, "${TEAM}")})
	if _, err := n.eng.Rollout(ctx, n.bundle, 1); err != nil {
		t.Fatalf("as system:serviceaccount:team-a:deployer the component may write in team-a: %v", err)
	}
	if got := settings(t, n, "team-a", "lives-"+n.bundle); got["value"] != "team-a's own vars" {
		t.Fatalf("substituteFrom was not read in team-a: %v", got)
	}
	// Revision 2 also writes into team-b: the API server refuses team-a's account.
	n.admit(t, 2, comp, map[string]string{"app/mine.yaml": cm("team-a", "lives-"+n.bundle, "${TEAM}"), "app/other.yaml": cm("team-b", "theirs", "team-a's now")})
	_, err := n.eng.Rollout(ctx, n.bundle, 2)
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), tenant) {
		t.Fatalf("want the API server's Forbidden for %s, got %v", tenant, err)
	}
}

// TestFluxTenantRunsAsItsServiceAccount: the Flux multi-tenancy shape built with --from-flux —
// a tenant Kustomization living in team-a with serviceAccountName deployer — is applied on the
// testbed's RBAC API server as system:serviceaccount:team-a:deployer: its own namespace is
// written, and a write into team-b is the server's Forbidden for that account.
func TestFluxTenantRunsAsItsServiceAccount(t *testing.T) {
	n := newNode(t, "flux-tenant", apply.Options{})
	tenants(t, n)
	ctx := ctxTimeout(t, 2*time.Minute)
	tree := func(extra string) map[string]string {
		return map[string]string{
			"clusters/production/flux-system/gotk-sync.yaml": "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: flux-system, namespace: flux-system}\nspec: {url: \"https://git.example.com/site.git\", ref: {branch: master}}\n",
			"clusters/production/team-a.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: team-a-apps, namespace: team-a}
spec:
  path: ./tenants/team-a
  prune: true
  serviceAccountName: deployer
  sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}
`,
			"tenants/team-a/kustomization.yaml": "resources: [shop.yaml" + extra + "]\n",
			"tenants/team-a/shop.yaml":          cm("team-a", "flux-shop", "v1"),
			"tenants/team-a/other.yaml":         cm("team-b", "theirs", "team-a's now"),
		}
	}
	for rev, extra := range []string{"", ", other.yaml"} {
		dir, _ := bundlertest.GitTree(t, tree(extra), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
		mem := memory.New()
		res, err := bundler.Build(ctx, mem, bundler.Options{Dir: dir, FromFlux: filepath.Join(dir, "clusters", "production"), Name: "flux-tenant", Version: "1.0." + itoa(uint64(rev+1)), Revision: uint64(rev + 1)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := bundles.Open(ctx, mem, res.Descriptor)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.st.Admit(ctx, mem, store.Admission{Name: "flux-tenant", Revision: uint64(rev + 1), Version: b.Metadata.Version, Manifest: res.Descriptor,
			Blobs: append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.eng.Rollout(ctx, "flux-tenant", 1); err != nil {
		t.Fatalf("as %s the tenant may write in team-a: %v", tenant, err)
	}
	if n.get(t, configMaps, "team-a", "flux-shop") == nil {
		t.Fatal("the tenant's ConfigMap was not created")
	}
	_, err := n.eng.Rollout(ctx, "flux-tenant", 2)
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), tenant) {
		t.Fatalf("want the API server's Forbidden for %s, got %v", tenant, err)
	}
	if got := settings(t, n, "team-b", "theirs"); got["value"] != "team-b's" {
		t.Fatalf("the other team's object changed: %v", got)
	}
}

// TestFluxMultiTenancyRepository: the shape of Flux's multi-tenancy example, built with
// --from-flux and applied on the testbed's RBAC API server with nothing set up beforehand. The
// platform's Kustomization "tenants" (run as Ferry, the platform admin) creates the tenant's
// namespace, service account and RoleBinding, and holds the tenant's GitRepository and
// Kustomization (run as system:serviceaccount:dev-team:dev-team, from the tenant's own
// repository, here a local copy named with --source-override). The tenant's component must come
// after the platform's, since its identity exists only then; a write outside its namespace is
// the API server's Forbidden for that identity.
func TestFluxMultiTenancyRepository(t *testing.T) {
	n := newNode(t, "fleet", apply.Options{})
	ctx := ctxTimeout(t, 3*time.Minute)
	if n.get(t, namespaces, "", "platform-only") == nil {
		n.createNamespace(t, "platform-only")
	}
	platform, _ := bundlertest.GitTree(t, map[string]string{
		"clusters/production/flux-system/gotk-sync.yaml": "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: flux-system, namespace: flux-system}\nspec: {url: \"https://git.example.com/site.git\", ref: {branch: master}}\n",
		"clusters/production/tenants.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: tenants, namespace: flux-system}
spec:
  path: ./tenants/production
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
`,
		"tenants/production/kustomization.yaml":    "resources: [../base/dev-team]\n",
		"tenants/base/dev-team/kustomization.yaml": "namespace: dev-team\nresources: [rbac.yaml, sync.yaml]\n",
		"tenants/base/dev-team/rbac.yaml": `apiVersion: v1
kind: Namespace
metadata: {name: dev-team, labels: {toolkit.fluxcd.io/tenant: dev-team}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: dev-team, namespace: dev-team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: gotk-reconciler, namespace: dev-team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: ServiceAccount, name: dev-team, namespace: dev-team}]
`,
		"tenants/base/dev-team/sync.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: dev-team, namespace: dev-team}
spec: {url: "https://git.example.com/dev-team.git", ref: {branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: dev-team, namespace: dev-team}
spec:
  serviceAccountName: dev-team
  path: ./
  prune: true
  sourceRef: {kind: GitRepository, name: dev-team}
`,
	}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	for rev, extra := range []string{"", ", outside.yaml"} {
		teamRepo := bundlertest.WriteTree(t, map[string]string{
			"kustomization.yaml": "resources: [app.yaml" + extra + "]\n",
			"app.yaml":           cm("dev-team", "dev-app", "v1"),
			"outside.yaml":       cm("platform-only", "dev-was-here", "no"),
		})
		mem := memory.New()
		res, err := bundler.Build(ctx, mem, bundler.Options{Dir: platform, FromFlux: filepath.Join(platform, "clusters", "production"),
			Name: "fleet", Version: "1.0." + itoa(uint64(rev+1)), Revision: uint64(rev + 1),
			SourceOverrides: map[string]string{"dev-team/dev-team": teamRepo}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := bundles.Open(ctx, mem, res.Descriptor)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.st.Admit(ctx, mem, store.Admission{Name: "fleet", Revision: uint64(rev + 1), Version: b.Metadata.Version, Manifest: res.Descriptor,
			Blobs: append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.eng.Rollout(ctx, "fleet", 1); err != nil {
		t.Fatalf("the platform creates the tenant's identity, then the tenant applies as it: %v", err)
	}
	if n.get(t, serviceAccounts, "dev-team", "dev-team") == nil || n.get(t, configMaps, "dev-team", "dev-app") == nil {
		t.Fatal("the tenant's service account or ConfigMap was not created")
	}
	_, err := n.eng.Rollout(ctx, "fleet", 2)
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "system:serviceaccount:dev-team:dev-team") {
		t.Fatalf("want the API server's Forbidden for the tenant, got %v", err)
	}
	if n.get(t, configMaps, "platform-only", "dev-was-here") != nil {
		t.Fatal("the tenant wrote outside its namespace")
	}
}
