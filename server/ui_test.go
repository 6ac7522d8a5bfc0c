package server

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/console"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// uiTestConfig holds a comment call for a person's answer for up to ten
// minutes: the test answers it in the console, never by the clock.
const uiTestConfig = `version: 1
tools:
  github:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  held:
    ttl: 1h
    approval: {wait: 10m, ttl: 10m}
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues, /repos/acme/api/issues/*, /echo]}
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/comments], approve: true}
`

// uiEnv is a broker with access requests, its MCP over HTTP, and its
// console wired as `keyhole serve --ui` wires it.
type uiEnv struct {
	*httpEnv
	acc *access.Manager
	con *console.Console
	ui  *httptest.Server
}

func newUIEnv(t *testing.T) *uiEnv {
	a := accessEnvFor(t, uiTestConfig)
	e, h, acc := a.env, a.httpEnv, a.acc
	u := &uiEnv{httpEnv: h, acc: acc, ui: httptest.NewUnstartedServer(nil)}
	co := consoleOptions(e.broker, e.audit, e.vault, acc, h.sessions)
	co.BaseURL, co.Loopback = "http://"+u.ui.Listener.Addr().String(), true
	var err error
	if u.con, err = console.New(co); err != nil {
		t.Fatal(err)
	}
	u.ui.Config.Handler = u.con.Handler()
	u.ui.Start()
	t.Cleanup(func() {
		u.con.Close()
		u.ui.Close()
	})
	return u
}

// signIn signs a browser in through a login link of the console.
func (u *uiEnv) signIn(t *testing.T) *servertest.Browser {
	t.Helper()
	link, _, err := u.con.LoginURL()
	if err != nil {
		t.Fatal(err)
	}
	b := servertest.NewBrowser(u.ui.URL)
	if err := b.SignIn(link); err != nil {
		t.Fatal(err)
	}
	return b
}

func page(t *testing.T, b *servertest.Browser, path string) string {
	t.Helper()
	resp, body, err := b.Do(http.MethodGet, path, nil, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %v, %v:\n%s", path, resp.StatusCode, err, body)
	}
	return body
}

var requestID = regexp.MustCompile(`data-request="(acr_[a-z2-7]{20})"`)

// A call held for approval completes the moment a person approves it in
// the console, the approval names the console session, and a revocation
// in the console refuses the session's next call.
func TestConsoleApprovesAHeldCallAndRevokesItsSession(t *testing.T) {
	u := newUIEnv(t)
	tok := u.token("held")
	agent, err := u.client(tok)
	if err != nil {
		t.Fatal(err)
	}
	b := u.signIn(t)

	events, stop := u.acc.Watch()
	type result struct {
		res *mcp.CallToolResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "github"
		req.Params.Arguments = map[string]any{"method": "POST", "path": "/repos/acme/api/issues/7/comments", "body": map[string]any{"body": "triaged"}}
		res, err := agent.CallTool(context.Background(), req)
		done <- result{res, err}
	}()
	for ev := range events {
		if ev.Type == access.EventRequest {
			break
		}
	}
	stop()
	list := page(t, b, "/ui/access")
	m := requestID.FindStringSubmatch(list)
	if m == nil || !strings.Contains(list, "POST") || !strings.Contains(list, "/repos/acme/api/issues/7/comments") {
		t.Fatalf("the access page does not show the held call:\n%s", list)
	}
	if n := len(u.up.Requests()); n != 0 {
		t.Fatalf("the upstream received %d requests before the approval, want 0", n)
	}
	resp, body, err := b.Post("/ui/access/"+m[1]+"/approve", url.Values{"scope": {"once"}, "back": {"list"}})
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("approve = %v %v:\n%s", resp.StatusCode, err, body)
	}
	r := <-done
	if r.err != nil || r.res.IsError || !strings.HasPrefix(servertest.ResultText(r.res), "HTTP 201") {
		t.Fatalf("the held call after the approval = %v, %+v; want the upstream's 201", r.err, r.res)
	}
	recs, err := u.audit.Query(audit.Filter{Tool: access.AuditTool(access.EventApprove)})
	if err != nil || len(recs) != 1 || !strings.Contains(recs[0].Reason, "approved once by console:con_") || !strings.Contains(recs[0].Reason, "(os:") {
		t.Fatalf("the approval's audit record = %+v, %v; want one naming the console session", recs, err)
	}

	info, err := u.sessions.List(false)
	if err != nil || len(info) != 1 {
		t.Fatalf("sessions = %v, %v", info, err)
	}
	resp, body, err = b.Post("/ui/sessions/"+info[0].ID+"/revoke", nil)
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke = %v %v:\n%s", resp.StatusCode, err, body)
	}
	// Over HTTP the front door refuses the revoked session's token (401).
	req := mcp.CallToolRequest{}
	req.Params.Name = "github"
	req.Params.Arguments = map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	if res, err := agent.CallTool(context.Background(), req); err == nil && !res.IsError {
		t.Fatalf("the call after the revocation = %q, want it refused", servertest.ResultText(res))
	}
	for _, r := range u.up.Requests() {
		if r.Method == http.MethodGet {
			t.Fatalf("the upstream received %s %s after the revocation", r.Method, r.Path)
		}
	}
	if got := page(t, b, "/ui/sessions/"+info[0].ID); !strings.Contains(got, "revoked by console:con_") {
		t.Fatalf("the session's page does not say who revoked it:\n%s", got)
	}
	revs, err := u.audit.Query(audit.Filter{Tool: ToolSessionRevoke})
	if err != nil || len(revs) != 1 || revs[0].Session != info[0].ID || !strings.Contains(revs[0].Reason, "revoked by console:con_") || revs[0].Operator == "" {
		t.Fatalf("the revocation's change record = %+v, %v; want one naming the session and the console session", revs, err)
	}
}

// Invariant 1: no form of a secret appears on any page of the console
// or in its event streams, even after the upstream echoed it.
func TestInvariant1_ConsoleShowsNoFormOfASecret(t *testing.T) {
	u := newUIEnv(t)
	agent, err := u.client(u.token("held"))
	if err != nil {
		t.Fatal(err)
	}
	if res := servertest.CallTool(t, agent, "github", map[string]any{"method": "GET", "path": "/echo", "query": map[string]any{"q": "x"}}); res.IsError {
		t.Fatalf("echo = %q", servertest.ResultText(res))
	}
	servertest.CallTool(t, agent, "github", map[string]any{"method": "DELETE", "path": "/repos/acme/api"})
	b := u.signIn(t)
	tail := openEvents(t, b, "/ui/audit/events?after=0")
	var pages []string
	for _, p := range []string{"/ui/", "/ui/sessions", "/ui/sessions?all=1", "/ui/audit", "/ui/audit/1", "/ui/audit/2", "/ui/access?all=1", "/ui/secrets", "/ui/config", "/ui/blast-radius"} {
		pages = append(pages, page(t, b, p))
	}
	info, _ := u.sessions.List(true)
	for _, s := range info {
		pages = append(pages, page(t, b, "/ui/sessions/"+s.ID))
	}
	for i, p := range pages {
		servertest.AssertNoSecret(t, "console page "+string(rune('a'+i)), p, testSecret)
	}
	if !strings.Contains(pages[7], "github_token") {
		t.Fatalf("the secrets page does not list github_token:\n%s", pages[7])
	}
	last, err := u.audit.Query(audit.Filter{Limit: 1})
	if err != nil || len(last) != 1 {
		t.Fatalf("the last record = %v, %v", last, err)
	}
	servertest.AssertNoSecret(t, "the audit event stream", tail.upTo(t, `"seq":`+strconv.FormatUint(last[0].Seq, 10)+`,`), testSecret)
}

// events is an open event stream of the console.
type events struct{ lines chan string }

func openEvents(t *testing.T, b *servertest.Browser, path string) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.Base+path, nil)
	resp, err := b.Client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %v, %v", path, resp, err)
	}
	e := &events{lines: make(chan string, 1024)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			e.lines <- sc.Text()
		}
		close(e.lines)
	}()
	return e
}

// upTo returns what the stream sent up to the line that holds marker.
func (e *events) upTo(t *testing.T, marker string) string {
	t.Helper()
	var b strings.Builder
	for line := range e.lines {
		b.WriteString(line + "\n")
		if strings.Contains(line, marker) {
			return b.String()
		}
	}
	t.Fatalf("the stream ended before %q:\n%s", marker, b.String())
	return ""
}
