// Package deploy holds the deployment files: systemd units, Kubernetes manifests, the Dockerfile.
// Its tests load every example configuration with the program's own loader and check the
// properties the README promises (which capabilities, which user, which directories), so the files
// cannot drift from the code. Where the real tool is at hand, it judges too: systemd-analyze
// verify for the units, the OpenTelemetry Collector's validate for its configurations, kubectl
// kustomize for the manifests.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/quanyu/quanyu/analysis"
	"github.com/quanyu/quanyu/core"
	"github.com/quanyu/quanyu/internal/doctor"
	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/mix"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// The layout every deployment file shares (README: "Both use the same layout").
const (
	binary    = "/usr/local/bin/quanyu"
	pluginDir = "/usr/local/lib/quanyu/plugins"
	image     = "ghcr.io/quanyu/quanyu:VERSION"
)

// deployedCaps are the capabilities the deployment files grant the agent: those doctor checks
// the capture plugins for, no more.
func deployedCaps() []string {
	caps := doctor.AgentCapabilities()
	sort.Strings(caps)
	return caps
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, &n)
	}
}

func TestEveryYAMLFileParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" {
			return err
		}
		if docs := yamlDocs(t, path); len(docs) == 0 {
			t.Errorf("%s has no YAML document", path)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 9 {
		t.Errorf("only %d YAML files found under deploy/", n)
	}
}

// Kubernetes objects, as far as the checks read them.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	HostNetwork     bool   `yaml:"hostNetwork"`
	HostPID         bool   `yaml:"hostPID"`
	DNSPolicy       string `yaml:"dnsPolicy"`
	SecurityContext struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Tolerations []struct {
		Key      string `yaml:"key"`
		Operator string `yaml:"operator"`
	} `yaml:"tolerations"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string                 `yaml:"name"`
		ConfigMap *struct{ Name string } `yaml:"configMap"`
		Secret    *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		EmptyDir *struct{}              `yaml:"emptyDir"`
		HostPath *struct{ Path string } `yaml:"hostPath"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
			FieldRef     *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	SecurityContext struct {
		Privileged               *bool  `yaml:"privileged"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

// manifests are the Kubernetes objects, by kind and name ("DaemonSet/quanyu-agent").
func manifests(t *testing.T) map[string]object {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]object{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for _, doc := range yamlDocs(t, f) {
			var o object
			if err := doc.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			key := o.Kind + "/" + o.Metadata.Name
			if _, dup := out[key]; dup {
				t.Errorf("%s is defined twice", key)
			}
			out[key] = o
		}
	}
	return out
}

func get(t *testing.T, objs map[string]object, key string) object {
	t.Helper()
	o, ok := objs[key]
	if !ok {
		t.Fatalf("no %s in the manifests", key)
	}
	return o
}

// configFile follows a container's `--config PATH` to the ConfigMap or Secret key mounted there,
// and writes its content to a file the loaders can read.
func configFile(t *testing.T, objs map[string]object, pod podSpec, c container) string {
	t.Helper()
	path := ""
	for i, a := range c.Args {
		if a == "--config" && i+1 < len(c.Args) {
			path = c.Args[i+1]
		} else if p, ok := strings.CutPrefix(a, "--config="); ok {
			path = p
		}
	}
	if path == "" {
		t.Fatalf("container %s: no --config in %v", c.Name, c.Args)
	}
	for _, m := range c.VolumeMounts {
		key := ""
		switch {
		case m.SubPath != "" && m.MountPath == path:
			key = m.SubPath
		case m.SubPath == "" && m.MountPath == filepath.Dir(path):
			key = filepath.Base(path)
		default:
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			var content string
			var ok bool
			switch {
			case v.ConfigMap != nil:
				content, ok = get(t, objs, "ConfigMap/"+v.ConfigMap.Name).Data[key]
			case v.Secret != nil:
				content, ok = get(t, objs, "Secret/"+v.Secret.SecretName).StringData[key]
			}
			if !ok {
				t.Fatalf("container %s: volume %s has no %s for --config %s", c.Name, v.Name, key, path)
			}
			f := filepath.Join(t.TempDir(), key)
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("container %s: nothing is mounted at --config %s", c.Name, path)
	return ""
}

// environ is the container's environment as the program sees it: literal values, Secret keys,
// and the node's name for fieldRef.
func environ(t *testing.T, objs map[string]object, c container) []string {
	t.Helper()
	env := []string{}
	for _, e := range c.Env {
		value := e.Value
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := get(t, objs, "Secret/"+ref.Name).StringData[ref.Key]
			if !ok {
				t.Fatalf("container %s: %s refers to %s/%s, which does not exist", c.Name, e.Name, ref.Name, ref.Key)
			}
			value = v
		case e.ValueFrom.FieldRef != nil:
			value = "node-1"
		}
		env = append(env, e.Name+"="+value)
	}
	return env
}

func workload(t *testing.T, objs map[string]object, key, containerName string) (podSpec, container) {
	t.Helper()
	pod := get(t, objs, key).Spec.Template.Spec
	for _, c := range pod.Containers {
		if c.Name == containerName {
			return pod, c
		}
	}
	t.Fatalf("%s has no container %s", key, containerName)
	return podSpec{}, container{}
}

// tokens are mix's tokens, name → role and token → name.
type tokens struct {
	roleOf map[string]string // token → role
}

func mixTokens(cfg mix.Config) tokens {
	tk := tokens{roleOf: map[string]string{}}
	for _, tok := range cfg.Tokens {
		tk.roleOf[tok.Token] = tok.Role
	}
	return tk
}

// presents asserts that a token someone presents is one of mix's, with one of the roles.
func (tk tokens) presents(t *testing.T, who, token string, roles ...string) {
	t.Helper()
	role, ok := tk.roleOf[token]
	switch {
	case !ok:
		t.Errorf("%s presents a token mix does not know: %q", who, token)
	case !slices.Contains(roles, role):
		t.Errorf("%s presents a token with role %s, want %v", who, role, roles)
	}
	if !strings.HasPrefix(token, "replace-me") {
		t.Errorf("%s's token %q does not look like the placeholder it must be", who, token)
	}
}

// The example configurations of the systemd layout load with the programs' own loaders, agree
// with the units (directories) and with each other (tokens, the collector's forwarding).
func TestSystemdConfigsLoad(t *testing.T) {
	none := []string{} // an empty environment: no QUANYU_* of this machine's leaks in
	agent, err := core.Load(core.LoadOptions{File: "systemd/agent.yaml", Environ: none})
	if err != nil {
		t.Fatalf("systemd/agent.yaml: %v", err)
	}
	m, err := mix.Load(mix.LoadOptions{File: "systemd/mix.yaml", Environ: none})
	if err != nil {
		t.Fatalf("systemd/mix.yaml: %v", err)
	}
	a, err := analysis.Load(analysis.LoadOptions{File: "systemd/analysis.yaml", Environ: none})
	if err != nil {
		t.Fatalf("systemd/analysis.yaml: %v", err)
	}
	if agent.PluginDir != pluginDir || agent.Capture.Backend != "ebpf" || agent.Capture.Fallback != "mmap" ||
		!slices.Contains(agent.Sinks, "otlp") || agent.Mix.Address == "" {
		t.Errorf("agent: plugin_dir %q, backend %s/%s, sinks %v, mix %q", agent.PluginDir, agent.Capture.Backend,
			agent.Capture.Fallback, agent.Sinks, agent.Mix.Address)
	}
	tk := mixTokens(m)
	tk.presents(t, "the agent", agent.Mix.Token, mix.RoleAgent)
	tk.presents(t, "analysis", a.Mix.Token, mix.RoleAgent, mix.RoleViewer)
	tk.presents(t, "analysis's UI", a.Mix.AdminToken, mix.RoleAdmin)
	if m.DataDir != "/var/lib/quanyu/mix" || a.DataDir != "/var/lib/quanyu/analysis" {
		t.Errorf("data_dir: mix %q, analysis %q", m.DataDir, a.DataDir)
	}
	// The collector beside analysis forwards to analysis's OTLP receiver.
	if got := collectorExportsTo(t, mustRead(t, "systemd/otelcol.yaml")); got != a.OTLP.GRPCListen {
		t.Errorf("otelcol.yaml forwards to %s, analysis receives on %s", got, a.OTLP.GRPCListen)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// collectorExportsTo is the endpoint of a collector configuration's otlp_grpc exporter.
func collectorExportsTo(t *testing.T, config string) string {
	t.Helper()
	var c struct {
		Exporters map[string]struct {
			Endpoint string `yaml:"endpoint"`
		} `yaml:"exporters"`
	}
	if err := yaml.Unmarshal([]byte(config), &c); err != nil {
		t.Fatal(err)
	}
	return c.Exporters["otlp_grpc"].Endpoint
}

// The configurations in the manifests load with the programs' own loaders, in the environment
// the pods give them (an unknown QUANYU_* variable is an error there too).
func TestKubernetesConfigsLoad(t *testing.T) {
	objs := manifests(t)

	pod, c := workload(t, objs, "DaemonSet/quanyu-agent", "agent")
	agent, err := core.Load(core.LoadOptions{File: configFile(t, objs, pod, c), Environ: environ(t, objs, c)})
	if err != nil {
		t.Fatalf("the agent's configuration: %v", err)
	}
	if agent.PluginDir != pluginDir || agent.Host != "node-1" || agent.Identity.ID != "node-1" ||
		!slices.Contains(agent.Sinks, "otlp") || agent.Mix.Address == "" {
		t.Errorf("agent: plugin_dir %q, host %q, id %q, sinks %v, mix %q", agent.PluginDir, agent.Host,
			agent.Identity.ID, agent.Sinks, agent.Mix.Address)
	}

	pod, c = workload(t, objs, "Deployment/quanyu-mix", "mix")
	m, err := mix.Load(mix.LoadOptions{File: configFile(t, objs, pod, c), Environ: environ(t, objs, c)})
	if err != nil {
		t.Fatalf("mix's configuration: %v", err)
	}

	pod, c = workload(t, objs, "Deployment/quanyu-analysis", "analysis")
	a, err := analysis.Load(analysis.LoadOptions{File: configFile(t, objs, pod, c), Environ: environ(t, objs, c)})
	if err != nil {
		t.Fatalf("analysis's configuration: %v", err)
	}
	_, sidecar := workload(t, objs, "Deployment/quanyu-analysis", "otelcol")
	collector := mustRead(t, configFile(t, objs, pod, sidecar))
	if got := collectorExportsTo(t, collector); got != a.OTLP.GRPCListen {
		t.Errorf("the sidecar forwards to %s, analysis receives on %s", got, a.OTLP.GRPCListen)
	}

	tk := mixTokens(m)
	tk.presents(t, "the agent", agent.Mix.Token, mix.RoleAgent)
	tk.presents(t, "analysis", a.Mix.Token, mix.RoleAgent, mix.RoleViewer)
	tk.presents(t, "analysis's UI", a.Mix.AdminToken, mix.RoleAdmin)
	// The agent's Secret holds its token and nothing that could do more.
	if s := get(t, objs, "Secret/quanyu-agent-token").StringData; len(s) != 1 {
		t.Errorf("the agent's Secret holds %d values; it should hold its token only", len(s))
	}
}

func TestAgentDaemonSet(t *testing.T) {
	objs := manifests(t)
	pod, c := workload(t, objs, "DaemonSet/quanyu-agent", "agent")
	sc := c.SecurityContext
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("the agent must say privileged: false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the agent must say allowPrivilegeEscalation: false")
	}
	// Added capabilities reach a container's root user only, and through it the plugins.
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("the agent must run as root in its container, or its added capabilities go nowhere")
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	var added []string
	for _, a := range sc.Capabilities.Add {
		added = append(added, "CAP_"+a)
	}
	sort.Strings(added)
	if !slices.Equal(added, deployedCaps()) {
		t.Errorf("capabilities.add %v, want exactly %v", sc.Capabilities.Add, deployedCaps())
	}
	if !pod.HostNetwork || pod.DNSPolicy != "ClusterFirstWithHostNet" || pod.HostPID {
		t.Errorf("hostNetwork %v, dnsPolicy %q, hostPID %v", pod.HostNetwork, pod.DNSPolicy, pod.HostPID)
	}
	tolerated := false
	for _, tl := range pod.Tolerations {
		tolerated = tolerated || (tl.Operator == "Exists" && tl.Key == "")
	}
	if !tolerated {
		t.Error("the agent does not tolerate every taint: some nodes would go unwatched")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s mounts the host's %s; the agent needs no host path", v.Name, v.HostPath.Path)
		}
	}
	// A read-only root, and a writable /tmp for the sockets between the agent and its plugins.
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || !mountsEmptyDir(pod, c, "/tmp") {
		t.Error("the agent needs a read-only root filesystem and an emptyDir on /tmp")
	}
	if c.Image != image || len(c.Args) == 0 || c.Args[0] != "agent" {
		t.Errorf("image %q, args %v", c.Image, c.Args)
	}
}

func mountsEmptyDir(pod podSpec, c container, path string) bool {
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if m.MountPath == path && v.Name == m.Name && v.EmptyDir != nil {
				return true
			}
		}
	}
	return false
}

// mix and analysis run unprivileged, without a capability.
func TestServicesRunUnprivileged(t *testing.T) {
	objs := manifests(t)
	for _, w := range []struct{ key, container, command string }{
		{"Deployment/quanyu-mix", "mix", "mix"},
		{"Deployment/quanyu-analysis", "analysis", "analysis"},
		{"Deployment/quanyu-analysis", "otelcol", ""},
	} {
		pod, c := workload(t, objs, w.key, w.container)
		sc := c.SecurityContext
		if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: runAsNonRoot is not set", w.key)
		}
		if len(sc.Capabilities.Add) > 0 || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s/%s: security context %+v", w.key, w.container, sc)
		}
		if w.command != "" && (c.Image != image || len(c.Args) == 0 || c.Args[0] != w.command) {
			t.Errorf("%s/%s: image %q, args %v", w.key, w.container, c.Image, c.Args)
		}
		if pod.HostNetwork {
			t.Errorf("%s uses the host's network", w.key)
		}
	}
}

// The sidecar runs the collector release whose components test/otelcol builds, the one that
// validates its configuration below.
func TestCollectorImageMatchesTheTestedCollector(t *testing.T) {
	_, c := workload(t, manifests(t), "Deployment/quanyu-analysis", "otelcol")
	m := regexp.MustCompile(`(?m)^\s*go\.opentelemetry\.io/collector/otelcol v0\.(\d+)\.(\d+)`).
		FindStringSubmatch(mustRead(t, "../test/otelcol/go.mod"))
	if m == nil {
		t.Fatal("test/otelcol/go.mod names no go.opentelemetry.io/collector/otelcol version")
	}
	if want := fmt.Sprintf("otel/opentelemetry-collector:0.%s.%s", m[1], m[2]); c.Image != want {
		t.Errorf("sidecar image %q, want %q", c.Image, want)
	}
}

func TestCollectorConfigsValidate(t *testing.T) {
	objs := manifests(t)
	pod, sidecar := workload(t, objs, "Deployment/quanyu-analysis", "otelcol")
	otelcol := testbin.OtelCol(t)
	for _, f := range []string{"systemd/otelcol.yaml", configFile(t, objs, pod, sidecar)} {
		if out, err := exec.Command(otelcol, "validate", "--config", f).CombinedOutput(); err != nil {
			t.Errorf("otelcol validate %s: %v\n%s", f, err, out)
		}
	}
}

func TestKustomization(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
		Images    []struct {
			Name string `yaml:"name"`
		} `yaml:"images"`
	}
	if err := yaml.Unmarshal([]byte(mustRead(t, "kubernetes/kustomization.yaml")), &k); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want every manifest %v", k.Resources, want)
	}
	if len(k.Images) != 1 || k.Images[0].Name+":VERSION" != image {
		t.Errorf("kustomization images %+v: want the one entry that sets %s", k.Images, image)
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl is not installed: the manifests were not run through kustomize")
		return
	}
	out, err := exec.Command(kubectl, "kustomize", "kubernetes").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("namespace: quanyu")) || !bytes.Contains(out, []byte("image: "+image)) {
		t.Errorf("kustomize output lacks the namespace or the image:\n%s", out)
	}
}

// unit is a systemd unit file: section → key → values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: continued lines are not expected here", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one is the key's only value; "" when it is absent.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	t.Errorf("[%s] %s is set %d times", section, key, len(v))
	return v[len(v)-1]
}

func capSet(s string) []string {
	f := strings.Fields(s)
	sort.Strings(f)
	return f
}

func TestSystemdUnits(t *testing.T) {
	for _, cmd := range []string{"agent", "mix", "analysis"} {
		t.Run(cmd, func(t *testing.T) {
			u := parseUnit(t, "systemd/quanyu-"+cmd+".service")
			if want := fmt.Sprintf("%s %s --config %%d/%s.yaml", binary, cmd, cmd); u.one(t, "Service", "ExecStart") != want {
				t.Errorf("ExecStart=%s, want %s", u.one(t, "Service", "ExecStart"), want)
			}
			if want := fmt.Sprintf("%s.yaml:/etc/quanyu/%s.yaml", cmd, cmd); u.one(t, "Service", "LoadCredential") != want {
				t.Errorf("LoadCredential=%s, want %s", u.one(t, "Service", "LoadCredential"), want)
			}
			if _, err := os.Stat("systemd/" + cmd + ".yaml"); err != nil {
				t.Errorf("no example configuration for %s: %v", cmd, err)
			}
			for key, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict",
				"ProtectHome": "yes", "PrivateTmp": "yes"} {
				if got := u.one(t, "Service", key); got != want {
					t.Errorf("%s=%s, want %s", key, got, want)
				}
			}
			if u.one(t, "Install", "WantedBy") != "multi-user.target" {
				t.Error("the unit cannot be enabled: no WantedBy=multi-user.target")
			}
		})
	}

	agent := parseUnit(t, "systemd/quanyu-agent.service")
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if got := capSet(agent.one(t, "Service", key)); !slices.Equal(got, deployedCaps()) {
			t.Errorf("agent %s=%v, want exactly %v", key, got, deployedCaps())
		}
	}
	if agent.one(t, "Service", "LimitMEMLOCK") != "infinity" {
		t.Error("the agent unit does not set LimitMEMLOCK=infinity")
	}
	user := agent.one(t, "Service", "User")
	if user == "" || user == "root" || agent.one(t, "Service", "DynamicUser") == "yes" {
		t.Errorf("the agent runs as %q; it should have its own user", user)
	}
	if !regexp.MustCompile(`(?m)^u ` + regexp.QuoteMeta(user) + ` `).MatchString(mustRead(t, "systemd/quanyu-sysusers.conf")) {
		t.Errorf("quanyu-sysusers.conf does not create the agent's user %s", user)
	}

	for _, cmd := range []string{"mix", "analysis"} {
		u := parseUnit(t, "systemd/quanyu-"+cmd+".service")
		if u.one(t, "Service", "DynamicUser") != "yes" || u.one(t, "Service", "CapabilityBoundingSet") != "" ||
			u.one(t, "Service", "AmbientCapabilities") != "" {
			t.Errorf("%s: DynamicUser=%s CapabilityBoundingSet=%q AmbientCapabilities=%q", cmd,
				u.one(t, "Service", "DynamicUser"), u.one(t, "Service", "CapabilityBoundingSet"), u.one(t, "Service", "AmbientCapabilities"))
		}
		if got, want := u.one(t, "Service", "StateDirectory"), "quanyu/"+cmd; got != want {
			t.Errorf("%s: StateDirectory=%s, want %s (its data_dir)", cmd, got, want)
		}
	}
}

// The units' command lines are ones quanyu accepts, and systemd's own checker finds nothing to
// say about the units when it is installed.
func TestSystemdUnitsWithTheRealTools(t *testing.T) {
	bin := filepath.Join(testbin.Build(t), "quanyu")
	units, err := filepath.Glob("systemd/*.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var copies []string
	for _, path := range units {
		u := parseUnit(t, path)
		args := strings.Fields(u.one(t, "Service", "ExecStart"))
		out, _ := exec.Command(bin, args[1], "-h").CombinedOutput()
		for _, a := range args[2:] {
			if strings.HasPrefix(a, "--") && !strings.Contains(string(out), "  -"+strings.TrimPrefix(a, "--")+" ") {
				t.Errorf("%s: quanyu %s has no flag %s:\n%s", path, args[1], a, out)
			}
		}
		// systemd-analyze wants the program to exist: the built one stands in.
		raw := strings.ReplaceAll(mustRead(t, path), binary+" ", bin+" ")
		c := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(c, []byte(raw), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the units were not verified by systemd")
		return
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, copies...)...).CombinedOutput()
	// It warns about unknown keys and bad values but exits 0: any output is a finding.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The image puts the binaries where the configurations look for them, and builds with the Go
// release go.mod asks for.
func TestDockerfile(t *testing.T) {
	df := mustRead(t, "Dockerfile")
	for _, want := range []string{
		"RUN make build",
		"COPY --from=build /src/bin/quanyu " + binary,
		"COPY --from=build /src/bin/plugins/ " + pluginDir + "/",
		"ENV QUANYU_AGENT_PLUGIN_DIR=" + pluginDir,
		`ENTRYPOINT ["` + binary + `"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile does not say %q", want)
		}
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(mustRead(t, "../go.mod"))
	if goVersion == nil || !strings.Contains(df, "FROM golang:"+goVersion[1]+"-") {
		t.Errorf("the build stage's Go image is not go.mod's Go %v", goVersion)
	}
}
