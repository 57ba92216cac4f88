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
	tb.apiArgs = []string{
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
	api, err := tb.run("kube-apiserver", tb.apiArgs)
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
	tb.apiReady = httpOK(adminHTTP, apiURL+"/readyz")
	if err := api.waitReady(ctx, tb.apiReady); err != nil {
		return err
	}
	tb.api = api
	if !controllers {
		return nil
	}

	// The controller manager and scheduler serve /healthz on their own TLS port with a
	// self-signed certificate; the check only needs the status code.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	kc := "--kubeconfig=" + tb.Kubeconfig
	cm, err := tb.run("kube-controller-manager", []string{
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
	})
	if err != nil {
		return err
	}
	sched, err := tb.run("kube-scheduler", []string{
		kc, "--authentication-kubeconfig=" + tb.Kubeconfig, "--authorization-kubeconfig=" + tb.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(schedPort),
		"--cert-dir=" + filepath.Join(tb.Dir, "scheduler-certs"),
	})
	if err != nil {
		return err
	}
	if err := cm.waitReady(ctx, httpOK(insecure, "https://"+hostPort(cmPort)+"/healthz")); err != nil {
		return err
	}
	if err := sched.waitReady(ctx, httpOK(insecure, "https://"+hostPort(schedPort)+"/healthz")); err != nil {
		return err
	}

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

// StopAPIServer stops the API server (SIGTERM, as systemd stops k3s), leaving etcd and
// everything else running: what a k3s restart or upgrade does to the node's clients.
func (tb *Testbed) StopAPIServer() error {
	tb.mu.Lock()
	api := tb.api
	tb.mu.Unlock()
	if api == nil {
		return errors.New("testbed: no API server to stop")
	}
	return api.stop(15 * time.Second)
}

// StartAPIServer starts the API server again, on the same port with the same flags, and
// waits until it is ready.
func (tb *Testbed) StartAPIServer(ctx context.Context) error {
	api, err := tb.run("kube-apiserver", tb.apiArgs)
	if err != nil {
		return err
	}
	if err := api.waitReady(ctx, tb.apiReady); err != nil {
		return err
	}
	tb.mu.Lock()
	tb.api = api
	tb.mu.Unlock()
	return nil
}
