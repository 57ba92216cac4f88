package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

var tb *Testbed

func TestMain(m *testing.M) { os.Exit(Main(m, Options{}, &tb)) }

func deployment(name string, labels map[string]string, progressDeadline int32) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	podLabels := map[string]string{"app": name}
	for k, v := range labels {
		podLabels[k] = v
	}
	replicas := int32(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas:                &replicas,
			ProgressDeadlineSeconds: &progressDeadline,
			Selector:                &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: "registry.local/app:1.0"}},
				},
			},
		},
	}
}

func createNamespace(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "smoke-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// waitFor polls cond every 200ms until it returns true or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func(context.Context) (bool, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	last := ""
	for {
		ok, state, err := cond(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		last = state
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached in %s; last state: %s", what, timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func condition(d *appsv1.Deployment, typ appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == typ {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func describe(d *appsv1.Deployment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "replicas=%d ready=%d available=%d", d.Status.Replicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas)
	for _, c := range d.Status.Conditions {
		fmt.Fprintf(&b, " %s=%s(%s)", c.Type, c.Status, c.Reason)
	}
	return b.String()
}

func TestDeploymentBecomesAvailable(t *testing.T) {
	cs := kubernetes.NewForConfigOrDie(tb.REST)
	ns := createNamespace(t, cs)
	d, err := cs.AppsV1().Deployments(ns).Create(t.Context(), deployment("web", nil, 60), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "deployment web available", func(ctx context.Context) (bool, string, error) {
		d, err = cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		c := condition(d, appsv1.DeploymentAvailable)
		return d.Status.ReadyReplicas == 2 && c != nil && c.Status == corev1.ConditionTrue, describe(d), nil
	})
	pods, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s: node %q phase %s; want scheduled on a kwok node and Running", p.Name, p.Spec.NodeName, p.Status.Phase)
		}
	}
}

func TestFailMarkedDeploymentNeverAvailable(t *testing.T) {
	cs := kubernetes.NewForConfigOrDie(tb.REST)
	ns := createNamespace(t, cs)
	// The shortest deadline the API accepts keeps the test quick; the deployment controller
	// then reports ProgressDeadlineExceeded.
	_, err := cs.AppsV1().Deployments(ns).Create(t.Context(), deployment("broken", map[string]string{FailLabel: "true"}, 3), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "deployment broken past its progress deadline", func(ctx context.Context) (bool, string, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "broken", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		if d.Status.ReadyReplicas != 0 || d.Status.AvailableReplicas != 0 {
			return false, "", fmt.Errorf("fail-marked pods became ready: %s", describe(d))
		}
		c := condition(d, appsv1.DeploymentProgressing)
		return c != nil && c.Reason == "ProgressDeadlineExceeded", describe(d), nil
	})
	pods, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=broken"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("got %d pods, want 2", len(pods.Items))
	}
	for _, p := range pods.Items {
		// Running but not Ready: what a pod with a failing readiness probe looks like.
		if p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s phase %s, want Running", p.Name, p.Status.Phase)
		}
	}
}

func TestRegistryPushPull(t *testing.T) {
	dir := t.TempDir()
	payload := []byte("ferry testbed artifact\n")
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), payload, 0o600); err != nil {
		t.Fatal(err)
	}
	ref := tb.Registry + "/smoke/hello:v1"
	oras := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), tb.Bin("oras"), args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("oras %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	oras("push", "--plain-http", "--artifact-type", "application/vnd.ferry.test", ref, "hello.txt:text/plain")
	out := t.TempDir()
	oras("pull", "--plain-http", "-o", out, ref)
	got, err := os.ReadFile(filepath.Join(out, "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("pulled %q, pushed %q", got, payload)
	}
	// A tag that was never pushed must not resolve: the registry really stores what it got.
	cmd := exec.CommandContext(t.Context(), tb.Bin("oras"), "resolve", "--plain-http", tb.Registry+"/smoke/hello:v2")
	if err := cmd.Run(); err == nil {
		t.Fatal("resolving a tag that was never pushed succeeded")
	}
}

func TestS3PutGet(t *testing.T) {
	c, err := tb.S3Client()
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("ferry"), 200_000) // 1 MB
	if _, err := c.PutObject(t.Context(), tb.S3.Bucket, "smoke/object", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, err := c.GetObject(t.Context(), tb.S3.Bucket, "smoke/object", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("got %d bytes back, want the %d put", len(got), len(body))
	}
	if _, err := c.StatObject(t.Context(), tb.S3.Bucket, "smoke/missing", minio.StatObjectOptions{}); err == nil {
		t.Fatal("stat of a missing object succeeded")
	}
	// Wrong credentials are refused: the server really checks signatures.
	bad, err := minio.New(hostOf(tb.S3.URL), &minio.Options{Creds: credentialsFor("nobody", "wrong"), Region: tb.S3.Region})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.StatObject(t.Context(), tb.S3.Bucket, "smoke/object", minio.StatObjectOptions{}); err == nil {
		t.Fatal("request with wrong credentials succeeded")
	}
}
