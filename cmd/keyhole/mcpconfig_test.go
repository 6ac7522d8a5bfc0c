package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMCPConfigSnippets(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	cfg := filepath.Join(h.dir, "keyhole.yaml")

	line := strings.TrimSpace(h.ok("", "mcp-config", "claude-code", "--scope", "triage").stdout)
	want := "claude mcp add keyhole -e KEYHOLE_CONFIG=" + cfg + " -- " + binary + " stdio --scope triage"
	if line != want {
		t.Fatalf("claude-code line:\n got %s\nwant %s", line, want)
	}
	httpLine := strings.TrimSpace(h.ok("", "mcp-config", "claude-code", "--http", "https://k.example/mcp", "--token-env", "KH_TOKEN").stdout)
	if httpLine != `claude mcp add --transport http keyhole https://k.example/mcp --header "Authorization: Bearer $KH_TOKEN"` {
		t.Fatalf("claude-code http line = %s", httpLine)
	}

	r := h.ok("", "mcp-config", "cursor", "--scope", "triage")
	out, body := r.stdout, r.stdout
	if !strings.Contains(r.stderr, "merge this into") {
		t.Fatalf("the hint is not on stderr: %q", r.stderr)
	}
	var doc struct {
		MCPServers map[string]struct {
			Command string            `json:"command"`
			Args    []string          `json:"args"`
			Env     map[string]string `json:"env"`
		} `json:"mcpServers"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("cursor snippet (all of stdout) is not JSON: %v\n%s", err, out)
	}
	k := doc.MCPServers["keyhole"]
	if k.Command != binary || strings.Join(k.Args, " ") != "stdio --scope triage" || k.Env["KEYHOLE_CONFIG"] != cfg {
		t.Fatalf("cursor entry = %+v", k)
	}

	vs := h.ok("", "mcp-config", "vscode", "--http", "http://127.0.0.1:7777/mcp", "--token-env", "KH_TOKEN").stdout
	if !strings.Contains(vs, `"type": "http"`) || !strings.Contains(vs, `"Authorization": "Bearer ${env:KH_TOKEN}"`) {
		t.Fatalf("vscode http snippet = %s", vs)
	}
	for _, bad := range [][]string{
		{"mcp-config", "emacs", "--scope", "triage"},
		{"mcp-config", "cursor"},
		{"mcp-config", "cursor", "--scope", "triage", "--http", "http://x/mcp", "--token-env", "T"},
		{"mcp-config", "cursor", "--http", "http://x/mcp"},
	} {
		if r := h.run("", bad...); r.code != 2 {
			t.Errorf("keyhole %v = exit %d %q, want usage error 2", bad, r.code, r.stderr)
		}
	}
}

func TestMCPConfigWriteMergesAndBacksUp(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	path := filepath.Join(h.dir, ".cursor", "mcp.json")
	os.MkdirAll(filepath.Dir(path), 0o755)
	existing := `{"mcpServers": {"other": {"command": "other-server"}}, "theme": "dark"}`
	os.WriteFile(path, []byte(existing), 0o600)

	r := h.ok("", "mcp-config", "cursor", "--scope", "triage", "--write")
	if !strings.Contains(r.stdout, "backed up") {
		t.Fatalf("--write output %q does not mention the backup", r.stdout)
	}
	var doc map[string]any
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("merged file is not JSON: %v", err)
	}
	servers := doc["mcpServers"].(map[string]any)
	if servers["other"] == nil || servers["keyhole"] == nil || doc["theme"] != "dark" {
		t.Fatalf("merged file lost or lacks entries: %s", b)
	}
	backups, _ := filepath.Glob(path + ".bak-*")
	if len(backups) != 1 {
		t.Fatalf("backups = %v, want one", backups)
	}
	if old, _ := os.ReadFile(backups[0]); string(old) != existing {
		t.Fatalf("backup holds %q, want the original", old)
	}

	os.WriteFile(path, []byte("{not json"), 0o600)
	r = h.run("", "mcp-config", "cursor", "--scope", "triage", "--write")
	if r.code != 1 || !strings.Contains(r.stderr, "not valid JSON") {
		t.Fatalf("--write on a broken file = exit %d %q", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(path); string(b) != "{not json" {
		t.Fatalf("a file that could not be parsed was changed: %q", b)
	}
}

// TestMCPConfigUndefinedScopeIsAUsageError: a scope the config does not
// define is refused with exit 2, listing the scopes that are defined.
func TestMCPConfigUndefinedScopeIsAUsageError(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	for _, client := range []string{"claude-code", "cursor", "vscode", "claude-desktop"} {
		r := h.run("", "mcp-config", client, "--scope", "nope")
		if r.code != 2 || !strings.Contains(r.stderr, `scope "nope" is not defined`) || !strings.Contains(r.stderr, "triage") || r.stdout != "" {
			t.Fatalf("mcp-config %s --scope nope = exit %d, stdout %q, stderr %q; want exit 2 listing the defined scopes and no snippet", client, r.code, r.stdout, r.stderr)
		}
	}
}

// TestMCPConfigWriteKeepsJSONCAndEveryBackup: --write accepts VS Code's
// JSONC (comments, trailing commas) and keeps its comments, says
// "replaced" when it replaces an entry, and never overwrites a backup,
// even two writes in the same second.
func TestMCPConfigWriteKeepsJSONCAndEveryBackup(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	path := filepath.Join(h.dir, ".vscode", "mcp.json")
	os.MkdirAll(filepath.Dir(path), 0o755)
	jsonc := `// my servers
{
  "servers": {
    /* the linter */
    "lint": {"type": "stdio", "command": "lint-server",},
  },
  "inputs": [],
}
`
	os.WriteFile(path, []byte(jsonc), 0o600)
	r := h.ok("", "mcp-config", "vscode", "--scope", "triage", "--write")
	if !strings.Contains(r.stdout, "added server") {
		t.Fatalf("first --write = %q, want it to say it added the server", r.stdout)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{"// my servers", "/* the linter */", `"lint"`, `"keyhole"`, `"inputs"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("merged file lost %q:\n%s", want, b)
		}
	}
	r = h.ok("", "mcp-config", "vscode", "--scope", "triage", "--write")
	if !strings.Contains(r.stdout, `replaced server "keyhole"`) {
		t.Fatalf("second --write = %q, want it to say it replaced the entry", r.stdout)
	}
	h.ok("", "mcp-config", "vscode", "--scope", "triage", "--write")
	backups, _ := filepath.Glob(path + ".bak-*")
	if len(backups) != 3 {
		t.Fatalf("backups after three writes = %v, want three", backups)
	}
	first := false
	for _, bk := range backups {
		if old, _ := os.ReadFile(bk); string(old) == jsonc {
			first = true
		}
	}
	if !first {
		t.Fatal("no backup holds the original file: a later write overwrote it")
	}
	b, _ = os.ReadFile(path)
	if strings.Count(string(b), `"keyhole"`) != 1 {
		t.Fatalf("the entry appears %d times:\n%s", strings.Count(string(b), `"keyhole"`), b)
	}
}
