package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// project writes a project directory name under h with cfg as its
// keyhole.yaml (%s is the upstream) and returns its path.
func (h *home) project(name, cfg, upstream string) string {
	h.t.Helper()
	dir := filepath.Join(h.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keyhole.yaml"), fmt.Appendf(nil, cfg, upstream), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return dir
}

// stdioIn starts `bin stdio args…` in dir as an editor would; its stderr
// is copied to stderr when set. The client is closed when the test ends.
func (h *home) stdioIn(t *testing.T, bin, dir string, stderr io.Writer, args ...string) *client.Client {
	t.Helper()
	c, err := servertest.StartCommandStderr(bin, dir, h.env, append([]string{"stdio"}, args...), "editor", stderr)
	if err != nil {
		t.Fatalf("keyhole stdio %v in %s: %v", args, dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// callTool calls tool with args and returns the result's text and whether
// it was an error.
func callTool(t *testing.T, c *client.Client, tool string, args map[string]any) (string, bool) {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("call %s %v: %v", tool, args, err)
	}
	return servertest.ResultText(res), res.IsError
}

// sessionLine is a line of `session list --json`.
type sessionLine struct {
	ID        string `json:"id"`
	Scope     string `json:"scope"`
	Config    string `json:"config"`
	State     string `json:"state"`
	Calls     int    `json:"calls"`
	Denials   int    `json:"denials"`
	EndReason string `json:"end_reason"`
	Expires   time.Time
}

func (h *home) sessions(dir string, all bool) []sessionLine {
	h.t.Helper()
	args := []string{"session", "list", "--json"}
	if all {
		args = append(args, "--all")
	}
	r := h.runIn(dir, "", args...)
	if r.code != 0 {
		h.t.Fatalf("session list: exit %d %s", r.code, r.stderr)
	}
	var out []sessionLine
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if line == "" {
			continue
		}
		var s sessionLine
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			h.t.Fatalf("session list line %q: %v", line, err)
		}
		out = append(out, s)
	}
	return out
}

// projectTwo has a scope writer (POST /issues) that the first project
// lacks, and a scope triage that grants less than the first project's.
const projectTwo = `version: 1
tools:
  tracker:
    kind: http
    base_url: %s
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  writer:
    grants:
      - {tool: tracker, methods: [POST], paths: [/issues]}
  triage:
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues/special]}
`

// TestOneBrokerServesEachProjectsConfig (issue 13 item 4): editors of two
// projects share one broker, and each session runs a scope of the config
// its own client resolved: project two's writer exists, project two's
// triage is project two's (never project one's of the same name), session
// list and status name each config, reload reloads the config the command
// resolves and says which, and a broken config refuses its own sessions
// with its located problems while the other project goes on.
func TestOneBrokerServesEachProjectsConfig(t *testing.T) {
	up, hits := countingUpstream(t)
	h := brokerHome(t, up.URL) // project one is h.dir: triage may GET /issues and /issues/*
	h.killBrokerAtCleanup(t)
	two := h.project("two", projectTwo, up.URL)

	one := h.stdioIn(t, binary, h.dir, nil, "--scope", "triage")
	pid := h.brokerPID(t)
	writer := h.stdioIn(t, binary, two, nil, "--scope", "writer")
	triage2 := h.stdioIn(t, binary, two, nil, "--scope", "triage")
	if h.brokerPID(t) != pid {
		t.Fatal("project two's editors started a second broker")
	}

	if text, isErr := callTool(t, writer, "tracker", map[string]any{"method": "POST", "path": "/issues", "body": "{}"}); isErr {
		t.Fatalf("project two's writer POST /issues = %q, want allowed", text)
	}
	if text, isErr := callTool(t, triage2, "tracker", map[string]any{"method": "GET", "path": "/issues/1"}); !isErr || !strings.Contains(text, "not granted to scope triage") {
		t.Fatalf("project two's triage GET /issues/1 = %q (error %v); want denied: only project one's triage grants it", text, isErr)
	}
	if text, isErr := callTool(t, triage2, "tracker", map[string]any{"method": "GET", "path": "/issues/special"}); isErr {
		t.Fatalf("project two's triage GET /issues/special = %q, want allowed", text)
	}
	if text, isErr := callTool(t, one, "tracker", map[string]any{"method": "GET", "path": "/issues/1"}); isErr {
		t.Fatalf("project one's triage GET /issues/1 = %q, want allowed", text)
	}
	if got := hits.Load(); got != 3 {
		t.Fatalf("upstream received %d requests, want 3 (the denied call sends nothing)", got)
	}

	// session list and status name each session's config.
	oneCfg, twoCfg := filepath.Join(h.dir, "keyhole.yaml"), filepath.Join(two, "keyhole.yaml")
	byScope := map[string][]string{}
	configOf := map[string]string{}
	for _, s := range h.sessions(two, false) {
		byScope[s.Scope] = append(byScope[s.Scope], s.Config)
		configOf[s.ID] = s.Config
	}
	// Every audit record names the config its session runs.
	tail := h.ok("", "audit", "tail", "--json").stdout
	for _, line := range strings.Split(strings.TrimSpace(tail), "\n") {
		var rec struct{ Session, Config, Tool string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Session == "-" && rec.Tool != "keyhole.reload" {
			continue // a change of the data dir (init, a secret), of no config
		}
		if rec.Config == "" || (rec.Session != "-" && rec.Config != configOf[rec.Session]) {
			t.Fatalf("audit record %s names config %q, want its session's %q", line, rec.Config, configOf[rec.Session])
		}
	}
	if fmt.Sprint(byScope["writer"]) != fmt.Sprint([]string{twoCfg}) || len(byScope["triage"]) != 2 {
		t.Fatalf("session list configs by scope = %v; want writer of %s and a triage of each project", byScope, twoCfg)
	}
	if r := h.runIn(two, "", "session", "list"); !strings.Contains(r.stdout, "CONFIG") || !strings.Contains(r.stdout, "two/keyhole.yaml") {
		t.Fatalf("session list table = %q, want a CONFIG column naming two/keyhole.yaml", r.stdout)
	}
	var st struct {
		Configs []struct {
			Path    string `json:"path"`
			Default bool   `json:"default"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(h.ok("", "status", "--json").stdout), &st); err != nil || len(st.Configs) != 2 || st.Configs[0].Path != oneCfg || !st.Configs[0].Default || st.Configs[1].Path != twoCfg {
		t.Fatalf("status configs = %+v (%v); want %s (the broker's own) and %s", st.Configs, err, oneCfg, twoCfg)
	}

	// reload reloads the config the command resolves, and says which.
	if r := h.runIn(two, "", "reload"); r.code != 0 || !strings.Contains(r.stdout, twoCfg) || strings.Contains(r.stdout, oneCfg) {
		t.Fatalf("reload in project two = exit %d %q %q; want it to name %s", r.code, r.stdout, r.stderr, twoCfg)
	}
	if r := h.runIn(two, "", "--config", oneCfg, "reload"); r.code != 0 || !strings.Contains(r.stdout, oneCfg) {
		t.Fatalf("reload --config %s = exit %d %q", oneCfg, r.code, r.stdout)
	}

	// A broken config refuses its own sessions, located; the rest go on.
	three := h.project("three", "version: 1\ntools: {}\nscopes:\n  triage:\n    ttl: forever\n    grants: []\n%s", "")
	r := h.runIn(three, "", "stdio", "--scope", "triage")
	if r.code != 1 || !strings.Contains(r.stderr, filepath.Join(three, "keyhole.yaml")+":5") || !strings.Contains(r.stderr, "ttl") {
		t.Fatalf("stdio on a broken config = exit %d %q; want exit 1 naming %s:5 and ttl", r.code, r.stderr, filepath.Join(three, "keyhole.yaml"))
	}
	if text, isErr := callTool(t, writer, "tracker", map[string]any{"method": "POST", "path": "/issues", "body": "{}"}); isErr {
		t.Fatalf("project two's writer after a broken third config = %q", text)
	}
	if h.brokerPID(t) != pid {
		t.Fatal("the broken config stopped the broker")
	}
}
