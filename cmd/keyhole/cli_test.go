package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// binary is the keyhole binary built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyhole-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "keyhole")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build keyhole:", err)
		os.Exit(1)
	}
	code := m.Run()
	servertest.StopPostgres()
	os.RemoveAll(dir)
	os.Exit(code)
}

// home is a throwaway user: HOME, XDG dirs and a working directory.
type home struct {
	t   *testing.T
	dir string
	env []string
}

func newHome(t *testing.T) *home {
	dir := t.TempDir()
	h := &home{t: t, dir: dir}
	h.env = []string{
		"HOME=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, "data"),
		"PATH=" + os.Getenv("PATH"),
		// The binary is built with -race.
		servertest.RaceChildEnv,
	}
	return h
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs the binary with stdin and returns its output and exit code.
func (h *home) run(stdin string, args ...string) result {
	h.t.Helper()
	return h.runIn(h.dir, stdin, args...)
}

// runIn is run in another working directory (another project).
func (h *home) runIn(dir, stdin string, args ...string) result {
	h.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = h.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("run %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

func (h *home) ok(stdin string, args ...string) result {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != 0 {
		h.t.Fatalf("keyhole %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

const cliSecret = "sk_live_51HcliSecretValue0123456789"

// assertNowhere fails if the secret appears in any output or any file
// under the home dir.
func (h *home) assertNowhere(outputs ...string) {
	h.t.Helper()
	for _, o := range outputs {
		for _, f := range servertest.SecretForms(cliSecret) {
			if strings.Contains(o, f) {
				h.t.Fatalf("output holds the secret: %s", o)
			}
		}
	}
	filepath.WalkDir(h.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, f := range servertest.SecretForms(cliSecret) {
			if bytes.Contains(b, []byte(f)) {
				h.t.Fatalf("file %s holds the secret in plaintext", p)
			}
		}
		return nil
	})
}

func TestInvariant1_CLISecretLifecycleLeavesNoPlaintext(t *testing.T) {
	h := newHome(t)
	var outs []string
	r := h.ok("", "init")
	outs = append(outs, r.stdout, r.stderr)
	keyFile := filepath.Join(h.dir, "config", "keyhole", "master.key")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s: %v, mode %v; want 0600", keyFile, err, fi)
	}
	r = h.ok(cliSecret+"\n", "secret", "set", "github_token", "--description", "CI token")
	outs = append(outs, r.stdout, r.stderr)
	r = h.ok("", "secret", "list")
	outs = append(outs, r.stdout, r.stderr)
	if !strings.Contains(r.stdout, "github_token") || !strings.Contains(r.stdout, "CI token") {
		t.Fatalf("secret list = %q, want the secret's name and description", r.stdout)
	}
	r = h.ok("", "secret", "list", "--json")
	outs = append(outs, r.stdout)
	var meta struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &meta); err != nil || meta.Name != "github_token" || meta.Version != 1 {
		t.Fatalf("secret list --json = %q (%v), want github_token version 1", r.stdout, err)
	}
	r = h.ok(cliSecret+"-v2", "secret", "rotate", "github_token")
	outs = append(outs, r.stdout, r.stderr)
	if !strings.Contains(r.stdout, "version 2") {
		t.Fatalf("rotate = %q, want version 2", r.stdout)
	}
	r = h.ok("", "secret", "rekey")
	outs = append(outs, r.stdout, r.stderr)
	r = h.ok("", "--log-level", "debug", "config", "check")
	outs = append(outs, r.stdout, r.stderr)
	h.assertNowhere(outs...)
	r = h.ok("", "secret", "rm", "github_token")
	if r = h.ok("", "secret", "list", "--json"); strings.TrimSpace(r.stdout) != "" {
		t.Fatalf("after rm, list = %q", r.stdout)
	}
}

func TestCLIBadInputGetsClearErrorsAndExitCodes(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"empty value", "", []string{"secret", "set", "tok"}, 1, "empty secret value"},
		{"newline only", "\n", []string{"secret", "set", "tok"}, 1, "empty secret value"},
		{"name with space", "v", []string{"secret", "set", "bad name"}, 1, "invalid secret name"},
		{"name with slash", "v", []string{"secret", "set", "a/b"}, 1, "invalid secret name"},
		{"value on argv refused", "", []string{"secret", "set", "tok", "value"}, 2, "accepts 1 arg"},
		{"unknown flag", "", []string{"secret", "list", "--bogus"}, 2, "unknown flag"},
		{"unknown command", "", []string{"frobnicate"}, 2, "unknown command"},
		{"missing subcommand", "", []string{"secret"}, 2, "needs a subcommand"},
		{"rm missing", "", []string{"secret", "rm", "nope"}, 1, "not found"},
		{"rotate missing", "v", []string{"secret", "rotate", "nope"}, 1, "not found"},
		{"stdio without scope", "", []string{"stdio"}, 2, "scope"},
		{"init again", "", []string{"init"}, 1, "--force"},
		{"bad log format", "", []string{"--log-format", "xml", "version"}, 2, "log format"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(tc.stdin, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("keyhole %v = exit %d, stderr %q; want exit %d mentioning %q", tc.args, r.code, r.stderr, tc.code, tc.want)
			}
		})
	}
}

func TestCLIWrongKeyAndLooseKeyFile(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	h.ok(cliSecret, "secret", "set", "tok")
	keyFile := filepath.Join(h.dir, "config", "keyhole", "master.key")

	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	r := h.run("", "secret", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 600") {
		t.Fatalf("list with a 0644 key file = exit %d %q, want a refusal that says chmod 600", r.code, r.stderr)
	}
	os.Chmod(keyFile, 0o600)

	wrong := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	h.env = append(h.env, "KEYHOLE_MASTER_KEY="+wrong)
	r = h.run("", "secret", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "wrong master key") {
		t.Fatalf("list with a wrong key = exit %d %q, want 'wrong master key'", r.code, r.stderr)
	}
}

func TestCLITruncatedVaultIsRefusedNotReplaced(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	h.ok(cliSecret, "secret", "set", "tok")
	vaultPath := filepath.Join(h.dir, "data", "keyhole", server.VaultFile)
	b, err := os.ReadFile(vaultPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vaultPath, b[:len(b)/3], 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.run("", "secret", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "corrupt") {
		t.Fatalf("list on a truncated vault = exit %d %q, want a corruption error", r.code, r.stderr)
	}
	after, _ := os.ReadFile(vaultPath)
	if len(after) != len(b)/3 {
		t.Fatalf("the truncated vault was rewritten (%d bytes, was %d)", len(after), len(b)/3)
	}
}

func TestCLISecondProcessOnDataDirIsRefused(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	dd, err := server.OpenDataDir(filepath.Join(h.dir, "data", "keyhole"))
	if err != nil {
		t.Fatal(err)
	}
	defer dd.Close()
	r := h.run("v", "secret", "set", "tok")
	want := fmt.Sprintf("is in use by pid %d", os.Getpid())
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("second process = exit %d %q, want %q", r.code, r.stderr, want)
	}
}

func TestCLIConfigCheck(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	r := h.ok("", "config", "check")
	if !strings.Contains(r.stdout, "triage") || !strings.Contains(r.stdout, "GET /repos/acme/api/issues/*") {
		t.Fatalf("config check = %q, want a summary of scope triage", r.stdout)
	}
	bad := filepath.Join(h.dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\ntools:\n  gh:\n    kind: http\n    base_url: https://api.github.com\n    credential: {secret: tok, inject: bearer}\n    colour: red\nscopes:\n  s:\n    ttl: soon\n    grants:\n      - {tool: nope, methods: [GET], paths: [/x]}\n"), 0o600)
	r = h.run("", "--config", bad, "config", "check")
	if r.code != 1 {
		t.Fatalf("config check on a bad file = exit %d, want 1", r.code)
	}
	for _, want := range []string{bad + ":7:5: tools.gh.colour: unknown key", bad + ":10:10: scopes.s.ttl"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("config check stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	r = h.ok("", "config", "schema")
	var schema map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &schema); err != nil || schema["$schema"] == nil {
		t.Fatalf("config schema is not a JSON Schema: %v", err)
	}
}

func TestCLISessionsWithoutABroker(t *testing.T) {
	h := newHome(t)
	h.ok("", "init")
	r := h.ok("", "session", "new", "--scope", "triage", "--label", "nightly", "--json")
	var s struct {
		ID, Scope, Label, Token, State string
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || !strings.HasPrefix(s.Token, "khs_") || s.State != "active" || s.Label != "nightly" {
		t.Fatalf("session new --json = %q (%v)", r.stdout, err)
	}
	list := h.ok("", "session", "list").stdout
	if !strings.Contains(list, s.ID) || strings.Contains(list, s.Token) {
		t.Fatalf("session list = %q, want the id and never the token", list)
	}
	if r := h.run("", "session", "new", "--scope", "nope"); r.code != 1 || !strings.Contains(r.stderr, `scope "nope" is not defined`) {
		t.Fatalf("session new with an unknown scope = exit %d %q", r.code, r.stderr)
	}
	if r := h.run("", "session", "new", "--scope", "triage", "--ttl", "48h"); r.code != 1 {
		t.Fatalf("session new with a ttl longer than the scope's = exit %d %q, want 1", r.code, r.stderr)
	}
	if r := h.ok("", "session", "revoke", s.ID); !strings.Contains(r.stdout, "revoked "+s.ID) {
		t.Fatalf("revoke = %q", r.stdout)
	}
	if r := h.run("", "session", "revoke"); r.code != 2 {
		t.Fatalf("revoke with nothing named = exit %d, want 2", r.code)
	}
	all := h.ok("", "session", "list", "--all", "--json").stdout
	if !strings.Contains(all, `"state":"revoked"`) {
		t.Fatalf("session list --all = %q, want the session revoked", all)
	}
	data, _ := os.ReadFile(filepath.Join(h.dir, "data", "keyhole", "sessions.db"))
	if len(data) == 0 || bytes.Contains(data, []byte(s.Token)) {
		t.Fatal("the session store is missing or holds the token")
	}
}
