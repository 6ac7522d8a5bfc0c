package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

func TestToolsListShowsOnlyTheScopesTools(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, _ := e.connect("triage")
	res, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	if got, want := strings.Join(names, ","), "github,issue_titles"; got != want {
		t.Fatalf("tools/list = %s, want %s (admin is not granted)", got, want)
	}
	gh := res.Tools[0]
	for _, want := range []string{"GET /repos/acme/api/issues/*", "POST /repos/acme/api/issues/*/comments"} {
		if !strings.Contains(gh.Description, want) {
			t.Errorf("github description %q does not say the scope allows %q", gh.Description, want)
		}
	}
}

func TestAllowedCallInjectsTheRealKeyServerSide(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, wire := e.connect("triage")
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/1"})
	if res.IsError {
		t.Fatalf("allowed call failed: %s", servertest.ResultText(res))
	}
	reqs := e.up.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream received %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if got.Method != "GET" || got.RawPath != "/repos/acme/api/issues/1" {
		t.Fatalf("upstream received %s %s, want GET /repos/acme/api/issues/1", got.Method, got.RawPath)
	}
	if auth := got.Header.Values("Authorization"); len(auth) != 1 || auth[0] != "Bearer "+testSecret {
		t.Fatalf("upstream Authorization = %q, want exactly the injected bearer token", auth)
	}
	if !strings.Contains(servertest.ResultText(res), "Crash on start") {
		t.Fatalf("result does not carry the upstream body: %s", servertest.ResultText(res))
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
}

func TestTemplatedToolProjectsFields(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, wire := e.connect("triage")
	res := servertest.CallTool(t, c, "issue_titles", map[string]any{"owner": "acme", "repo": "api"})
	if res.IsError {
		t.Fatalf("templated call failed: %s", servertest.ResultText(res))
	}
	if reqs := e.up.Requests(); len(reqs) != 1 || reqs[0].RawPath != "/repos/acme/api/issues" {
		t.Fatalf("upstream received %+v, want one GET /repos/acme/api/issues", reqs)
	}
	text := servertest.ResultText(res)
	if !strings.Contains(text, "Crash on start") || strings.Contains(text, "login") || strings.Contains(text, `"state"`) {
		t.Fatalf("projection leaked unlisted fields or lost listed ones: %s", text)
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
}

func TestInvariant1_EchoedCredentialIsScrubbed(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, wire := e.connect("triage")
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/echo"})
	if res.IsError {
		t.Fatalf("echo call failed: %s", servertest.ResultText(res))
	}
	if !strings.Contains(servertest.ResultText(res), "[REDACTED]") {
		t.Fatalf("echo result shows no redaction: %s", servertest.ResultText(res))
	}
	if strings.Contains(strings.ToLower(string(wire.Bytes())), "set-cookie") {
		t.Fatalf("Set-Cookie reached the agent: %s", wire.Bytes())
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
	recs := e.records()
	if len(recs) != 1 || !recs[0].Scrubbed {
		t.Fatalf("audit = %+v, want one record flagged scrubbed", recs)
	}
	raw, _ := json.Marshal(recs)
	assertNoSecret(t, "audit records", raw)
	assertNoSecret(t, "logs", []byte(e.logs.String()))
}

// hostileCalls are arguments a prompt-injected agent might send. Each must
// be refused with the upstream untouched.
var hostileCalls = []struct {
	name string
	tool string
	args map[string]any
}{
	{"traversal raw", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/../../../admin"}},
	{"traversal to admin", "github", map[string]any{"method": "GET", "path": "/../../admin"}},
	{"encoded slash traversal", "github", map[string]any{"method": "GET", "path": "/a/..%2f..%2fadmin"}},
	{"encoded dots", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/%2e%2e/%2e%2e/admin"}},
	{"semicolon dots", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/..;/admin"}},
	{"backslash", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/a\\..\\admin"}},
	{"encoded backslash", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/%5c..%5cadmin"}},
	{"overlong utf8 dot", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/%c0%ae%c0%ae/admin"}},
	{"double encoded dots", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/%252e%252e/admin"}},
	{"scheme relative", "github", map[string]any{"method": "GET", "path": "//evil.com/x"}},
	{"absolute url", "github", map[string]any{"method": "GET", "path": "http://evil.com/repos/acme/api/issues"}},
	{"userinfo", "github", map[string]any{"method": "GET", "path": "@evil.com/repos"}},
	{"host port", "github", map[string]any{"method": "GET", "path": "evil.com:443/x"}},
	{"double backslash", "github", map[string]any{"method": "GET", "path": "\\\\evil.com"}},
	{"crlf in path", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues\r\nX-Inj: 1"}},
	{"nul in path", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/%00"}},
	{"crlf in query", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "query": map[string]any{"q": "a\r\nX-Inj: 1"}}},
	{"crlf in header", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "headers": map[string]any{"X-Note": "v\r\nX-Inj: 1"}}},
	{"authorization header", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "headers": map[string]any{"Authorization": "Bearer evil"}}},
	{"authorization lower", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "headers": map[string]any{"authorization": "Bearer evil"}}},
	{"cookie header", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "headers": map[string]any{"Cookie": "a=b"}}},
	{"host header", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "headers": map[string]any{"Host": "evil.com"}}},
	{"proxy header", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "headers": map[string]any{"Proxy-Authorization": "x"}}},
	{"transfer encoding", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "headers": map[string]any{"Transfer-Encoding": "chunked"}}},
	{"lower-case method", "github", map[string]any{"method": "get", "path": "/repos/acme/api/issues"}},
	{"method trailing space", "github", map[string]any{"method": "GET ", "path": "/repos/acme/api/issues"}},
	{"connect method", "github", map[string]any{"method": "CONNECT", "path": "/repos/acme/api/issues"}},
	{"trace method", "github", map[string]any{"method": "TRACE", "path": "/repos/acme/api/issues"}},
	{"empty method", "github", map[string]any{"method": "", "path": "/repos/acme/api/issues"}},
	{"missing method", "github", map[string]any{"path": "/repos/acme/api/issues"}},
	{"wrong type", "github", map[string]any{"method": 7, "path": "/repos/acme/api/issues"}},
	{"unknown argument", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "url": "http://evil.com"}},
	{"delete not granted", "github", map[string]any{"method": "DELETE", "path": "/repos/acme/api/issues/1"}},
	{"close via patch", "github", map[string]any{"method": "PATCH", "path": "/repos/acme/api/issues/1", "body": map[string]any{"state": "closed"}}},
	{"other repo", "github", map[string]any{"method": "GET", "path": "/repos/acme/billing/issues"}},
	{"case differs", "github", map[string]any{"method": "GET", "path": "/repos/ACME/api/issues"}},
	{"post to labels", "github", map[string]any{"method": "POST", "path": "/repos/acme/api/issues/7/labels"}},
	{"body on get", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "body": "x"}},
	{"template traversal", "issue_titles", map[string]any{"owner": "acme/../../admin", "repo": "api"}},
	{"template encoded slash", "issue_titles", map[string]any{"owner": "a%2fb", "repo": "api"}},
	{"template dotdot", "issue_titles", map[string]any{"owner": "..", "repo": "api"}},
	{"template empty", "issue_titles", map[string]any{"owner": "", "repo": "api"}},
	{"template other org", "issue_titles", map[string]any{"owner": "evilcorp", "repo": "api"}},
	{"tool outside scope", "admin", map[string]any{"method": "GET", "path": "/admin"}},
	{"tool that does not exist", "shell", map[string]any{"cmd": "id"}},
	// Over the 1 MiB cap of arguments, under the 4 MiB cap of a message
	// (a larger message is refused before it is a call: see
	// TestBadInputDoesNotEndASession).
	{"huge argument", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "body": strings.Repeat("A", 2<<20)}},
}

func TestInvariant2_DenyByDefault_HostileInputsReachNothing(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, wire := e.connect("triage")
	for i, tc := range hostileCalls {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.records())
			req := mcp.CallToolRequest{}
			req.Params.Name = tc.tool
			req.Params.Arguments = tc.args
			res, err := c.CallTool(context.Background(), req)
			switch {
			case err != nil:
				// Unknown and out-of-scope tools are a JSON-RPC error, exactly like a tool that does not exist.
				if !strings.Contains(err.Error(), "not found") {
					t.Fatalf("call %d: JSON-RPC error %v, want a tool-not-found error", i, err)
				}
			case !res.IsError:
				t.Fatalf("call %d was allowed: %s", i, servertest.ResultText(res))
			case strings.Contains(servertest.ResultText(res), "\r") || strings.Contains(servertest.ResultText(res), "\n"+"X-Inj"):
				t.Fatalf("denial echoes control bytes: %q", servertest.ResultText(res))
			}
			if n := len(e.up.Requests()); n != 0 {
				t.Fatalf("upstream received %d requests: %+v", n, e.up.Requests())
			}
			recs := e.records()
			if len(recs) != before+1 {
				t.Fatalf("audit has %d new records, want exactly 1", len(recs)-before)
			}
			if d := recs[len(recs)-1].Decision; d != "deny" {
				t.Fatalf("audit decision = %s, want deny", d)
			}
		})
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
}

func TestInvariant5_ExpiredSessionGetsNothing(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, _ := e.connect("triage")
	if res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}); res.IsError {
		t.Fatalf("call before expiry failed: %s", servertest.ResultText(res))
	}
	e.clock.Advance(time.Hour + time.Second)
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "expired") {
		t.Fatalf("call after ttl = %s, want an expiry denial", servertest.ResultText(res))
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("upstream received %d requests, want only the one before expiry", n)
	}
}

func TestMaxCallsAndTripwire(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, _ := e.connect("tiny")
	servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/nope"})
	servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/nope"})
	// Two denials trip the session: even a granted call is now refused.
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	if !res.IsError {
		t.Fatalf("call after the tripwire was allowed: %s", servertest.ResultText(res))
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("upstream received %d requests, want 0", n)
	}
}

func TestInvariant6_EveryCallHasExactlyOneRecord(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, _ := e.connect("triage")
	calls := []map[string]any{
		{"method": "GET", "path": "/repos/acme/api/issues"},
		{"method": "DELETE", "path": "/repos/acme/api/issues/1"},
		{"method": "POST", "path": "/repos/acme/api/issues/1/comments", "body": map[string]any{"body": "hi"}},
		{"method": "GET", "path": "/../x"},
	}
	for _, a := range calls {
		servertest.CallTool(t, c, "github", a)
	}
	recs := e.records()
	if len(recs) != len(calls) {
		t.Fatalf("audit has %d records for %d calls", len(recs), len(calls))
	}
	want := []audit.Decision{"allow", "deny", "allow", "deny"}
	for i, r := range recs {
		if r.Decision != want[i] || r.Session == "" || r.Scope != "triage" || r.Client != "keyhole-test/1.0" || r.Credential != "github_token" {
			t.Errorf("record %d = %+v, want decision %s with session, scope, client and credential name", i, r, want[i])
		}
	}
	if recs[0].Status != 200 || recs[0].Method != "GET" || recs[0].Path != "/repos/acme/api/issues" {
		t.Errorf("allowed record = %+v, want GET /repos/acme/api/issues status 200", recs[0])
	}
	if recs[1].Reason == "" || !strings.Contains(recs[1].Reason, "DELETE /repos/acme/api/issues/1") {
		t.Errorf("denied record reason %q does not name the request", recs[1].Reason)
	}
	rep, err := e.audit.Verify()
	if err != nil || !rep.OK {
		t.Fatalf("audit verify = %+v, %v", rep, err)
	}
}

// failingAudit fails every write, as a full disk would.
type failingAudit struct{}

func (failingAudit) Begin(context.Context, audit.Record) (PendingRecord, error) {
	return nil, errors.New("disk full")
}
func (failingAudit) Write(context.Context, audit.Record) (uint64, error) {
	return 0, errors.New("disk full")
}

func TestInvariant6_AuditFailureFailsClosed(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.broker.audit = failingAudit{}
	c, wire := e.connect("triage")
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "audit") {
		t.Fatalf("call with a failing audit = %s, want an audit error", servertest.ResultText(res))
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("upstream received %d requests though the intent was not recorded", n)
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
}

func TestInvariant8_StdioSurvivesGarbageAndHugeLines(t *testing.T) {
	e := newEnv(t, baseConfig)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.broker.ServeStdio(context.Background(), "triage", inR, outW); outW.Close() }()
	lines := make(chan string, 16)
	go servertest.ReadLines(outR, lines)

	send := func(s string) {
		if _, err := inW.Write([]byte(s + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	send("this is not json")
	expectLine(t, lines, `"code":-32700`)
	send(`{"jsonrpc":"2.0","id":1,"method":"ping","params":` + strings.Repeat(" ", MaxMessageBytes+10) + `{}}`)
	expectLine(t, lines, `"id":1,"error":{"code":-32600,"message":"message too large: keyhole accepts JSON-RPC messages of at most 4 MiB`)
	send(`{"jsonrpc":"2.0","id":9,"method":"ping","params":"` + strings.Repeat("x", 5*MaxMessageBytes) + `"}`)
	expectLine(t, lines, `"id":null,"error":{"code":-32600`)
	send(`{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
	expectLine(t, lines, `"id":2`)
	send(`{"jsonrpc":"2.0","id":3,"method":"ping"}`)
	expectLine(t, lines, `"id":3`)
	inW.Close()
	if err := <-done; err != nil {
		t.Fatalf("ServeStdio: %v", err)
	}
}

func TestNoSecretInLogsAtDebug(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, _ := e.connect("triage")
	servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/echo"})
	servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "query": map[string]any{"x": testSecret}})
	assertNoSecret(t, "logs", []byte(e.logs.String()))
	raw, _ := json.Marshal(e.records())
	assertNoSecret(t, "audit records", raw)
}

// records returns the audit records of calls, leaving out those of the
// operator's changes (keyhole.session.new, …).
func (e *env) records() []audit.Record {
	e.t.Helper()
	var calls []audit.Record
	for _, r := range e.allRecords() {
		if !strings.HasPrefix(r.Tool, "keyhole.") {
			calls = append(calls, r)
		}
	}
	return calls
}

// allRecords returns every audit record.
func (e *env) allRecords() []audit.Record {
	e.t.Helper()
	recs, err := e.audit.Query(audit.Filter{})
	if err != nil {
		e.t.Fatalf("audit query: %v", err)
	}
	return recs
}

func expectLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	select {
	case l := <-lines:
		if !strings.Contains(l, want) {
			t.Fatalf("got line %.200s, want one containing %s", l, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no response containing %s", want)
	}
}
