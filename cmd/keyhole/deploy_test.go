package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/keyhole-dev/keyhole/server/config"
)

// The deployment files (deploy/) are checked without docker, systemd or
// kubectl: each is parsed, and every keyhole command line in them is
// parsed by keyhole's own CLI, so a renamed flag breaks this test, not a
// deployment.

const deployDir = "../../deploy"

// checkCommandLine parses args as keyhole would, without running them.
func checkCommandLine(t *testing.T, where string, args []string) {
	t.Helper()
	a := NewApp(strings.NewReader(""), io.Discard, io.Discard, func(string) string { return "" })
	root := a.rootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Fatalf("%s: keyhole %s: no such command (%v)", where, strings.Join(args, " "), err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("%s: keyhole %s: %v", where, strings.Join(args, " "), err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		t.Fatalf("%s: keyhole %s: %v", where, strings.Join(args, " "), err)
	}
}

func TestDockerfileBuildsAStaticBinaryOnDistroless(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	instr := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(bytes.ReplaceAll(b, []byte("\\\n"), nil)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		op, rest, _ := strings.Cut(line, " ")
		instr[strings.ToUpper(op)] = append(instr[strings.ToUpper(op)], strings.TrimSpace(rest))
		if strings.EqualFold(op, "FROM") {
			froms = append(froms, rest)
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[1], "gcr.io/distroless/static") {
		t.Fatalf("stages %v: want a build stage and a final distroless/static one", froms)
	}
	build := strings.Join(instr["RUN"], "\n")
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./cmd/keyhole") {
		t.Fatalf("RUN %q: want a static (CGO_ENABLED=0) build of ./cmd/keyhole", build)
	}
	if u := instr["USER"]; len(u) != 1 || !strings.HasPrefix(u[0], "nonroot") {
		t.Fatalf("USER %v: want nonroot", u)
	}
	var entry, cmd []string
	if len(instr["ENTRYPOINT"]) != 1 || json.Unmarshal([]byte(instr["ENTRYPOINT"][0]), &entry) != nil || len(entry) != 1 || entry[0] != "/keyhole" {
		t.Fatalf("ENTRYPOINT %v: want [\"/keyhole\"]", instr["ENTRYPOINT"])
	}
	if len(instr["CMD"]) != 1 || json.Unmarshal([]byte(instr["CMD"][0]), &cmd) != nil {
		t.Fatalf("CMD %v: want a JSON array", instr["CMD"])
	}
	checkCommandLine(t, "Dockerfile CMD", cmd)
}

func TestSystemdUnitRunsABrokerOfTheStore(t *testing.T) {
	f, err := os.Open(filepath.Join(deployDir, "keyhole.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string]map[string][]string{}
	var section string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("keyhole.service: %q is not a key=value line of a section", line)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	for _, s := range []string{"Unit", "Service", "Install"} {
		if unit[s] == nil {
			t.Fatalf("keyhole.service has no [%s] section", s)
		}
	}
	svc := unit["Service"]
	exec := strings.Fields(strings.Join(svc["ExecStart"], " "))
	if len(exec) < 2 || exec[0] != "/usr/local/bin/keyhole" || exec[1] != "serve" {
		t.Fatalf("ExecStart %v: want /usr/local/bin/keyhole serve …", exec)
	}
	for i, a := range exec {
		exec[i] = strings.NewReplacer("%d", "/run/credentials/keyhole.service", "%H", "host").Replace(a)
	}
	checkCommandLine(t, "keyhole.service ExecStart", exec[1:])
	env := strings.Join(svc["Environment"], "\n")
	if !strings.Contains(env, "KEYHOLE_KEY_FILE=%d/master.key") || !strings.Contains(strings.Join(svc["LoadCredential"], " "), "master.key:") {
		t.Fatalf("the master key must reach the service as a credential (LoadCredential=master.key:…, KEYHOLE_KEY_FILE=%s/master.key)", "%d")
	}
	for k, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "DynamicUser": "yes", "UMask": "0077"} {
		if got := svc[k]; len(got) != 1 || got[0] != want {
			t.Errorf("keyhole.service %s=%v, want %s", k, got, want)
		}
	}
	if got := svc["ExecReload"]; len(got) != 1 || !strings.Contains(got[0], "-HUP") {
		t.Errorf("ExecReload=%v: want a SIGHUP (keyhole reloads its config on it)", got)
	}
}

// k8s is the part of Kubernetes objects this test reads.
type k8s struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas int `yaml:"replicas"`
		// Selector is a Deployment's {matchLabels: …} or a Service's labels.
		Selector map[string]any `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				InitContainers []container `yaml:"initContainers"`
				Containers     []container `yaml:"containers"`
				Volumes        []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"`
		} `yaml:"httpGet"`
	} `yaml:"readinessProbe"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func TestKubernetesManifestsHoldTogether(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "keyhole.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8s{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o k8s
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("keyhole.yaml: %v", err)
		}
		objs[o.Kind+"/"+o.Metadata.Name] = o
	}
	dep, ok := objs["Deployment/keyhole"]
	if !ok || dep.Spec.Replicas < 2 {
		t.Fatalf("want a Deployment keyhole of several replicas; have %v", keys(objs))
	}
	svc, ok := objs["Service/keyhole"]
	if !ok {
		t.Fatal("no Service keyhole")
	}
	labels := dep.Spec.Template.Metadata.Labels
	matchLabels, _ := dep.Spec.Selector["matchLabels"].(map[string]any)
	for _, sel := range []map[string]any{matchLabels, svc.Spec.Selector} {
		if len(sel) == 0 {
			t.Fatal("an empty selector")
		}
		for k, v := range sel {
			if labels[k] != v.(string) {
				t.Fatalf("selector %s=%s does not select the pods (labels %v)", k, v, labels)
			}
		}
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	checkCommandLine(t, "Deployment container args", c.Args)
	for _, ic := range pod.InitContainers {
		checkCommandLine(t, "init container "+ic.Name, ic.Args)
	}
	flag := func(name string) string {
		for i, a := range c.Args {
			if a == name && i+1 < len(c.Args) {
				return c.Args[i+1]
			}
		}
		return ""
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, f := range map[string]string{"mcp": "--http", "metrics": "--metrics"} {
		_, port, _ := strings.Cut(flag(f), ":")
		if n, _ := strconv.Atoi(port); n == 0 || ports[name] != n {
			t.Fatalf("container port %s (%d) is not the port of %s %q", name, ports[name], f, flag(f))
		}
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet.Path != "/healthz" || ports[p.HTTPGet.Port] != ports["mcp"] {
		t.Fatalf("readiness probe %+v: want /healthz on the mcp port", p)
	}
	for _, sp := range svc.Spec.Ports {
		if _, ok := ports[sp.TargetPort]; !ok {
			t.Fatalf("Service port %s targets %q, which no container port is named", sp.Name, sp.TargetPort)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			env[e.Name] = e.ValueFrom.SecretKeyRef.Name
		}
	}
	if env["KEYHOLE_MASTER_KEY"] == "" || env["KEYHOLE_STORE"] == "" {
		t.Fatalf("KEYHOLE_MASTER_KEY and KEYHOLE_STORE must come from Secrets; env from secrets: %v", env)
	}
	if _, ok := objs["Secret/"+env["KEYHOLE_MASTER_KEY"]]; !ok {
		t.Fatalf("the master key's Secret %s is not in the manifests", env["KEYHOLE_MASTER_KEY"])
	}
	// The config the pods mount is a valid keyhole.yaml.
	var cm string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			cm = v.ConfigMap.Name
		}
	}
	cfg, ok := objs["ConfigMap/"+cm]
	if !ok || cfg.Data["keyhole.yaml"] == "" {
		t.Fatalf("no ConfigMap %q with keyhole.yaml", cm)
	}
	if _, err := config.Parse(flag("--config"), []byte(cfg.Data["keyhole.yaml"]), config.ToolEnv{}); err != nil {
		t.Fatalf("the ConfigMap's keyhole.yaml: %v", err)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || strings.HasPrefix(flag("--config"), m.MountPath+"/")
	}
	if !mounted {
		t.Fatalf("--config %s is under no volume mount", flag("--config"))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
