package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestConfigCheckWarnsAboutMissingSecrets: config check names every tool
// whose secret is not in the vault and the command that stores it; it
// exits 0, and 1 with --strict.
func TestConfigCheckWarnsAboutMissingSecrets(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	r := h.ok("", "config", "check")
	if !strings.Contains(r.stderr, "warning: secret github_token, used by") || !strings.Contains(r.stderr, "keyhole secret set github_token") {
		t.Fatalf("config check stderr = %q, want a warning naming github_token and the command to store it", r.stderr)
	}
	if r := h.run("", "config", "check", "--strict"); r.code != 1 || !strings.Contains(r.stderr, "github_token") {
		t.Fatalf("config check --strict = exit %d %q, want 1", r.code, r.stderr)
	}
	h.ok(cliSecret, "secret", "set", "github_token")
	r = h.run("", "config", "check", "--strict")
	if strings.Contains(r.stderr, "github_token") {
		t.Fatalf("config check still warns about a stored secret: %q", r.stderr)
	}
}

// TestSecretRmWarnsWhenAToolUsesIt: rm names the tools whose calls now fail.
func TestSecretRmWarnsWhenAToolUsesIt(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	h.ok(cliSecret, "secret", "set", "github_token")
	h.ok(cliSecret, "secret", "set", "unused_token")
	r := h.ok("", "secret", "rm", "github_token")
	if !strings.Contains(r.stderr, "warning:") || !strings.Contains(r.stderr, "secret github_token") || !strings.Contains(r.stderr, "keyhole secret set github_token") {
		t.Fatalf("secret rm of a used secret: stderr %q, want a warning naming its tools", r.stderr)
	}
	if r := h.ok("", "secret", "rm", "unused_token"); r.stderr != "" {
		t.Fatalf("secret rm of an unused secret warned: %q", r.stderr)
	}
}

// TestSessionShowVersionReloadAndDays: session show is a table (JSON with
// --json), version and reload take --json, and durations take days.
func TestSessionShowVersionReloadAndDays(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	if r := h.run("", "session", "new", "--scope", "triage", "--ttl", "1d"); r.code != 1 || !strings.Contains(r.stderr, "ttl") {
		t.Fatalf("--ttl 1d under a 1h scope = exit %d %q, want the scope's limit named", r.code, r.stderr)
	}
	var s struct{ ID string }
	json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "triage", "--ttl", "0.01d", "--label", "x", "--json").stdout), &s)
	table := h.ok("", "session", "show", s.ID).stdout
	for _, want := range []string{"ID", s.ID, "SCOPE", "triage", "STATE", "active", "EXPIRES"} {
		if !strings.Contains(table, want) {
			t.Fatalf("session show = %q, want a table with %s", table, want)
		}
	}
	var info struct {
		ID      string `json:"id"`
		Created string `json:"created"`
		Expires string `json:"expires"`
	}
	if err := json.Unmarshal([]byte(h.ok("", "session", "show", s.ID, "--json").stdout), &info); err != nil || info.ID != s.ID {
		t.Fatalf("session show --json = %+v (%v)", info, err)
	}
	var v struct {
		Version   string   `json:"version"`
		Protocols []string `json:"mcp_protocols"`
	}
	if err := json.Unmarshal([]byte(h.ok("", "version", "--json").stdout), &v); err != nil || v.Version == "" || len(v.Protocols) == 0 || v.Protocols[0] != "2026-07-28" {
		t.Fatalf("version --json = %+v (%v)", v, err)
	}
	if r := h.run("", "reload", "--json"); r.code != 1 || !strings.Contains(r.stderr, "no keyhole broker") {
		t.Fatalf("reload --json without a broker = exit %d %q", r.code, r.stderr)
	}
	startServe(t, h)
	var rel struct{ Reloaded bool }
	if err := json.Unmarshal([]byte(h.ok("", "reload", "--json").stdout), &rel); err != nil || !rel.Reloaded {
		t.Fatalf("reload --json = %+v (%v)", rel, err)
	}
	if r := h.run("", "serve", "--idle-exit", "soon"); r.code != 2 || !strings.Contains(r.stderr, "7d") {
		t.Fatalf("serve --idle-exit soon = exit %d %q, want a usage error naming the form", r.code, r.stderr)
	}
}

// TestCompletionOfNames: the shell completes scope, session and secret
// names.
func TestCompletionOfNames(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	h.ok(cliSecret, "secret", "set", "github_token")
	var s struct{ ID string }
	json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "triage", "--json").stdout), &s)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "stdio", "--scope", ""}, "triage"},
		{[]string{"__complete", "session", "new", "--scope", "tr"}, "triage"},
		{[]string{"__complete", "mcp-config", "cursor", "--scope", ""}, "triage"},
		{[]string{"__complete", "session", "revoke", ""}, s.ID},
		{[]string{"__complete", "session", "show", ""}, s.ID},
		{[]string{"__complete", "audit", "tail", "--session", ""}, s.ID},
		{[]string{"__complete", "secret", "rm", ""}, "github_token"},
		{[]string{"__complete", "secret", "rotate", "git"}, "github_token"},
	} {
		r := h.ok("", tc.args...)
		if !strings.Contains(r.stdout, tc.want) {
			t.Errorf("keyhole %v = %q, want %s offered", tc.args, r.stdout, tc.want)
		}
	}
}
