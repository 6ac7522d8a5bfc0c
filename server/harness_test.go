package server

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// testSecret is the credential every test tool injects. Tests assert that
// no form of it reaches the agent, the audit or the logs.
const testSecret = "ghp_S3cr3tT0kenValue_9f8e7d6c5b4a"

// secretForms are the encodings of testSecret a leak could take.
func secretForms(s string) []string {
	return []string{
		s,
		base64.StdEncoding.EncodeToString([]byte(s)),
		base64.RawURLEncoding.EncodeToString([]byte(s)),
		hex.EncodeToString([]byte(s)),
		url.QueryEscape(s),
		// The middle of the secret, in case it was cut.
		s[4 : len(s)-4],
	}
}

// assertNoSecret fails if any form of the secret appears in b.
func assertNoSecret(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, f := range secretForms(testSecret) {
		if strings.Contains(string(b), f) {
			t.Fatalf("%s contains a form of the secret (%q...): %s", what, f[:6], b)
		}
	}
}

// upstream is an httptest server that records every request it receives.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path, RawPath, Query string
	Header                       http.Header
	Body                         string
}

func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(body)})
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
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
	up       *upstream
	vault    *vault.Vault
	audit    *audit.Log
	broker   *Broker
	logs     *syncBuffer
	clock    *fakeClock
	dataDir  *DataDir
	cfgText  string
	auditLog AuditLog
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
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
	e := &env{t: t, dir: t.TempDir(), logs: &syncBuffer{}, clock: &fakeClock{t: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}}
	e.up = newUpstream(t, issueTracker)
	e.cfgText = strings.ReplaceAll(cfgText, "%UPSTREAM%", e.up.URL)
	cfgPath := filepath.Join(e.dir, "keyhole.yaml")
	if err := os.WriteFile(cfgPath, []byte(e.cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(cfgPath, tools.Env{})
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

// connect starts a stdio session of scope and returns an initialized
// mcp-go client talking to it over pipes (the real stdio framing).
func (e *env) connect(scope string) (*client.Client, *wireLog) {
	t := e.t
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	wire := &wireLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.broker.ServeStdio(ctx, scope, inR, outW)
		outW.Close()
	}()
	tr := transport.NewIO(io.TeeReader(outR, wire), inW, io.NopCloser(strings.NewReader("")))
	c := client.NewClient(tr)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "keyhole-test", Version: "1.0"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		inW.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("stdio session did not end")
		}
	})
	return c, wire
}

// wireLog keeps every byte the agent received.
type wireLog struct {
	mu sync.Mutex
	b  []byte
}

func (w *wireLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *wireLog) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.b...)
}

func callTool(t *testing.T, c *client.Client, name string, args any) *mcp.CallToolResult {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := c.CallTool(context.Background(), req)
	if err != nil {
		t.Fatalf("CallTool(%s): %v", name, err)
	}
	return res
}

func resultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func pipe() (*io.PipeReader, *io.PipeWriter) { return io.Pipe() }

// readLines sends each line read from r to out.
func readLines(r io.Reader, out chan<- string) {
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			out <- line
		}
		if err != nil {
			close(out)
			return
		}
	}
}
