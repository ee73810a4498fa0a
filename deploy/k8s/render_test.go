package k8s

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// objects are the rendered objects, decoded by kind.
type objects struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	serviceAccounts []*corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	budgets         []*policyv1.PodDisruptionBudget
	networkPolicies []*networkingv1.NetworkPolicy
}

// render runs the kustomization in dir of fsys as `kubectl kustomize`
// does.
func render(fsys filesys.FileSystem, dir string) (resmap.ResMap, error) {
	return krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
}

// errSecret reports a rendered Secret: the operator creates the Secrets,
// and the repository holds no secret value.
var errSecret = errors.New("a Secret is rendered; Secrets are created by the operator and only referenced")

// errKind reports a rendered object of a kind the tests do not know.
var errKind = errors.New("unexpected apiVersion and kind")

// decode decodes every object of m strictly into the typed struct of its
// apiVersion and kind: an unknown or duplicate field is an error, and so
// is an object of any other kind.
func decode(m resmap.ResMap) (*objects, error) {
	var o objects
	var errs []error
	for _, r := range m.Resources() {
		kind := r.GetApiVersion() + " " + r.GetKind()
		b, err := r.AsYAML()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", kind, r.GetName(), err))
			continue
		}
		switch kind {
		case "apps/v1 Deployment":
			err = add(&o.deployments, b)
		case "v1 Service":
			err = add(&o.services, b)
		case "v1 ServiceAccount":
			err = add(&o.serviceAccounts, b)
		case "v1 ConfigMap":
			err = add(&o.configMaps, b)
		case "policy/v1 PodDisruptionBudget":
			err = add(&o.budgets, b)
		case "networking.k8s.io/v1 NetworkPolicy":
			err = add(&o.networkPolicies, b)
		case "v1 Secret":
			err = errSecret
		default:
			err = errKind
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", kind, r.GetName(), err))
		}
	}
	return &o, errors.Join(errs...)
}

// add decodes b strictly into a new T and appends it to list.
func add[T any](list *[]*T, b []byte) error {
	v := new(T)
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// rendered renders and decodes this directory's kustomization, and checks
// that it holds one object of each kind the tests look at.
func rendered(t *testing.T) *objects {
	t.Helper()
	m, err := render(filesys.MakeFsOnDisk(), ".")
	if err != nil {
		t.Fatalf("kustomize: %v", err)
	}
	o, err := decode(m)
	if err != nil {
		t.Fatalf("decode:\n%v", err)
	}
	for _, c := range []struct {
		kind string
		n    int
	}{
		{"Deployment", len(o.deployments)},
		{"Service", len(o.services)},
		{"ServiceAccount", len(o.serviceAccounts)},
		{"ConfigMap", len(o.configMaps)},
		{"PodDisruptionBudget", len(o.budgets)},
		{"NetworkPolicy", len(o.networkPolicies)},
	} {
		if c.n != 1 {
			t.Fatalf("rendered %d objects of kind %s, want 1", c.n, c.kind)
		}
	}
	return o
}

func TestRenders(t *testing.T) {
	o := rendered(t)
	for _, ns := range []string{
		o.deployments[0].Namespace, o.services[0].Namespace, o.serviceAccounts[0].Namespace,
		o.configMaps[0].Namespace, o.budgets[0].Namespace, o.networkPolicies[0].Namespace,
	} {
		if ns != "sigil" {
			t.Errorf("namespace %q, want sigil", ns)
		}
	}
}

// TestDecodeIsStrict checks that decode refuses what the API server would
// refuse or silently drop, so that the other tests cannot pass on a
// manifest with a misspelt field. Each case has a good object, which must
// decode, and a bad one, which must not; want, if set, is the sentinel the
// error must wrap.
func TestDecodeIsStrict(t *testing.T) {
	const service = `apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  selector: {app: x}
  ports: [{port: 80, targetPort: 8080}]
`
	const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: 3
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
        - name: c
          image: i
          securityContext: {readOnlyRootFilesystem: true}
`
	for _, c := range []struct {
		name      string
		good, bad string
		want      error
	}{
		{"unknown field", service, strings.Replace(service, "targetPort:", "targetPortt:", 1), nil},
		{"field at the wrong level", deployment,
			strings.Replace(deployment, "securityContext: {readOnlyRootFilesystem: true}", "readOnlyRootFilesystem: true", 1), nil},
		{"duplicate field", service, strings.Replace(service, "spec:", "spec:\n  type: ClusterIP\n  type: NodePort", 1), nil},
		{"unknown kind", service, strings.Replace(service, "apiVersion: v1\nkind: Service", "apiVersion: example.com/v1\nkind: Widget", 1), errKind},
		{"wrong apiVersion", deployment, strings.Replace(deployment, "apps/v1", "extensions/v1beta1", 1), errKind},
		{"a Secret", service, "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {pin: \"1234\"}\n", errSecret},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := decodeOne(t, c.good); err != nil {
				t.Fatalf("decode of the good object: %v", err)
			}
			err := decodeOne(t, c.bad)
			if err == nil {
				t.Fatal("decode of the bad object succeeded")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("decode of the bad object: %v, want %v", err, c.want)
			}
		})
	}
}

// decodeOne renders a kustomization of the one object obj in memory and
// decodes it.
func decodeOne(t *testing.T, obj string) error {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	for name, text := range map[string]string{"kustomization.yaml": "resources: [obj.yaml]\n", "obj.yaml": obj} {
		if err := fsys.WriteFile(filepath.Join("/k", name), []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := render(fsys, "/k")
	if err != nil {
		t.Fatalf("kustomize: %v", err)
	}
	_, err = decode(m)
	return err
}
