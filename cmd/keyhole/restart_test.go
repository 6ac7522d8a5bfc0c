package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/mark3labs/mcp-go/client"
	"github.com/tidwall/buntdb"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// restartConfig has a narrow scope (GET only) and a tiny one (3 calls, 2
// denials); %s is the upstream, %s the methods narrow grants.
const restartConfig = `version: 1
tools:
  tracker:
    kind: http
    base_url: %s
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  narrow:
    grants:
      - {tool: tracker, methods: [%s], paths: [/issues/*]}
  tiny:
    max_calls: 3
    max_denials: 2
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues/*]}
`

// methodUpstream counts the requests it receives by method.
func methodUpstream(t *testing.T) (*httptest.Server, func(method string) int) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(srv.Close)
	return srv, func(m string) int { mu.Lock(); defer mu.Unlock(); return seen[m] }
}

func (h *home) writeConfig(format string, args ...any) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), fmt.Appendf(nil, format, args...), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// newToken starts a session of scope with `session new` and returns its
// id and token.
func (h *home) newToken(scope string) (id, token string) {
	h.t.Helper()
	var s struct{ ID, Token string }
	if err := json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", scope, "--json").stdout), &s); err != nil {
		h.t.Fatal(err)
	}
	return s.ID, s.Token
}

func connect(t *testing.T, url, token string) *client.Client {
	t.Helper()
	c, err := servertest.ConnectHTTP(url, token, "agent")
	if err != nil {
		t.Fatalf("connect with a token: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (h *home) session(id string) sessionLine {
	h.t.Helper()
	for _, s := range h.sessions(h.dir, true) {
		if s.ID == id {
			return s
		}
	}
	h.t.Fatalf("session list --all has no %s", id)
	return sessionLine{}
}

// TestInvariant10_ARestartDoesNotWidenARunningSession (issue 14 item 6):
// a session keeps the scope it started with across a broker restart,
// whatever the config file says by then; a new session gets the new scope.
func TestInvariant10_ARestartDoesNotWidenARunningSession(t *testing.T) {
	up, seen := methodUpstream(t)
	h := brokerHome(t, up.URL)
	h.writeConfig(restartConfig, up.URL, "GET")
	serve, url := startServe(t, h)
	id, tok := h.newToken("narrow")
	del := map[string]any{"method": "DELETE", "path": "/issues/1"}
	if text, isErr := callTool(t, connect(t, url, tok), "tracker", del); !isErr || !strings.Contains(text, "not granted") {
		t.Fatalf("DELETE under narrow = %q, want denied", text)
	}

	h.writeConfig(restartConfig, up.URL, "GET, DELETE")
	h.ok("", "stop")
	serve.Wait()
	_, url = startServe(t, h)

	c := connect(t, url, tok)
	if text, isErr := callTool(t, c, "tracker", del); !isErr || !strings.Contains(text, "not granted to scope narrow") {
		t.Fatalf("after the config widened narrow and the broker restarted, the running session's DELETE = %q; want denied", text)
	}
	if text, isErr := callTool(t, c, "tracker", map[string]any{"method": "GET", "path": "/issues/1"}); isErr {
		t.Fatalf("the running session's GET after the restart = %q", text)
	}
	if n := seen("DELETE"); n != 0 {
		t.Fatalf("upstream received %d DELETEs from the running session", n)
	}
	_, fresh := h.newToken("narrow")
	if text, isErr := callTool(t, connect(t, url, fresh), "tracker", del); isErr {
		t.Fatalf("a new session's DELETE under the widened scope = %q, want allowed", text)
	}
	if n := seen("DELETE"); n != 1 {
		t.Fatalf("upstream received %d DELETEs, want the new session's one", n)
	}
	if s := h.session(id); s.State != "active" || s.Config != filepath.Join(h.dir, "keyhole.yaml") || s.Calls != 3 || s.Denials != 2 {
		t.Fatalf("the running session after the restart = %+v; want active, of %s, 3 calls and 2 denials", s, filepath.Join(h.dir, "keyhole.yaml"))
	}
}

// TestACrashRevivesNothingAndResetsNoCounter (issue 14 item 6): a broker
// killed right after a revocation, a tripwire end and a session's last
// allowed call comes back with the revocation, the end and the counters.
func TestACrashRevivesNothingAndResetsNoCounter(t *testing.T) {
	up, seen := methodUpstream(t)
	h := brokerHome(t, up.URL)
	h.writeConfig(restartConfig, up.URL, "GET")
	serve, url := startServe(t, h)
	revoked, revokedTok := h.newToken("tiny")
	tripped, trippedTok := h.newToken("tiny")
	spent, spentTok := h.newToken("tiny")
	a, b, c := connect(t, url, revokedTok), connect(t, url, trippedTok), connect(t, url, spentTok)
	get := map[string]any{"method": "GET", "path": "/issues/1"}
	for i := 0; i < 3; i++ {
		if text, isErr := callTool(t, c, "tracker", get); isErr {
			t.Fatalf("call %d of 3 = %q", i+1, text)
		}
	}
	for i := 0; i < 2; i++ {
		callTool(t, b, "tracker", map[string]any{"method": "GET", "path": "/admin"})
	}
	callTool(t, a, "tracker", get)
	h.ok("", "session", "revoke", revoked)
	serve.Process.Kill()
	serve.Wait()
	gets := seen("GET")

	_, url = startServe(t, h)
	for _, tc := range []struct{ id, tok, state string }{{revoked, revokedTok, "revoked"}, {tripped, trippedTok, "ended"}} {
		if _, err := servertest.ConnectHTTP(url, tc.tok, "agent"); err == nil || !strings.Contains(err.Error(), "authorization required") {
			t.Fatalf("a %s session's token after a crash = %v; want 401 (authorization required)", tc.state, err)
		}
		if s := h.session(tc.id); s.State != tc.state {
			t.Fatalf("session %s after a crash = %+v, want %s", tc.id, s, tc.state)
		}
	}
	if s := h.session(tripped); !strings.Contains(s.EndReason, "tripwire") || s.Denials != 2 {
		t.Fatalf("the tripped session after a crash = %+v; want ended by the tripwire after 2 denials", s)
	}
	if text, isErr := callTool(t, connect(t, url, spentTok), "tracker", get); !isErr || !strings.Contains(text, "has used all 3 calls") {
		t.Fatalf("a fourth call of a 3-call session after a crash = %q; want max_calls", text)
	}
	if s := h.session(spent); s.Calls != 4 {
		t.Fatalf("the spent session after a crash and a fourth call = %+v, want 4 calls", s)
	}
	if n := seen("GET"); n != gets {
		t.Fatalf("upstream received %d GETs after the restart, want none", n-gets)
	}
}

// TestAnEditedSessionRecordEndsTheSession (issue 14 item 6): a session
// record edited on disk (here, a later expiry) is refused: its token opens
// nothing, and session list says why it ended.
func TestAnEditedSessionRecordEndsTheSession(t *testing.T) {
	up, _ := methodUpstream(t)
	h := brokerHome(t, up.URL)
	h.writeConfig(restartConfig, up.URL, "GET")
	id, tok := h.newToken("narrow") // no broker: the data dir is opened in-process

	db, err := buntdb.Open(filepath.Join(h.dir, "data", "keyhole", "sessions.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *buntdb.Tx) error {
		raw, err := tx.Get("session:" + id)
		if err != nil {
			return err
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return err
		}
		rec["expires"] = time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
		out, _ := json.Marshal(rec)
		_, _, err = tx.Set("session:"+id, string(out), nil)
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	_, url := startServe(t, h)
	if _, err := servertest.ConnectHTTP(url, tok, "agent"); err == nil || !strings.Contains(err.Error(), "authorization required") {
		t.Fatalf("the token of an edited session = %v, want 401 (authorization required)", err)
	}
	if s := h.session(id); s.State != "ended" || !strings.Contains(s.EndReason, "changed on disk") {
		t.Fatalf("the edited session = %+v; want ended because its record was changed on disk", s)
	}
}

// stsSeen is a fake AWS STS: it answers AssumeRole with session
// credentials and keeps every session policy it was sent.
type stsSeen struct {
	mu       sync.Mutex
	policies []string
}

func (s *stsSeen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	s.mu.Lock()
	s.policies = append(s.policies, form.Get("Policy"))
	s.mu.Unlock()
	secs, _ := strconv.Atoi(form.Get("DurationSeconds"))
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>`+
		`<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/%s</Arn><AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser>`+
		`<Credentials><AccessKeyId>ASIAKEYHOLESESSION01</AccessKeyId><SecretAccessKey>session/Secret+Key/Of/The/Fake/STS0000</SecretAccessKey><SessionToken>FQoGZXIvYXdzEFakeSessionToken</SessionToken><Expiration>%s</Expiration></Credentials>`+
		`</AssumeRoleResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></AssumeRoleResponse>`,
		form.Get("RoleSessionName"), time.Now().Add(time.Duration(secs)*time.Second).UTC().Format(time.RFC3339))
}

func (s *stsSeen) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.policies...)
}

const restartS3Config = `version: 1
tools:
  archive:
    kind: s3
    bucket: acme-archive
    region: us-east-1
    endpoint: %s
    sts_endpoint: %s
    path_style: true
    allow_private_network: true
    credential: {secret: aws_role, inject: aws_sigv4}
scopes:
  report:
    grants:
      - {tool: archive, actions: [list, get], prefixes: ["%s"]}
`

// TestInvariant10_ARestartDoesNotWidenAnS3Session (issue 14 item 6): a
// session granted reports/2026/ is still denied outside it after the config is widened to
// the whole bucket and the broker restarted, and the session policy the
// restarted broker asks STS for is derived from the grants it started with.
func TestInvariant10_ARestartDoesNotWidenAnS3Session(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("acme-archive"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"reports/2026/q1.csv", "payroll/2026.csv"} {
		if _, err := backend.PutObject("acme-archive", k, map[string]string{"Content-Type": "text/plain"}, strings.NewReader("contents of "+k), int64(len("contents of "+k)), nil); err != nil {
			t.Fatal(err)
		}
	}
	store := &s3Seen{next: gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0)).Server()}
	storeSrv := httptest.NewServer(store)
	defer storeSrv.Close()
	sts := &stsSeen{}
	stsSrv := httptest.NewServer(sts)
	defer stsSrv.Close()

	h := newHome(t)
	h.ok("", "init")
	h.ok(`{"role_arn":"arn:aws:iam::123456789012:role/r","access_key_id":"AKIAKEYHOLEROLE00001","secret_access_key":"role/Secret+Key/ForTheRestartTest00000"}`, "secret", "set", "aws_role")
	h.writeConfig(restartS3Config, storeSrv.URL, stsSrv.URL, "reports/2026/")
	serve, url := startServe(t, h)
	_, tok := h.newToken("report")
	if text, isErr := callTool(t, connect(t, url, tok), "archive", map[string]any{"action": "get", "key": "reports/2026/q1.csv"}); isErr {
		t.Fatalf("get inside the grant = %q", text)
	}

	h.writeConfig(restartS3Config, storeSrv.URL, stsSrv.URL, "")
	h.ok("", "stop")
	serve.Wait()
	_, url = startServe(t, h)
	c := connect(t, url, tok)
	for _, args := range []map[string]any{
		{"action": "get", "key": "payroll/2026.csv"},
		{"action": "list", "prefix": "payroll/"},
		{"action": "list"},
	} {
		if text, isErr := callTool(t, c, "archive", args); !isErr || !strings.Contains(text, "not granted") {
			t.Fatalf("after the grant was widened to the whole bucket and a restart, the running session's %v = %q; want denied", args, text)
		}
	}
	if text, isErr := callTool(t, c, "archive", map[string]any{"action": "list", "prefix": "reports/2026/"}); isErr || !strings.Contains(text, "reports/2026/q1.csv") {
		t.Fatalf("list inside the grant after the restart = %q", text)
	}
	if s := store.seen(); strings.Contains(s, "payroll") {
		t.Fatalf("the store was asked for what the session was never granted:\n%s", s)
	}
	policies := sts.seen()
	if len(policies) != 2 {
		t.Fatalf("STS was asked %d times, want once per broker for the session", len(policies))
	}
	for i, p := range policies {
		if !strings.Contains(p, "acme-archive/reports/2026/*") || strings.Contains(p, `acme-archive/*"`) {
			t.Fatalf("session policy %d = %s; want it limited to reports/2026/ (the grant the session started with)", i+1, p)
		}
	}
}

// TestACleanStopIsMarkedAndACrashIsNot: a broker stopped with SIGTERM
// saves every counter and leaves keyhole.clean-stop, so the next start
// need not count the sessions' calls in the audit log again; a starting
// broker takes the mark away before it serves, so a crash after it is
// never taken for a clean stop, and the counters survive both.
func TestACleanStopIsMarkedAndACrashIsNot(t *testing.T) {
	up, seen := methodUpstream(t)
	h := brokerHome(t, up.URL)
	h.writeConfig(restartConfig, up.URL, "GET")
	mark := filepath.Join(h.dir, "data", "keyhole", "keyhole.clean-stop")
	get := map[string]any{"method": "GET", "path": "/issues/1"}
	id, tok := h.newToken("tiny") // 3 calls

	serve, url := startServe(t, h)
	if text, isErr := callTool(t, connect(t, url, tok), "tracker", get); isErr {
		t.Fatalf("first call = %q", text)
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Fatalf("broker stopped with %v", err)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("after SIGTERM: %v; want the clean-stop mark", err)
	}

	serve, url = startServe(t, h)
	if _, err := os.Stat(mark); !os.IsNotExist(err) {
		t.Fatalf("a started broker left the clean-stop mark (%v)", err)
	}
	if text, isErr := callTool(t, connect(t, url, tok), "tracker", get); isErr {
		t.Fatalf("second call after a clean stop = %q", text)
	}
	serve.Process.Kill() // a crash: no mark
	serve.Wait()
	if _, err := os.Stat(mark); !os.IsNotExist(err) {
		t.Fatalf("after kill -9 the clean-stop mark exists (%v)", err)
	}

	_, url = startServe(t, h)
	c := connect(t, url, tok)
	if text, isErr := callTool(t, c, "tracker", get); isErr {
		t.Fatalf("third call = %q", text)
	}
	if text, isErr := callTool(t, c, "tracker", get); !isErr || !strings.Contains(text, "has used all 3 calls") {
		t.Fatalf("a fourth call of a 3-call session across a clean stop and a crash = %q; want max_calls", text)
	}
	if s := h.session(id); s.Calls != 4 {
		t.Fatalf("session after a clean stop, a crash and four calls = %+v, want 4 calls", s)
	}
	if n := seen("GET"); n != 3 {
		t.Fatalf("upstream received %d GETs, want 3", n)
	}
}
