package testbed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kwokNodeAnnotation marks the nodes kwok manages.
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

func (tb *Testbed) startKube(ctx context.Context, nodes int, controllers, fsync bool) error {
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort, cmPort, schedPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	pk, err := newPKI(filepath.Join(tb.Dir, "pki"))
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}

	// etcd: fsync off unless asked, it is a test store that dies with the testbed.
	etcdURL := "http://" + hostPort(etcdClient)
	peerURL := "http://" + hostPort(etcdPeer)
	etcdArgs := []string{
		"--name=testbed",
		"--data-dir=" + filepath.Join(tb.Dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=testbed=" + peerURL,
		"--log-level=warn",
	}
	if !fsync {
		etcdArgs = append(etcdArgs, "--unsafe-no-fsync")
	}
	etcd, err := tb.run("etcd", etcdArgs)
	if err != nil {
		return err
	}
	if err := etcd.waitReady(ctx, httpOK(http.DefaultClient, etcdURL+"/health")); err != nil {
		return err
	}

	apiURL := "https://" + hostPort(apiPort)
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + pk.ServingCert, "--tls-private-key-file=" + pk.ServingKey,
		"--client-ca-file=" + pk.CACert,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + pk.SAPub,
		"--service-account-signing-key-file=" + pk.SAKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		// Node,RBAC as k3s runs it, so impersonation and tenancy tests see real authorization.
		"--authorization-mode=Node,RBAC",
		// 127.0.0.1 is not a valid endpoint for the kubernetes Service; nothing in the
		// testbed needs it.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(tb.Dir, "apiserver-certs"),
	}
	api, err := tb.run("kube-apiserver", apiArgs)
	if err != nil {
		return err
	}
	tb.Kubeconfig = filepath.Join(tb.Dir, "kubeconfig")
	if err := writeKubeconfig(tb.Kubeconfig, apiURL, pk); err != nil {
		return err
	}
	if tb.REST, err = clientcmd.BuildConfigFromFlags("", tb.Kubeconfig); err != nil {
		return err
	}
	tb.REST.QPS, tb.REST.Burst = 200, 400
	adminHTTP, err := rest.HTTPClientFor(tb.REST)
	if err != nil {
		return err
	}
	apiReady := httpOK(adminHTTP, apiURL+"/readyz")
	if err := api.waitReady(ctx, apiReady); err != nil {
		return err
	}
	tb.control = append(tb.control, &restartable{name: "kube-apiserver", args: apiArgs, ready: apiReady, proc: api})
	if !controllers {
		return nil
	}

	// The controller manager and scheduler serve /healthz on their own TLS port with a
	// self-signed certificate; the check only needs the status code.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	kc := "--kubeconfig=" + tb.Kubeconfig
	cmArgs := []string{
		kc, "--authentication-kubeconfig=" + tb.Kubeconfig, "--authorization-kubeconfig=" + tb.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(cmPort),
		"--cert-dir=" + filepath.Join(tb.Dir, "cm-certs"),
		"--service-account-private-key-file=" + pk.SAKey,
		"--root-ca-file=" + pk.CACert,
		"--use-service-account-credentials=false",
		"--service-cluster-ip-range=10.0.0.0/24",
		// kwok's heartbeats stall when two testbeds and the compiler share two cores; past
		// the grace period the node controller marks every pod unready for good (kwok
		// never makes a pod Ready again), which reads as a failed rollout. The testbed
		// watches its processes itself, so a long grace period hides nothing.
		"--node-monitor-grace-period=5m",
	}
	cm, err := tb.run("kube-controller-manager", cmArgs)
	if err != nil {
		return err
	}
	schedArgs := []string{
		kc, "--authentication-kubeconfig=" + tb.Kubeconfig, "--authorization-kubeconfig=" + tb.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(schedPort),
		"--cert-dir=" + filepath.Join(tb.Dir, "scheduler-certs"),
	}
	sched, err := tb.run("kube-scheduler", schedArgs)
	if err != nil {
		return err
	}
	cmReady, schedReady := httpOK(insecure, "https://"+hostPort(cmPort)+"/healthz"), httpOK(insecure, "https://"+hostPort(schedPort)+"/healthz")
	if err := cm.waitReady(ctx, cmReady); err != nil {
		return err
	}
	if err := sched.waitReady(ctx, schedReady); err != nil {
		return err
	}
	tb.control = append(tb.control,
		&restartable{name: "kube-controller-manager", args: cmArgs, ready: cmReady, proc: cm},
		&restartable{name: "kube-scheduler", args: schedArgs, ready: schedReady, proc: sched})

	stages := filepath.Join(tb.Dir, "kwok-stages.yaml")
	if err := writeStages(tb.stageDir(), stages); err != nil {
		return err
	}
	kwok, err := tb.run("kwok", []string{
		kc, "--config=" + stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=fake",
		"--server-address=" + hostPort(kwokPort),
		"--cidr=10.244.0.0/16", "--node-ip=127.0.0.1",
	})
	if err != nil {
		return err
	}
	if err := kwok.waitReady(ctx, httpOK(http.DefaultClient, "http://"+hostPort(kwokPort)+"/healthz")); err != nil {
		return err
	}
	return tb.addNodes(ctx, kwok, nodes)
}

// addNodes creates kwok fake nodes and waits until they are Ready and have lost the
// not-ready taint (which needs the node lifecycle controller), so pods can be scheduled.
func (tb *Testbed) addNodes(ctx context.Context, kwok *process, n int) error {
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		return err
	}
	for i := range n {
		name := fmt.Sprintf("kwok-node-%d", i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{kwokNodeAnnotation: "fake"},
				Labels: map[string]string{
					"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
					"kubernetes.io/arch": "amd64", "type": "kwok",
				},
			},
			Status: corev1.NodeStatus{
				Allocatable: corev1.ResourceList{
					corev1.ResourceCPU: mustQuantity("32"), corev1.ResourceMemory: mustQuantity("256Gi"), corev1.ResourcePods: mustQuantity("110"),
				},
				Capacity: corev1.ResourceList{
					corev1.ResourceCPU: mustQuantity("32"), corev1.ResourceMemory: mustQuantity("256Gi"), corev1.ResourcePods: mustQuantity("110"),
				},
			},
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", name, err)
		}
		tb.Nodes = append(tb.Nodes, name)
	}
	for _, name := range tb.Nodes {
		err := kwok.waitReady(ctx, func(ctx context.Context) error {
			node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			return nodeSchedulable(node)
		})
		if err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	return nil
}

func nodeSchedulable(node *corev1.Node) error {
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		return fmt.Errorf("node %s not Ready", node.Name)
	}
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return fmt.Errorf("node %s has taint %s", node.Name, t.Key)
		}
	}
	return nil
}

func writeKubeconfig(path, server string, pk *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testbed"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: pk.CACert}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: pk.AdminCert, ClientKey: pk.AdminKey}
	cfg.Contexts["testbed"] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "testbed"
	return clientcmd.WriteToFile(*cfg, path)
}

// httpOK is a readiness check that wants a 200 from url.
func httpOK(c *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// restartable is a control-plane process StopControlPlane and StartControlPlane stop and
// start again with the same flags.
type restartable struct {
	name  string
	args  []string
	ready func(context.Context) error
	proc  *process
}

// StopControlPlane stops the API server, the controller manager and the scheduler (SIGTERM,
// as systemd stops k3s), leaving etcd and the kwok nodes running: what a k3s restart or
// upgrade does to the clients on the node.
func (tb *Testbed) StopControlPlane() error {
	tb.mu.Lock()
	control := tb.control
	tb.mu.Unlock()
	if len(control) == 0 {
		return errors.New("testbed: no control plane to stop")
	}
	var errs []error
	for i := len(control) - 1; i >= 0; i-- {
		errs = append(errs, control[i].proc.stop(15*time.Second))
	}
	return errors.Join(errs...)
}

// StartControlPlane starts what StopControlPlane stopped, on the same ports with the same
// flags, each once the one before is ready.
func (tb *Testbed) StartControlPlane(ctx context.Context) error {
	tb.mu.Lock()
	control := tb.control
	tb.mu.Unlock()
	for _, r := range control {
		p, err := tb.run(r.name, r.args)
		if err != nil {
			return err
		}
		if err := p.waitReady(ctx, r.ready); err != nil {
			return err
		}
		tb.mu.Lock()
		r.proc = p
		tb.mu.Unlock()
	}
	return nil
}
