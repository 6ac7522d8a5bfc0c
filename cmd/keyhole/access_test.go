package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// hookSecret signs the webhook's posts; like cliSecret, it must never
// appear anywhere.
const hookSecret = "whsec_CLIhookSigningValue_7f6e5d4c3b2a"

// accessConfig has three scopes over one tracker tool: held (a call with
// approval waits 10 minutes, so a test answers it by command, never by
// the clock), quick (a call is answered at once with the request to
// approve) and tight (quick, with max_open 2). Labels need approval;
// anything outside the grants becomes a request in held and quick.
const accessConfig = `version: 1
tools:
  tracker:
    kind: http
    base_url: %[1]s
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  held:
    ttl: 1h
    on_deny: request
    approval: {wait: 10m, ttl: 10m, notify: true, webhook: %[2]s, webhook_secret: hook_key}
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues, /issues/*]}
      - {tool: tracker, methods: [POST], paths: [/issues/*/labels], approve: true}
  quick:
    ttl: 1h
    on_deny: request
    approval: {wait: 0s, ttl: 10m, max_open: 10}
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues, /issues/*]}
      - {tool: tracker, methods: [POST], paths: [/issues/*/labels], approve: true}
  tight:
    ttl: 1h
    approval: {wait: 0s, max_open: 2}
    grants:
      - {tool: tracker, methods: [POST], paths: [/issues/*/labels], approve: true}
`

// accessHome is a home whose config is accessConfig against up, with a
// webhook receiver and a notify-send that writes its arguments to a file.
type accessHome struct {
	*home
	up     *servertest.Upstream
	hooks  chan []byte
	notify string // the file notify-send appends to
}

func newAccessHome(t *testing.T) *accessHome {
	h := &accessHome{home: newHome(t), hooks: make(chan []byte, 256)}
	h.up = servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if access.Sign([]byte(hookSecret), r.Header.Get(access.HeaderTimestamp), body) != r.Header.Get(access.HeaderSignature) {
			t.Errorf("webhook post with a bad signature: %s", body)
		}
		h.hooks <- body
	}))
	t.Cleanup(hook.Close)
	bin := filepath.Join(h.dir, "bin")
	os.MkdirAll(bin, 0o700)
	h.notify = filepath.Join(h.dir, "notifications")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> " + h.notify + "\n"
	if err := os.WriteFile(filepath.Join(bin, "notify-send"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	for i, e := range h.env {
		if strings.HasPrefix(e, "PATH=") {
			h.env[i] = "PATH=" + bin + ":" + strings.TrimPrefix(e, "PATH=")
		}
	}
	h.ok("", "init")
	h.ok(cliSecret, "secret", "set", "github_token")
	h.ok(hookSecret, "secret", "set", "hook_key")
	cfg := fmt.Sprintf(accessConfig, h.up.URL, hook.URL+"/keyhole")
	if err := os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h.killBrokerAtCleanup(t)
	return h
}

// agent starts `keyhole stdio --scope scope` as an editor would.
func (h *accessHome) agent(t *testing.T, scope string) *client.Client {
	t.Helper()
	c, err := servertest.StartCommand(binary, h.dir, h.env, []string{"stdio", "--scope", scope}, "editor")
	if err != nil {
		t.Fatalf("keyhole stdio --scope %s: %v", scope, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// callTracker calls the tracker tool. It may run on any goroutine.
func callTracker(c *client.Client, method, path string, body any, query map[string]any) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = "tracker"
	args := map[string]any{"method": method, "path": path}
	if body != nil {
		args["body"] = body
	}
	if query != nil {
		args["query"] = query
	}
	req.Params.Arguments = args
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return c.CallTool(ctx, req)
}

type called struct {
	res *mcp.CallToolResult
	err error
}

// held starts a call on its own goroutine.
func held(c *client.Client, method, path string, body any) <-chan called {
	out := make(chan called, 1)
	go func() {
		res, err := callTracker(c, method, path, body, nil)
		out <- called{res, err}
	}()
	return out
}

func heldResult(t *testing.T, ch <-chan called) *mcp.CallToolResult {
	t.Helper()
	select {
	case c := <-ch:
		if c.err != nil {
			t.Fatalf("held call: %v", c.err)
		}
		return c.res
	case <-time.After(3 * time.Minute):
		t.Fatal("the held call did not return")
		return nil
	}
}

// requests lists access requests through the binary.
func (h *accessHome) requests(t *testing.T, all bool) []access.Request {
	t.Helper()
	args := []string{"access", "list", "--json"}
	if all {
		args = append(args, "--all")
	}
	out := h.ok("", args...).stdout
	var list []access.Request
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r access.Request
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("access list --json: %v\n%s", err, out)
		}
		list = append(list, r)
	}
	return list
}

// waitRequest waits until a request matching ok is listed.
func (h *accessHome) waitRequest(t *testing.T, what string, ok func(access.Request) bool) access.Request {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for _, r := range h.requests(t, true) {
			if ok(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access request %s: %+v", what, h.requests(t, true))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func heldOn(path string, n int) func(access.Request) bool {
	return func(r access.Request) bool {
		return r.Call.Path == path && r.State == access.StateOpen && r.Waiting >= n
	}
}

// pendingID is the request id a call that was not made names.
func pendingID(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	text := servertest.ResultText(res)
	i := strings.Index(text, "keyhole access approve acr_")
	if !res.IsError || i < 0 {
		t.Fatalf("result = %q, want a call not made, naming the request to approve", text)
	}
	return text[i+len("keyhole access approve ") : i+len("keyhole access approve ")+24]
}

type accessRecord struct {
	Tool     string `json:"tool"`
	Session  string `json:"session"`
	Decision string `json:"decision"`
	Code     string `json:"code"`
	Reason   string `json:"reason"`
	Grant    string `json:"grant"`
	Path     string `json:"path"`
	Method   string `json:"method"`
}

func (h *accessHome) audit(t *testing.T) []accessRecord {
	t.Helper()
	out := h.ok("", "audit", "tail", "-n", "100000", "--json").stdout
	var recs []accessRecord
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r accessRecord
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

// steps are the keyhole.access.* records of request id, in order.
func steps(recs []accessRecord, id string) []string {
	var out []string
	for _, r := range recs {
		if strings.HasPrefix(r.Tool, "keyhole.access.") && strings.HasPrefix(r.Reason, id+": ") {
			out = append(out, strings.TrimPrefix(r.Tool, "keyhole.access."))
		}
	}
	return out
}

func (h *accessHome) upstreamPosts() []servertest.Request {
	var out []servertest.Request
	for _, r := range h.up.Requests() {
		if r.Method == http.MethodPost {
			out = append(out, r)
		}
	}
	return out
}

// TestAccessRequestHeldCallCompletesAfterApprove is the whole story
// through the binary: an agent's call that needs approval is held; the
// person reads it with access show and approves it; the call completes,
// once, exactly as asked; the notification, the webhook and every audit
// step say so, and no form of either secret appears anywhere.
func TestAccessRequestHeldCallCompletesAfterApprove(t *testing.T) {
	h := newAccessHome(t)
	agent := h.agent(t, "held")
	body := map[string]any{"labels": []string{"bug"}}
	call := held(agent, "POST", "/issues/7/labels", body)
	r := h.waitRequest(t, "held on /issues/7/labels", heldOn("/issues/7/labels", 1))
	if len(h.upstreamPosts()) != 0 {
		t.Fatal("the upstream received the call before it was approved")
	}

	show := h.ok("", "access", "show", r.ID).stdout
	for _, want := range []string{r.ID + " — open", "tracker: POST 127.0.0.1", "/issues/7/labels", `| {"labels":["bug"]}`,
		"Content-Type: application/json", "github_token (injected by keyhole", "risks      write, new path", "keyhole access approve " + r.ID, "client editor/1.0"} {
		if !strings.Contains(show, want) {
			t.Errorf("access show lacks %q:\n%s", want, show)
		}
	}
	if list := h.ok("", "access", "list").stdout; !strings.Contains(list, r.ID) || !strings.Contains(list, "tracker: POST") {
		t.Fatalf("access list = %q", list)
	}

	approve := h.ok("", "access", "approve", r.ID, "--note", "labels are fine")
	if !strings.Contains(approve.stdout, "approved "+r.ID+" once") {
		t.Fatalf("access approve = %q", approve.stdout)
	}
	res := heldResult(t, call)
	if res.IsError || !strings.Contains(servertest.ResultText(res), `"ok":true`) {
		t.Fatalf("the approved call = %q", servertest.ResultText(res))
	}
	posts := h.upstreamPosts()
	if len(posts) != 1 || posts[0].Path != "/issues/7/labels" || string(posts[0].Body) != `{"labels":["bug"]}` || posts[0].Header.Get("Authorization") != "Bearer "+cliSecret {
		t.Fatalf("upstream received %+v, want the approved POST once with the key", posts)
	}
	if r := h.run("", "access", "approve", r.ID); r.code != 1 || !strings.Contains(r.stderr, "is used") {
		t.Fatalf("approving a used request = exit %d %q", r.code, r.stderr)
	}

	// The same call again is a new request: the approval was used.
	again := held(agent, "POST", "/issues/7/labels", body)
	r2 := h.waitRequest(t, "for the repeat", func(x access.Request) bool { return x.ID != r.ID && heldOn("/issues/7/labels", 1)(x) })
	h.ok("", "access", "deny", r2.ID, "--note", "once was enough")
	res = heldResult(t, again)
	if text := servertest.ResultText(res); !res.IsError || !strings.Contains(text, "denied access request "+r2.ID) || !strings.Contains(text, "once was enough") {
		t.Fatalf("the denied repeat = %q", text)
	}
	if len(h.upstreamPosts()) != 1 {
		t.Fatal("the upstream received the denied call")
	}

	recs := h.audit(t)
	if got := steps(recs, r.ID); strings.Join(got, ",") != "request,approve,use" {
		t.Fatalf("audit of %s = %v", r.ID, got)
	}
	if got := steps(recs, r2.ID); strings.Join(got, ",") != "request,deny" {
		t.Fatalf("audit of %s = %v", r2.ID, got)
	}
	var approved, denied bool
	me, _ := user.Current()
	for _, rec := range recs {
		switch {
		case rec.Tool == "keyhole.access.approve" && strings.Contains(rec.Reason, "by os:") && strings.Contains(rec.Reason, "note: labels are fine"):
			approved = me == nil || strings.Contains(rec.Reason, "os:"+me.Username)
		case rec.Tool == "tracker" && rec.Method == "POST" && rec.Decision == "allow":
			if !strings.Contains(rec.Grant, "access request "+r.ID+" approved once by os:") {
				t.Fatalf("the approved call's record grant = %q", rec.Grant)
			}
		case rec.Tool == "tracker" && rec.Method == "POST" && rec.Decision == "deny":
			denied = rec.Code == access.CodeDenied && strings.HasPrefix(rec.Reason, r2.ID+": denied by os:")
		}
	}
	if !approved || !denied {
		t.Fatalf("audit lacks who approved (%v) or the denied call (%v): %+v", approved, denied, recs)
	}
	if v := h.ok("", "audit", "verify"); !strings.Contains(v.stdout, "chain intact") {
		t.Fatalf("audit verify: %s", v.stdout)
	}

	// The webhook got every step, signed; the desktop the two requests.
	var hooks []string
	for len(hooks) < 5 {
		select {
		case b := <-h.hooks:
			var wb access.WebhookBody
			json.Unmarshal(b, &wb)
			hooks = append(hooks, wb.Event+" "+wb.Request.ID)
		case <-time.After(time.Minute):
			t.Fatalf("webhook received %v, want request, approve, use, request, deny", hooks)
		}
	}
	want := []string{"access.request " + r.ID, "access.approve " + r.ID, "access.use " + r.ID, "access.request " + r2.ID, "access.deny " + r2.ID}
	if strings.Join(hooks, ",") != strings.Join(want, ",") {
		t.Fatalf("webhook events = %v, want %v", hooks, want)
	}
	note := h.waitFile(t, h.notify, r2.ID)
	if !strings.Contains(note, "keyhole access approve "+r.ID) || !strings.Contains(note, "tracker: POST") {
		t.Fatalf("desktop notifications = %q", note)
	}
	h.assertNowhere(show, approve.stdout, note, servertest.ResultText(res))
	for _, f := range []string{show, note} {
		servertest.AssertNoSecret(t, "output", f, hookSecret)
	}
}

// waitFile waits until the file holds want and returns its content.
func (h *accessHome) waitFile(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lacks %q: %q", path, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInvariant7_ApprovedRequestOnly: a
// call beyond the scope reaches the upstream only after a person approved
// it, shown exactly what it adds (access show: the request, the risks,
// "outside the scope"); the agent is told which request to have approved;
// once it is, the exact repeat proceeds, once, and a repeat with another
// body, path or query does not.
func TestInvariant7_ApprovedRequestOnly(t *testing.T) {
	h := newAccessHome(t)
	agent := h.agent(t, "quick")
	body := map[string]any{"labels": []string{"bug"}}
	query := map[string]any{"notify": "no"}
	res, err := callTracker(agent, "POST", "/issues/7/labels", body, query)
	if err != nil {
		t.Fatal(err)
	}
	id := pendingID(t, res)
	text := servertest.ResultText(res)
	if !strings.Contains(text, "was not made") || !strings.Contains(text, "repeat exactly the same call") {
		t.Fatalf("pending result = %q", text)
	}
	h.ok("", "access", "approve", id)
	for name, other := range map[string]func() (*mcp.CallToolResult, error){
		"another body": func() (*mcp.CallToolResult, error) {
			return callTracker(agent, "POST", "/issues/7/labels", map[string]any{"labels": []string{"wontfix"}}, query)
		},
		"another path": func() (*mcp.CallToolResult, error) {
			return callTracker(agent, "POST", "/issues/8/labels", body, query)
		},
		"another query": func() (*mcp.CallToolResult, error) {
			return callTracker(agent, "POST", "/issues/7/labels", body, map[string]any{"notify": "yes"})
		},
		"no query": func() (*mcp.CallToolResult, error) { return callTracker(agent, "POST", "/issues/7/labels", body, nil) },
	} {
		res, err := other()
		if err != nil {
			t.Fatal(err)
		}
		if other := pendingID(t, res); other == id {
			t.Fatalf("%s used the approval of %s", name, id)
		}
	}
	if n := len(h.upstreamPosts()); n != 0 {
		t.Fatalf("upstream received %d posts before the exact repeat", n)
	}
	res, err = callTracker(agent, "POST", "/issues/7/labels", body, query)
	if err != nil || res.IsError {
		t.Fatalf("the exact repeat = %v %q", err, servertest.ResultText(res))
	}
	res, _ = callTracker(agent, "POST", "/issues/7/labels", body, query)
	if again := pendingID(t, res); again == id {
		t.Fatalf("the approval of %s was used twice", id)
	}
	if posts := h.upstreamPosts(); len(posts) != 1 || posts[0].Query != "notify=no" || string(posts[0].Body) != `{"labels":["bug"]}` {
		t.Fatalf("upstream received %+v, want exactly the approved request once", posts)
	}

	// Outside the scope (on_deny: request) works the same way: a DELETE
	// the scope does not grant waits for a person.
	res, _ = callTracker(agent, "DELETE", "/issues/9", nil, nil)
	del := pendingID(t, res)
	show := h.ok("", "access", "show", del).stdout
	if !strings.Contains(show, "outside the scope: DELETE /issues/9 is not granted to scope quick") || !strings.Contains(show, "risks      write, delete, new path, outside scope") {
		t.Fatalf("access show of a request outside the scope:\n%s", show)
	}
	if r := h.run("", "access", "approve", "acr_doesnotexist000000000"); r.code != 1 || !strings.Contains(r.stderr, "no such access request") {
		t.Fatalf("approve of an unknown id = exit %d %q", r.code, r.stderr)
	}
	if r := h.run("", "access", "approve", del, "--note", "two\nlines"); r.code != 1 || !strings.Contains(r.stderr, "one line") {
		t.Fatalf("approve with a two-line note = exit %d %q", r.code, r.stderr)
	}
}

// TestAccessForSessionCoalescingAndMaxOpen: identical held calls share
// one request; --for-session lets that exact method and path through for
// the rest of the session and nothing else; a session may keep at most
// max_open requests open.
func TestAccessForSessionCoalescingAndMaxOpen(t *testing.T) {
	h := newAccessHome(t)
	agent := h.agent(t, "held")
	first := held(agent, "POST", "/issues/3/labels", map[string]any{"labels": []string{"a"}})
	second := held(agent, "POST", "/issues/3/labels", map[string]any{"labels": []string{"a"}})
	r := h.waitRequest(t, "holding two identical calls", heldOn("/issues/3/labels", 2))
	if r.Asks != 2 || len(h.requests(t, false)) != 1 {
		t.Fatalf("two identical calls = %+v; want one request asked twice", h.requests(t, false))
	}
	out := h.ok("", "access", "approve", r.ID, "--for-session").stdout
	if !strings.Contains(out, "for session "+r.Session+" (tracker: POST /issues/3/labels)") {
		t.Fatalf("approve --for-session = %q", out)
	}
	for _, c := range []<-chan called{first, second} {
		if res := heldResult(t, c); res.IsError {
			t.Fatalf("a call held on a request approved for the session = %q", servertest.ResultText(res))
		}
	}
	// The same method and path with another body: granted for the session.
	res, err := callTracker(agent, "POST", "/issues/3/labels", map[string]any{"labels": []string{"b"}}, nil)
	if err != nil || res.IsError {
		t.Fatalf("POST /issues/3/labels after --for-session = %v %q", err, servertest.ResultText(res))
	}
	if n := len(h.upstreamPosts()); n != 3 {
		t.Fatalf("upstream received %d posts, want 3", n)
	}
	// Another path is not: no pattern was granted.
	other := held(agent, "POST", "/issues/4/labels", map[string]any{"labels": []string{"b"}})
	r4 := h.waitRequest(t, "for another path", heldOn("/issues/4/labels", 1))
	h.ok("", "access", "deny", r4.ID)
	if res := heldResult(t, other); !res.IsError {
		t.Fatal("another path was granted by --for-session")
	}
	var grants []map[string]any
	var info struct {
		Grants []map[string]any `json:"grants"`
	}
	json.Unmarshal([]byte(h.ok("", "session", "show", r.Session, "--json").stdout), &info)
	if table := h.ok("", "session", "show", r.Session).stdout; !strings.Contains(table, "GRANTED") || !strings.Contains(table, r.ID) {
		t.Fatalf("session show table = %q, want the added grant", table)
	}
	grants = info.Grants
	if len(grants) != 1 || grants[0]["method"] != "POST" || grants[0]["request"] != r.ID {
		t.Fatalf("session show grants = %+v", grants)
	}

	// max_open: a third open request of one session is refused.
	tight := h.agent(t, "tight")
	for i := range 2 {
		res, _ := callTracker(tight, "POST", fmt.Sprintf("/issues/%d/labels", 10+i), nil, nil)
		pendingID(t, res)
	}
	res, _ = callTracker(tight, "POST", "/issues/12/labels", nil, nil)
	if text := servertest.ResultText(res); !res.IsError || !strings.Contains(text, "already has 2 open access requests") {
		t.Fatalf("a third open request = %q", text)
	}
	// An identical call joins its request: not a third one.
	res, _ = callTracker(tight, "POST", "/issues/10/labels", nil, nil)
	pendingID(t, res)
}

// TestAccessRequestsDieWithTheirSession: revoking a session releases its
// held call with a denial and expires its requests; so does the end of a
// stdio session.
func TestAccessRequestsDieWithTheirSession(t *testing.T) {
	h := newAccessHome(t)
	_, url := startServe(t, h.home)
	var s struct{ ID, Token string }
	json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "held", "--json").stdout), &s)
	c, err := servertest.ConnectHTTP(url, s.Token, "remote-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := held(c, "POST", "/issues/5/labels", nil)
	r := h.waitRequest(t, "of the remote session", heldOn("/issues/5/labels", 1))
	h.ok("", "session", "revoke", s.ID)
	res := heldResult(t, call)
	if text := servertest.ResultText(res); !res.IsError || !strings.Contains(text, "revoked") {
		t.Fatalf("held call of a revoked session = %q", text)
	}
	got := h.waitRequest(t, "expired", func(x access.Request) bool { return x.ID == r.ID && x.State == access.StateExpired })
	if !strings.Contains(got.Ended, "revoked") {
		t.Fatalf("request of a revoked session = %+v", got)
	}
	if r := h.run("", "access", "approve", r.ID); r.code != 1 || !strings.Contains(r.stderr, "expired") {
		t.Fatalf("approving a dead session's request = exit %d %q", r.code, r.stderr)
	}
	if n := len(h.upstreamPosts()); n != 0 {
		t.Fatalf("upstream received %d posts", n)
	}
	if got := steps(h.audit(t), r.ID); strings.Join(got, ",") != "request,expire" {
		t.Fatalf("audit of %s = %v", r.ID, got)
	}
}

// TestAccessConcurrentHeldCallsApprovedInAnyOrder: several agents hold
// calls at once; answers in another order reach the right calls.
func TestAccessConcurrentHeldCallsApprovedInAnyOrder(t *testing.T) {
	h := newAccessHome(t)
	const n = 4
	calls := make([]<-chan called, n)
	ids := make([]string, n)
	agents := make([]*client.Client, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var startErr error
	for i := range agents {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := servertest.StartCommand(binary, h.dir, h.env, []string{"stdio", "--scope", "held"}, "editor")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				startErr = err
				return
			}
			agents[i] = c
		}(i)
	}
	wg.Wait()
	for _, c := range agents {
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if startErr != nil {
		t.Fatal(startErr)
	}
	for i, c := range agents {
		calls[i] = held(c, "POST", fmt.Sprintf("/issues/%d/labels", 100+i), nil)
	}
	for i := range n {
		ids[i] = h.waitRequest(t, fmt.Sprint("of agent ", i), heldOn(fmt.Sprintf("/issues/%d/labels", 100+i), 1)).ID
	}
	for _, i := range []int{2, 0, 3, 1} {
		if i%2 == 0 {
			h.ok("", "access", "approve", ids[i])
		} else {
			h.ok("", "access", "deny", ids[i])
		}
	}
	for i := range n {
		res := heldResult(t, calls[i])
		if res.IsError != (i%2 == 1) {
			t.Fatalf("agent %d's call (%s) = %q, want approved %v", i, ids[i], servertest.ResultText(res), i%2 == 0)
		}
	}
	posts := h.upstreamPosts()
	if len(posts) != 2 {
		t.Fatalf("upstream received %d posts, want 2", len(posts))
	}
	for _, p := range posts {
		if p.Path != "/issues/100/labels" && p.Path != "/issues/102/labels" {
			t.Fatalf("upstream received %s, which was denied", p.Path)
		}
	}
}

// TestAccessApprovalSurvivesABrokerRestart: an approval given before the
// broker stops is used by the session's repeat after it starts again
// (phantom-token sessions outlive the broker); the held call itself was
// answered when the broker stopped.
func TestAccessApprovalSurvivesABrokerRestart(t *testing.T) {
	h := newAccessHome(t)
	serve, url := startServe(t, h.home)
	var s struct{ ID, Token string }
	json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "held", "--json").stdout), &s)
	c, err := servertest.ConnectHTTP(url, s.Token, "remote-agent")
	if err != nil {
		t.Fatal(err)
	}
	call := held(c, "POST", "/issues/6/labels", nil)
	r := h.waitRequest(t, "before the restart", heldOn("/issues/6/labels", 1))
	serve.Process.Signal(syscall.SIGTERM)
	res := heldResult(t, call)
	if text := servertest.ResultText(res); !res.IsError || !strings.Contains(text, "keyhole access approve "+r.ID) {
		t.Fatalf("the call held when the broker stopped = %q", text)
	}
	serve.Wait()
	c.Close()

	_, url = startServe(t, h.home)
	if got := h.requests(t, false); len(got) != 1 || got[0].ID != r.ID || got[0].State != access.StateOpen {
		t.Fatalf("after a restart access list = %+v, want %s open", got, r.ID)
	}
	h.ok("", "access", "approve", r.ID)
	c, err = servertest.ConnectHTTP(url, s.Token, "remote-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err = callTracker(c, "POST", "/issues/6/labels", nil, nil)
	if err != nil || res.IsError {
		t.Fatalf("the repeat after approval across a restart = %v %q", err, servertest.ResultText(res))
	}
	if got := steps(h.audit(t), r.ID); strings.Join(got, ",") != "request,approve,use" {
		t.Fatalf("audit of %s = %v", r.ID, got)
	}
}

// TestAccessWithoutABroker: a standalone session cannot be asked (no
// socket takes the answer), and the commands say a broker holds requests.
func TestAccessWithoutABroker(t *testing.T) {
	h := newAccessHome(t)
	c, err := servertest.StartCommand(binary, h.dir, h.env, []string{"stdio", "--standalone", "--scope", "held"}, "editor")
	if err != nil {
		t.Fatal(err)
	}
	res, err := callTracker(c, "POST", "/issues/7/labels", nil, nil)
	if err != nil || !res.IsError || !strings.Contains(servertest.ResultText(res), "need the shared broker") {
		t.Fatalf("a call needing approval in a standalone session = %v %q", err, servertest.ResultText(res))
	}
	c.Close()
	if r := h.run("", "access", "list"); r.code != 1 || !strings.Contains(r.stderr, "held by the broker") {
		t.Fatalf("access list without a broker = exit %d %q", r.code, r.stderr)
	}
	if r := h.run("", "access", "approve"); r.code != 2 {
		t.Fatalf("access approve without an id = exit %d", r.code)
	}
}
