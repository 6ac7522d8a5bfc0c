package server

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// testSecret is the credential every test tool injects. Tests assert that
// no form of it reaches the agent, the audit or the logs.
const testSecret = "ghp_S3cr3tT0kenValue_9f8e7d6c5b4a"

// assertNoSecret fails if any form of testSecret appears in b.
func assertNoSecret(t *testing.T, what string, b []byte) {
	t.Helper()
	servertest.AssertNoSecret(t, what, string(b), testSecret)
}

// issueTracker is a small API in the shape of GitHub's issues, with one
// endpoint that carelessly echoes the request's credentials.
func issueTracker(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/echo":
		auth := r.Header.Get("Authorization")
		token := strings.TrimPrefix(auth, "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "https://example.com/?token="+token)
		w.Header().Set("Set-Cookie", "session="+token)
		json.NewEncoder(w).Encode(map[string]any{
			"authorization": auth,
			"b64":           base64.StdEncoding.EncodeToString([]byte(token)),
			"hex":           hex.EncodeToString([]byte(token)),
			"error":         "invalid key " + token,
		})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/repos/acme/api/issues"):
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"number":1,"title":"Crash on start","state":"open","user":{"login":"a"}},{"number":2,"title":"Typo","state":"closed","user":{"login":"b"}}]`)
	case r.Method == http.MethodPost:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":99}`)
	default:
		http.NotFound(w, r)
	}
}

// env is one keyhole under test: data dir, vault, audit, config, broker.
type env struct {
	t        testing.TB
	dir      string
	up       *servertest.Upstream
	vault    *vault.Vault
	audit    *audit.Log
	broker   *Broker
	logs     *servertest.SyncBuffer
	clock    *servertest.Clock
	dataDir  *DataDir
	cfgText  string
	auditLog AuditLog
}

// baseConfig is the config most tests use; %UPSTREAM% is replaced by the
// test upstream's URL.
const baseConfig = `version: 1
tools:
  github:
    kind: http
    description: Issue tracker API.
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
    timeout: 5s
  issue_titles:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    method: GET
    path: /repos/{owner}/{repo}/issues
    input_schema: {type: object, required: [owner, repo], properties: {owner: {type: string}, repo: {type: string}}, additionalProperties: false}
    credential: {secret: github_token, inject: bearer}
    response: {fields: ["#.number", "#.title"]}
  admin:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  triage:
    description: Triage acme/api issues.
    ttl: 1h
    grants:
      - tool: github
        methods: [GET]
        paths: [/repos/acme/api/issues, /repos/acme/api/issues/*, /echo]
      - tool: github
        methods: [POST]
        paths: [/repos/acme/api/issues/*/comments]
      - tool: issue_titles
        paths: [/repos/acme/*/issues]
  tiny:
    ttl: 10m
    max_calls: 3
    max_denials: 2
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues]}
`

func newEnv(t testing.TB, cfgText string) *env {
	t.Helper()
	return newEnvWith(t, cfgText, issueTracker)
}

// newEnvWith is newEnv with another upstream.
func newEnvWith(t testing.TB, cfgText string, upstream http.HandlerFunc) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), logs: &servertest.SyncBuffer{}, clock: servertest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))}
	e.up = servertest.NewUpstream(t, upstream)
	e.cfgText = strings.ReplaceAll(cfgText, "%UPSTREAM%", e.up.URL)
	cfgPath := filepath.Join(e.dir, "keyhole.yaml")
	if err := os.WriteFile(cfgPath, []byte(e.cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, tools.Env{})
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	dd, err := OpenDataDir(filepath.Join(e.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	e.dataDir = dd
	keyFile := filepath.Join(e.dir, "master.key")
	if err := vault.GenerateKeyFile(keyFile, false); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Create(dd.File(VaultFile), vault.KeySource{KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Set("github_token", []byte(testSecret), "test"); err != nil {
		t.Fatal(err)
	}
	e.vault = v
	al, err := audit.Open(audit.Options{Path: dd.File(AuditFile), Key: v.DeriveKey(auditKeyLabel), Checkpoint: v})
	if err != nil {
		t.Fatal(err)
	}
	e.audit = al
	if e.auditLog == nil {
		e.auditLog = auditLog{al}
	}
	log, _ := NewLogger(e.logs, "json", "debug")
	e.broker = NewBroker(Options{Config: cfg, Secrets: v, Audit: e.auditLog, Logger: log, Now: e.clock.Now})
	t.Cleanup(func() {
		al.Close()
		v.Close()
		dd.Close()
	})
	return e
}

// reconfigure gives new sessions the config cfgText, with %UPSTREAM%
// standing for upstream.
func (e *env) reconfigure(cfgText, upstream string) {
	e.t.Helper()
	path := filepath.Join(e.dir, "reconfigured.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(cfgText, "%UPSTREAM%", upstream)), 0o600); err != nil {
		e.t.Fatal(err)
	}
	cfg, err := config.Load(path, config.ToolEnv{})
	if err != nil {
		e.t.Fatalf("config.Load(%s): %v", path, err)
	}
	e.broker.SetConfig(cfg)
}

// connect starts a stdio session of scope and returns an initialized
// mcp-go client talking to it over pipes (the real stdio framing), and
// every byte it received.
func (e *env) connect(scope string) (*client.Client, *servertest.Wire) {
	e.t.Helper()
	return e.connectFor(e.t, scope)
}

// connectFor is connect for a subtest t: the session ends when t does, so
// the next subtest can start one (a process serves one stdio session at
// a time).
func (e *env) connectFor(t testing.TB, scope string) (*client.Client, *servertest.Wire) {
	t.Helper()
	return servertest.ConnectStdio(t, func(ctx context.Context, in io.Reader, out io.Writer) error {
		return e.broker.ServeStdio(ctx, scope, in, out)
	}, "keyhole-test")
}
