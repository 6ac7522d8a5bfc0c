package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

const accessTestConfig = `version: 1
tools:
  github:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  ask:
    ttl: 2h
    on_deny: request
    max_denials: 3
    approval: {wait: 0s, ttl: 10m, max_open: 5}
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues]}
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/comments], approve: true}
`

// accessEnv is a broker with access requests on the test's clock, its
// socket's handler (MCP and the admin routes) on an httptest server.
type accessEnv struct {
	*httpEnv
	acc *access.Manager
}

func newAccessEnv(t *testing.T) *accessEnv { return accessEnvFor(t, accessTestConfig) }

// accessEnvFor is newAccessEnv with another config.
func accessEnvFor(t *testing.T, cfg string) *accessEnv {
	e := newEnv(t, cfg)
	acc, err := access.Open(access.Options{Path: e.dataDir.File(AccessFile), Key: e.vault.DeriveKey(accessKeyLabel),
		Audit: e.audit, History: e.audit, Now: e.clock.Now, NotifySend: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acc.Close() })
	e.broker = NewBroker(Options{Config: e.broker.Config(), Secrets: e.vault, Audit: e.auditLog, Access: acc, Now: e.clock.Now})
	store, err := sessions.Open(e.dataDir.File(SessionsFile), e.vault.DeriveKey(sessions.KeyLabel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &httpEnv{env: e, sessions: NewLiveSessions(store, LiveSessionsOptions{Configs: e.broker.Configs(), Now: e.clock.Now})}
	ops := &adminOps{vault: e.vault, sessions: func() (*LiveSessions, error) { return h.sessions, nil }, access: acc,
		config: func() (*config.Loaded, error) { return e.broker.Config(), nil }, logins: &pendingLogins{}}
	h.srv = httptest.NewServer(e.broker.SocketHandler(h.sessions, ops, nil))
	t.Cleanup(h.srv.Close)
	return &accessEnv{httpEnv: h, acc: acc}
}

func (a *accessEnv) agent(t *testing.T) (*client.Client, string) {
	t.Helper()
	c, id, _ := a.agentToken(t)
	return c, id
}

func (a *accessEnv) agentToken(t *testing.T) (*client.Client, string, string) {
	t.Helper()
	info, tok, err := a.sessions.Create(admin.SessionRequest{Scope: "ask", Label: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.client(tok)
	if err != nil {
		t.Fatal(err)
	}
	return c, info.ID, tok
}

// admin posts to an admin route of the socket and decodes the answer.
func (a *accessEnv) admin(t *testing.T, path, body string, out any) int {
	t.Helper()
	resp, err := http.Post(a.srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

func comment(t *testing.T, c *client.Client, issue, text string) *mcp.CallToolResult {
	t.Helper()
	return servertest.CallTool(t, c, "github", map[string]any{"method": "POST", "path": "/repos/acme/api/issues/" + issue + "/comments", "body": map[string]any{"body": text}})
}

// requestOf returns the request id a result that was not made names.
func requestOf(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	text := servertest.ResultText(res)
	i := strings.Index(text, "keyhole access approve acr_")
	if !res.IsError || i < 0 {
		t.Fatalf("result = %q, want a call waiting for approval", text)
	}
	return text[i+len("keyhole access approve ") : i+len("keyhole access approve ")+24]
}

func TestAccessApprovalExpiresByTheBrokerClock(t *testing.T) {
	a := newAccessEnv(t)
	c, _ := a.agent(t)
	id := requestOf(t, comment(t, c, "7", "triaged"))
	var r access.Request
	if code := a.admin(t, "/admin/access/"+id+"/approve", `{"note":"ok"}`, &r); code != http.StatusOK || r.State != access.StateApproved {
		t.Fatalf("approve = %d %+v", code, r)
	}
	a.clock.Advance(10 * time.Minute) // the approval's ttl
	second := requestOf(t, comment(t, c, "7", "triaged"))
	if second == id {
		t.Fatal("an approval past its ttl was used")
	}
	a.admin(t, "/admin/access/"+second+"/approve", `{}`, nil)
	a.clock.Advance(10*time.Minute - time.Second)
	if res := comment(t, c, "7", "triaged"); res.IsError {
		t.Fatalf("the repeat within the approval's ttl = %q", servertest.ResultText(res))
	}
	// An unanswered request expires with the sweep, and cannot be approved.
	third := requestOf(t, comment(t, c, "8", "x"))
	a.clock.Advance(10 * time.Minute)
	sweepAccess(a.acc, a.sessions)
	if code := a.admin(t, "/admin/access/"+third+"/approve", `{}`, nil); code != http.StatusConflict {
		t.Fatalf("approve of an expired request = %d, want 409", code)
	}
	if code := a.admin(t, "/admin/access/acr_aaaaaaaaaaaaaaaaaaaa/approve", `{}`, nil); code != http.StatusNotFound {
		t.Fatalf("approve of an unknown request = %d, want 404", code)
	}

	recs, err := a.audit.Query(audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, rec := range recs {
		switch {
		case strings.HasPrefix(rec.Tool, "keyhole.access."):
			trail = append(trail, strings.TrimPrefix(rec.Tool, "keyhole.access."))
		case rec.Tool == "github" && rec.Decision == audit.Deny:
			if rec.Code != access.CodePending || !strings.Contains(rec.Reason, ": waiting for a person's approval") {
				t.Fatalf("a call waiting for approval recorded as %+v", rec)
			}
			trail = append(trail, "call:pending")
		case rec.Tool == "github" && rec.Decision == audit.Allow:
			if !strings.HasPrefix(rec.Grant, "access request "+second+" approved once by os:") || rec.Status != http.StatusCreated {
				t.Fatalf("the approved call recorded as %+v", rec)
			}
			trail = append(trail, "call:allow")
		}
	}
	want := "request,call:pending,approve,expire,request,call:pending,approve,use,call:allow,request,call:pending,expire"
	if strings.Join(trail, ",") != want {
		t.Fatalf("audit trail =\n%s\nwant\n%s", strings.Join(trail, ","), want)
	}
	if rep, err := a.audit.Verify(); err != nil || !rep.OK {
		t.Fatalf("audit verify = %+v %v", rep, err)
	}
	if n := len(a.up.Requests()); n != 1 {
		t.Fatalf("upstream received %d requests, want the one approved", n)
	}
}

// A scope whose denials become requests counts no denial for asking,
// but a person's denial counts, and so does every request the session
// makes after one: a session that keeps asking trips its tripwire.
func TestAccessAskingAfterDenialsTripsTheTripwire(t *testing.T) {
	a := newAccessEnv(t)
	c, sid := a.agent(t)
	out := func(path string) *mcp.CallToolResult {
		return servertest.CallTool(t, c, "github", map[string]any{"method": "DELETE", "path": path})
	}
	ids := []string{requestOf(t, out("/repos/acme/api/issues/1")), requestOf(t, out("/repos/acme/api/issues/2"))}
	if info, _ := a.sessions.Show(sid); info.Denials != 0 {
		t.Fatalf("asking counted %d denials, want 0", info.Denials)
	}
	a.admin(t, "/admin/access/"+ids[0]+"/deny", `{"note":"no deletes"}`, nil)
	if info, _ := a.sessions.Show(sid); info.Denials != 1 {
		t.Fatalf("a person's denial counted %d denials, want 1", info.Denials)
	}
	requestOf(t, out("/repos/acme/api/issues/3")) // asked after a denial: 2
	res := out("/repos/acme/api/issues/4")        // 3: max_denials
	if info, _ := a.sessions.Show(sid); info.State != policy.StateEnded || info.Denials != 3 {
		t.Fatalf("after asking again and again = %+v (%q), want the session ended by its tripwire", info, servertest.ResultText(res))
	}
	get := mcp.CallToolRequest{}
	get.Params.Name, get.Params.Arguments = "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	if res, err := c.CallTool(context.Background(), get); err == nil {
		t.Fatalf("a call after the tripwire = %q, want the session's token refused", servertest.ResultText(res))
	}
	sweepAccess(a.acc, a.sessions)
	if open := a.acc.List(false); len(open) != 0 {
		t.Fatalf("requests of the ended session still open: %+v", open)
	}
}

// An approval --for-session is an exact grant kept with the session's
// record: another body on that method and path passes without asking,
// also when the broker serves the session anew; another path does not.
func TestAccessForSessionGrantIsKeptWithTheSession(t *testing.T) {
	a := newAccessEnv(t)
	c, sid, tok := a.agentToken(t)
	id := requestOf(t, comment(t, c, "7", "first"))
	if code := a.admin(t, "/admin/access/"+id+"/approve", `{"for_session":true}`, nil); code != http.StatusOK {
		t.Fatalf("approve --for-session = %d", code)
	}
	if res := comment(t, c, "7", "first"); res.IsError {
		t.Fatalf("the approved call = %q", servertest.ResultText(res))
	}
	info, _ := a.sessions.Show(sid)
	if len(info.Grants) != 1 || info.Grants[0].Request != id || info.Grants[0].Method != "POST" {
		t.Fatalf("session grants after --for-session = %+v", info.Grants)
	}
	// Served anew from its stored record (a broker restart).
	fresh := NewLiveSessions(a.sessions.store, LiveSessionsOptions{Configs: a.broker.Configs(), Now: a.clock.Now})
	s, err := fresh.Authenticate(tok)
	if err != nil {
		t.Fatal(err)
	}
	req := policy.Request{Tool: "github", Method: "POST", Segments: []string{"repos", "acme", "api", "issues", "7", "comments"}}
	if d := s.Decide(a.clock.Now(), req); !d.Allow || !strings.Contains(d.Grant, "by access request "+id) {
		t.Fatalf("the restored session's decision = %+v, want its exact grant", d)
	}
	req.Segments[4] = "8"
	if d := s.Decide(a.clock.Now(), req); d.Allow || d.Code != policy.CodeApprovalRequired {
		t.Fatalf("another path in the restored session = %+v, want approval_required", d)
	}
	if res := comment(t, c, "7", "second, another body"); res.IsError {
		t.Fatalf("another body on the granted method and path = %q", servertest.ResultText(res))
	}
	if n := len(a.acc.List(true)); n != 1 {
		t.Fatalf("%d requests, want only the first", n)
	}
}

// The sweep judges a session the broker does not serve yet from its
// stored record, without making it live (which would keep an idle broker
// running): an active one keeps its requests, a revoked one loses them.
func TestAccessSweepDoesNotRestoreSessions(t *testing.T) {
	a := newAccessEnv(t)
	c1, keep := a.agent(t)
	c2, gone := a.agent(t)
	kept := requestOf(t, comment(t, c1, "1", "x"))
	lost := requestOf(t, comment(t, c2, "2", "x"))
	if _, err := a.sessions.Revoke(gone, "", false, "by test"); err != nil {
		t.Fatal(err)
	}
	fresh := NewLiveSessions(a.sessions.store, LiveSessionsOptions{Configs: a.broker.Configs(), Now: a.clock.Now})
	sweepAccess(a.acc, fresh)
	if n := fresh.ActiveCount(); n != 0 {
		t.Fatalf("the sweep made %d sessions live", n)
	}
	if r, _ := a.acc.Show(kept); r.State != access.StateOpen {
		t.Fatalf("the request of active session %s is %s", keep, r.State)
	}
	if r, _ := a.acc.Show(lost); r.State != access.StateExpired || !strings.Contains(r.Ended, "revoked") {
		t.Fatalf("the request of revoked session %s is %s (%s)", gone, r.State, r.Ended)
	}
}
