package k8s

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sigil-kms/sigil/policy"
)

// port is sigild's one port.
const port = 8380

// sigild returns the pod template and its sigild container.
func sigild(t *testing.T, o *objects) (*corev1.PodTemplateSpec, *corev1.Container) {
	t.Helper()
	tpl := &o.deployments[0].Spec.Template
	for i := range tpl.Spec.Containers {
		if c := &tpl.Spec.Containers[i]; c.Name == "sigild" {
			return tpl, c
		}
	}
	t.Fatal("the Deployment has no container named sigild")
	return nil, nil
}

// resolvePort returns the number of p, a port number or the name of a
// port of c.
func resolvePort(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

// selects reports whether the non-empty selector s matches the labels l.
func selects(t *testing.T, s *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	if s == nil || len(s.MatchLabels)+len(s.MatchExpressions) == 0 {
		t.Error("empty label selector: it would select every pod of the namespace")
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("label selector: %v", err)
		return false
	}
	return sel.Matches(labels.Set(l))
}

func TestDeployment(t *testing.T) {
	o := rendered(t)
	d := o.deployments[0]
	tpl, c := sigild(t, o)
	if r := d.Spec.Replicas; r == nil {
		t.Error("replicas unset (1), want 3")
	} else if *r != 3 {
		t.Errorf("replicas %d, want 3", *r)
	}
	if !selects(t, d.Spec.Selector, tpl.Labels) {
		t.Errorf("the Deployment's selector %v does not match its pods' labels %v", d.Spec.Selector, tpl.Labels)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port {
		t.Errorf("container ports %+v, want only %d", c.Ports, port)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readiness", c.ReadinessProbe, "/readyz"},
		{"liveness", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe %+v, want an HTTP GET of %s", p.name, p.probe, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Scheme != corev1.URISchemeHTTPS || resolvePort(c, g.Port) != port {
			t.Errorf("%s probe gets %s %s on port %s, want HTTPS %s on %d", p.name, g.Scheme, g.Path, g.Port.String(), p.path, port)
		}
	}
	for key, want := range map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   "8380",
		"prometheus.io/path":   "/metrics",
		"prometheus.io/scheme": "https",
	} {
		if got := tpl.Annotations[key]; got != want {
			t.Errorf("pod annotation %s = %q, want %q", key, got, want)
		}
	}
	spread := false
	for _, tsc := range tpl.Spec.TopologySpreadConstraints {
		if tsc.TopologyKey == "kubernetes.io/hostname" && tsc.WhenUnsatisfiable == corev1.DoNotSchedule && selects(t, tsc.LabelSelector, tpl.Labels) {
			spread = true
		}
	}
	if a := tpl.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if term.TopologyKey == "kubernetes.io/hostname" && selects(t, term.LabelSelector, tpl.Labels) {
				spread = true
			}
		}
	}
	if !spread {
		t.Error("no topology spread constraint or pod anti-affinity spreads the replicas over nodes")
	}
	if tpl.Spec.AutomountServiceAccountToken == nil || *tpl.Spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token it does not need")
	}
}

func TestSecurityContext(t *testing.T) {
	o := rendered(t)
	tpl, _ := sigild(t, o)
	pod := tpl.Spec.SecurityContext
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
		t.Fatalf("pod security context %+v, want runAsNonRoot and a non-zero runAsUser", pod)
	}
	if pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp profile %+v, want RuntimeDefault", pod.SeccompProfile)
	}
	all := slices.Concat(tpl.Spec.InitContainers, tpl.Spec.Containers)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no security context", c.Name)
			continue
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: root filesystem not read-only", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: privilege escalation not disallowed", c.Name)
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s: capabilities %+v, want drop [ALL] and no add", c.Name, sc.Capabilities)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 || sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s overrides the pod's non-root user", c.Name)
		}
		r := c.Resources
		if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() {
			t.Errorf("container %s: requests %v, want cpu and memory", c.Name, r.Requests)
		}
		if r.Limits.Memory().IsZero() {
			t.Errorf("container %s: no memory limit", c.Name)
		}
	}
}

// fileEnv are the variables whose values are paths sigild reads.
var fileEnv = []string{
	"SIGIL_DATABASE_URL_FILE", "SIGIL_HSM_MODULE", "SIGIL_HSM_PIN_FILE", "SIGIL_TLS_CERT", "SIGIL_TLS_KEY",
	"SIGIL_AUDIT_SALT_FILE", "SIGIL_AUTH_CONFIG", "SIGIL_POLICY_FILE",
}

// TestConfiguration checks sigild's environment and that every file it
// names will be there: under a mount of the container, and for the copies
// of the Secrets, a file of the Secret volume that the init container
// copies from.
func TestConfiguration(t *testing.T) {
	o := rendered(t)
	tpl, c := sigild(t, o)
	env := make(map[string]string)
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Errorf("%s comes from %+v: secrets reach sigild only as files", e.Name, e.ValueFrom)
		}
		env[e.Name] = e.Value
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("envFrom %+v: secrets reach sigild only as files", c.EnvFrom)
	}
	for _, name := range []string{"SIGIL_DATABASE_URL", "SIGIL_DEV"} {
		if _, ok := env[name]; ok {
			t.Errorf("%s is set", name)
		}
	}
	if got, want := env["SIGIL_LISTEN"], "0.0.0.0:8380"; got != want {
		t.Errorf("SIGIL_LISTEN = %q, want %q", got, want)
	}
	if env["SIGIL_HSM_TOKEN_LABEL"] == "" {
		t.Error("SIGIL_HSM_TOKEN_LABEL is not set")
	}
	volumes := make(map[string]corev1.Volume)
	for _, v := range tpl.Spec.Volumes {
		volumes[v.Name] = v
	}
	copied := secretCopies(t, tpl, volumes)
	for _, name := range fileEnv {
		file := env[name]
		if !path.IsAbs(file) {
			t.Errorf("%s = %q, want an absolute path", name, file)
			continue
		}
		m, ok := mountOf(c, file)
		if !ok {
			t.Errorf("%s = %s is on no volume mount of the sigild container", name, file)
			continue
		}
		rel := strings.TrimPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		v := volumes[m.Name]
		switch {
		case v.ConfigMap != nil:
			if cm := configMap(o, v.ConfigMap.Name); cm == nil || cm.Data[rel] == "" {
				t.Errorf("%s = %s: ConfigMap %s has no key %s", name, file, v.ConfigMap.Name, rel)
			}
		case v.EmptyDir != nil && copied[m.Name] != nil:
			if !copied[m.Name][rel] {
				t.Errorf("%s = %s: no Secret file %s is copied into volume %s", name, file, rel, m.Name)
			}
		case v.Image != nil || v.HostPath != nil:
			if name != "SIGIL_HSM_MODULE" {
				t.Errorf("%s = %s is on the volume %s, which holds the PKCS#11 library", name, file, m.Name)
			}
		default:
			t.Errorf("%s = %s is on volume %s, which holds no such file", name, file, m.Name)
		}
	}
	if m, ok := mountOf(c, env["SIGIL_POLICY_FILE"]); ok {
		if cm := configMap(o, volumes[m.Name].ConfigMap.Name); cm != nil {
			if _, err := policy.Parse([]byte(cm.Data[path.Base(env["SIGIL_POLICY_FILE"])])); err != nil {
				t.Errorf("the policy in ConfigMap %s: %v", cm.Name, err)
			}
		}
	}
}

// secretCopies checks the Secret volumes and returns, for each emptyDir an
// init container copies the Secret files into, the names of those files.
// Every Secret volume must have mode 0400 and be mounted in no container
// but the init container that copies it.
func secretCopies(t *testing.T, tpl *corev1.PodTemplateSpec, volumes map[string]corev1.Volume) map[string]map[string]bool {
	t.Helper()
	secretFiles := make(map[string][]string) // volume name -> file names
	for _, v := range volumes {
		switch {
		case v.Secret != nil:
			checkMode(t, v.Name, v.Secret.DefaultMode)
			checkItems(t, v.Name, v.Secret.Items)
			for _, it := range v.Secret.Items {
				secretFiles[v.Name] = append(secretFiles[v.Name], it.Path)
			}
			if len(v.Secret.Items) == 0 {
				t.Errorf("Secret volume %s lists no items: the file names would depend on the Secret's keys", v.Name)
			}
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret == nil {
					continue
				}
				if secretFiles[v.Name] == nil {
					checkMode(t, v.Name, v.Projected.DefaultMode)
				}
				checkItems(t, v.Name, src.Secret.Items)
				for _, it := range src.Secret.Items {
					secretFiles[v.Name] = append(secretFiles[v.Name], it.Path)
				}
			}
		}
	}
	if len(secretFiles) == 0 {
		t.Error("no volume holds a Secret")
	}
	copied := make(map[string]map[string]bool)
	for _, c := range tpl.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if secretFiles[m.Name] != nil {
				t.Errorf("container %s mounts the Secret volume %s: the Secret files are group-readable; it reads the 0400 copies", c.Name, m.Name)
			}
		}
	}
	for _, c := range tpl.Spec.InitContainers {
		var from []string
		var to []string
		for _, m := range c.VolumeMounts {
			if secretFiles[m.Name] != nil {
				from = append(from, m.Name)
			} else if v := volumes[m.Name]; v.EmptyDir != nil && !m.ReadOnly {
				to = append(to, m.Name)
			}
		}
		if len(from) == 0 {
			continue
		}
		if len(from) != 1 || len(to) != 1 || !strings.Contains(strings.Join(c.Command, " "), "install -m 0400") {
			t.Errorf("init container %s mounts Secret volumes %v and writable emptyDirs %v; want one of each, copied with install -m 0400", c.Name, from, to)
			continue
		}
		copied[to[0]] = make(map[string]bool)
		for _, f := range secretFiles[from[0]] {
			copied[to[0]][f] = true
		}
		if v := volumes[to[0]]; v.EmptyDir.Medium != corev1.StorageMediumMemory {
			t.Errorf("the Secret copies are in emptyDir %s on %q, want Memory", to[0], v.EmptyDir.Medium)
		}
	}
	return copied
}

// checkMode checks that the default mode of the Secret volume is 0400.
func checkMode(t *testing.T, volume string, mode *int32) {
	t.Helper()
	if mode == nil || *mode != 0o400 {
		t.Errorf("Secret volume %s: defaultMode %s, want 0400", volume, showMode(mode))
	}
}

// checkItems checks that no item of the Secret volume overrides mode
// 0400.
func checkItems(t *testing.T, volume string, items []corev1.KeyToPath) {
	t.Helper()
	for _, it := range items {
		if it.Mode != nil && *it.Mode != 0o400 {
			t.Errorf("Secret volume %s: item %s has mode %#o, want 0400", volume, it.Key, *it.Mode)
		}
	}
}

// showMode formats an optional file mode.
func showMode(p *int32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprintf("%#o", *p)
}

// mountOf returns the mount of c that file is under.
func mountOf(c *corev1.Container, file string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") && m.SubPath == "" {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

// configMap returns the rendered ConfigMap called name, or nil.
func configMap(o *objects, name string) *corev1.ConfigMap {
	for _, cm := range o.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

func TestPodDisruptionBudget(t *testing.T) {
	o := rendered(t)
	tpl, _ := sigild(t, o)
	pdb := o.budgets[0]
	if !selects(t, pdb.Spec.Selector, tpl.Labels) {
		t.Errorf("the PodDisruptionBudget's selector %v does not select sigild's pods %v", pdb.Spec.Selector, tpl.Labels)
	}
	maxOne := pdb.Spec.MaxUnavailable != nil && *pdb.Spec.MaxUnavailable == intstr.FromInt32(1)
	minTwo := pdb.Spec.MinAvailable != nil && *pdb.Spec.MinAvailable == intstr.FromInt32(2)
	if !maxOne && !minTwo {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, minAvailable %v; want maxUnavailable 1 or minAvailable 2", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
}

func TestService(t *testing.T) {
	o := rendered(t)
	tpl, c := sigild(t, o)
	svc := o.services[0]
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(tpl.Labels)) {
		t.Errorf("the Service's selector %v does not select sigild's pods %v", svc.Spec.Selector, tpl.Labels)
	}
	if len(svc.Spec.Ports) != 1 || resolvePort(c, svc.Spec.Ports[0].TargetPort) != port {
		t.Errorf("Service ports %+v, want one, to container port %d", svc.Spec.Ports, port)
	}
}

func TestNetworkPolicy(t *testing.T) {
	o := rendered(t)
	tpl, _ := sigild(t, o)
	np := o.networkPolicies[0]
	if !selects(t, &np.Spec.PodSelector, tpl.Labels) {
		t.Errorf("the NetworkPolicy's selector %v does not select sigild's pods %v", np.Spec.PodSelector, tpl.Labels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, "Ingress") || !slices.Contains(np.Spec.PolicyTypes, "Egress") {
		t.Errorf("policy types %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) == 0 {
		t.Error("no ingress rule: sigild would be unreachable")
	}
	for _, r := range np.Spec.Ingress {
		if len(r.Ports) != 1 || r.Ports[0].Port == nil || r.Ports[0].Port.IntValue() != port {
			t.Errorf("ingress rule allows ports %+v, want only %d", r.Ports, port)
		}
	}
	egress := make(map[string]bool)
	for _, r := range np.Spec.Egress {
		if len(r.Ports) == 0 {
			t.Errorf("egress rule %+v allows every port", r)
		}
		for _, p := range r.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if p.Port != nil {
				egress[string(proto)+"/"+p.Port.String()] = true
			}
		}
	}
	for _, want := range []string{"UDP/53", "TCP/53", "TCP/5432"} {
		if !egress[want] {
			t.Errorf("egress to %s is not allowed", want)
		}
	}
	if len(egress) < 4 {
		t.Errorf("egress allowed only to %v: the HSM's port is missing", egress)
	}
}
