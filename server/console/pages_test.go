package console

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// fill gives the harness two sessions, an allowed and a denied call, an
// s3 call and an open access request (held).
func (h *harness) fill() (access.Request, <-chan access.Answer) {
	h.session("ses_1", "triage", "nightly triage")
	h.session("ses_2", "archive_report", "")
	h.write(audit.Record{Session: "ses_1", Scope: "triage", Client: "editor/1.0", Tool: "github", Kind: "http", Method: "GET", Host: "api.example.com",
		Path: "/repos/acme/api/issues/7", Decision: audit.Allow, Status: 200, Credential: "github_token", CredVersion: 3, Duration: 120 * time.Millisecond,
		Grant: "github: GET /repos/acme/api/issues/*", Args: []byte(`{"method":"GET","path":"/repos/acme/api/issues/7"}`)})
	h.write(audit.Record{Session: "ses_1", Scope: "triage", Tool: "github", Kind: "http", Method: "DELETE", Path: "/repos/acme/api",
		Decision: audit.Deny, Code: policy.CodeNotGranted, Reason: "DELETE /repos/acme/api is not granted to scope triage"})
	h.write(audit.Record{Session: "ses_2", Scope: "archive_report", Tool: "archive", Kind: "s3", Bucket: "acme-archive", Action: "list",
		Key: "reports/2026/", Decision: audit.Allow, Credential: "aws_archive"})
	return h.hold(ask())
}

func TestEveryPageRenders(t *testing.T) {
	h := newHarness(t)
	req, _ := h.fill()
	b := h.signIn()
	pages := map[string][]string{
		"/ui/":               {"Overview", "Live sessions", "Calls per minute", "<svg", "Waiting for you", req.ID, "Verify the whole chain now", "github_token", "not rotated in"},
		"/ui/sessions":       {"ses_1", "ses_2", "nightly triage", "active"},
		"/ui/sessions?all=1": {"ses_1", "Only the live ones"},
		"/ui/sessions/ses_1": {"Session", "ses_1", "nightly triage", "Revoke this session", req.ID, "Post-mortem",
			"What credentials did the agent hold at the time of the incident?", "Were those credentials necessary", "How long had those credentials been active?",
			"Could a session-scoped token have expired", "inherited from a broader one?", "How many other agents share the same credentials?",
			"The facts behind the answer", "github_token", "GET /repos/acme/api/issues/7", "DELETE /repos/acme/api", "the incident", "make this the incident"},
		"/ui/sessions/ses_1?incident=1":                 {"at the call <a href=\"/ui/audit/1\">#1</a>"},
		"/ui/blast-radius":                              {"Blast radius", "<svg", "Scopes", "Upstreams", "github_token", "aws_archive", "api.example.com", "s3://acme-archive", "write reach", "not rotated in 90 days", "POST /repos/acme/api/issues/*/labels", "stale"},
		"/ui/blast-radius?secret=github_token&since=7d": {"github_token", "<option selected>7d</option>"},
		"/ui/audit":               {"Audit", "Filter", "/repos/acme/api/issues/7", "s3://acme-archive/reports/2026/", "keyhole.access.request", "Follow live"},
		"/ui/audit?decision=deny": {"DELETE /repos/acme/api", "keyhole.access.request"},
		"/ui/audit/1":             {"Audit record 1", "api.example.com", "github: GET /repos/acme/api/issues/*", "github_token", "version 3", "editor/1.0", "120.0 ms", "&#34;path&#34;"},
		"/ui/access":              {"Access requests", req.ID, "github: POST api.example.com/repos/acme/api/issues/7/labels", "Approve once", "Approve for this session", "Deny", "request-template"},
		"/ui/access?all=1":        {req.ID},
		"/ui/access/" + req.ID:    {"The exact request", "POST", "/repos/acme/api/issues/7/labels", "Content-Type", "{&#34;labels&#34;:[&#34;bug&#34;]}", "write", "new path", "Approve once", req.SHA256},
		"/ui/secrets":             {"github_token", "aws_archive", "CI token", "tools github", "scopes triage", "never", "not rotated in"},
		"/ui/config":              {"/etc/keyhole/keyhole.yaml", "triage", "Triage issues of acme/api.", "GET /repos/acme/api/issues/*", "with a person&#39;s approval", "list reports/2026", "s3://acme-archive", "a session lasts at most 1h0m0s", "at most 100 calls per session", "its URL is not shown"},
	}
	for path, wants := range pages {
		t.Run(path, func(t *testing.T) {
			body := b.on(t).mustGet(path)
			for _, w := range wants {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s lacks %q", path, w)
				}
			}
		})
	}
	for _, path := range []string{"/ui/sessions/ses_none", "/ui/audit/999", "/ui/audit/x", "/ui/access/acr_aaaaaaaaaaaaaaaaaaaa", "/ui/nothing"} {
		if resp, _ := b.get(path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}

var seqCell = regexp.MustCompile(`<tr data-seq="(\d+)">`)

func seqsOf(body string) []string {
	var out []string
	for _, m := range seqCell.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestAuditFiltersAndPagesBySeq(t *testing.T) {
	h := newHarness(t)
	for i := range 12 {
		d := audit.Allow
		if i%3 == 0 {
			d = audit.Deny
		}
		h.write(audit.Record{Session: fmt.Sprintf("ses_%d", i%2), Scope: "triage", Tool: "github", Method: "GET", Path: fmt.Sprintf("/issues/%d", i), Decision: d})
		h.clock.Advance(time.Minute)
	}
	b := h.signIn()
	tests := []struct {
		query string
		want  string // the seqs shown, newest first
		older string // the Older link's query
		newer string
	}{
		{"n=5", "12 11 10 9 8", "before=8&n=5", ""},
		{"n=5&before=8", "7 6 5 4 3", "before=3&n=5", "after=7&n=5"},
		{"n=5&before=3", "2 1", "", "after=2&n=5"},
		{"n=5&after=2", "7 6 5 4 3", "before=3&n=5", "after=7&n=5"},
		{"n=5&after=7", "12 11 10 9 8", "before=8&n=5", ""},
		{"session=ses_1", "12 10 8 6 4 2", "", ""},
		{"decision=deny", "10 7 4 1", "", ""},
		{"decision=deny&session=ses_0&n=1", "7", "before=7&decision=deny&n=1&session=ses_0", ""},
		{"tool=nope", "", "", ""},
		{"since=" + url.QueryEscape(t0.Add(9*time.Minute).Local().Format("2006-01-02T15:04")), "12 11 10", "", ""},
		{"until=" + url.QueryEscape(t0.Add(2*time.Minute).Format(time.RFC3339)), "2 1", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			body := b.on(t).mustGet("/ui/audit?" + tc.query)
			if got := strings.Join(seqsOf(body), " "); got != tc.want {
				t.Fatalf("GET /ui/audit?%s shows seqs %q, want %q", tc.query, got, tc.want)
			}
			for rel, want := range map[string]string{"next": tc.older, "prev": tc.newer} {
				m := regexp.MustCompile(`<a href="\?([^"]*)" rel="` + rel + `"`).FindStringSubmatch(body)
				got := ""
				if m != nil {
					got = strings.ReplaceAll(m[1], "&amp;", "&")
				}
				if got != want {
					t.Errorf("GET /ui/audit?%s: link rel=%s = %q, want %q", tc.query, rel, got, want)
				}
			}
		})
	}
	if body := b.mustGet("/ui/audit?decision=maybe&since=soon"); !strings.Contains(body, "decision must be one of") || !strings.Contains(body, "since: want a duration") {
		t.Fatalf("bad filters are not explained:\n%s", body)
	}
}

func TestApproveOnceInTheConsoleReleasesTheHeldCall(t *testing.T) {
	h := newHarness(t)
	h.session("ses_1", "triage", "")
	req, answer := h.hold(ask())
	b := h.signIn()
	resp, body := b.post("/ui/access/"+req.ID+"/approve", url.Values{"scope": {"once"}, "note": {"label is right"}, "back": {"list"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/access#"+req.ID {
		t.Fatalf("approve = %d (Location %q), want 303 back to the list:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	ans := <-answer
	if !ans.Approved {
		t.Fatalf("the held call's answer = %+v, want approved", ans)
	}
	recs, err := h.log.Query(audit.Filter{Tool: access.AuditTool(access.EventApprove)})
	if err != nil || len(recs) != 1 {
		t.Fatalf("approve records = %v, %v; want one", recs, err)
	}
	wantBy := "console:" + consoleID(t, b) + " (os:tester)"
	if !strings.Contains(recs[0].Reason, "approved once by "+wantBy) || !strings.Contains(recs[0].Reason, "label is right") {
		t.Fatalf("the approval's audit reason = %q, want it to name %q and the note", recs[0].Reason, wantBy)
	}
	if page := b.mustGet("/ui/access/" + req.ID); !strings.Contains(page, "approved once by") || !strings.Contains(page, wantBy) || strings.Contains(page, `action="/ui/access/`+req.ID+`/approve"`) {
		t.Fatalf("the request's page after approval does not say who approved it, or still offers to:\n%s", page)
	}
	// It is answered: a second approval is refused, and says why.
	if resp, body := b.post("/ui/access/"+req.ID+"/approve", url.Values{"scope": {"once"}}); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "not open") {
		t.Fatalf("a second approval = %d, want 409 saying it is not open:\n%s", resp.StatusCode, body)
	}
}

// consoleID reads the console session's id off its footer.
func consoleID(t *testing.T, b *browser) string {
	t.Helper()
	m := regexp.MustCompile(`console session <code>(con_[a-z2-7]+)</code>`).FindStringSubmatch(b.mustGet("/ui/"))
	if m == nil {
		t.Fatal("the footer names no console session")
	}
	return m[1]
}

func TestApproveForTheSessionAddsTheExactGrant(t *testing.T) {
	h := newHarness(t)
	h.session("ses_1", "triage", "")
	req, answer := h.hold(ask())
	b := h.signIn()
	if resp, body := b.post("/ui/access/"+req.ID+"/approve", url.Values{"scope": {"session"}}); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/access/"+req.ID {
		t.Fatalf("approve for the session = %d %q:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if ans := <-answer; !ans.Approved {
		t.Fatalf("answer = %+v, want approved", ans)
	}
	g := h.ss.grants["ses_1"]
	if len(g) != 1 || g[0].String() != "github: POST /repos/acme/api/issues/7/labels" {
		t.Fatalf("grants added to ses_1 = %v, want exactly POST on the request's path", g)
	}
}

func TestDenyInTheConsoleTellsTheHeldCall(t *testing.T) {
	h := newHarness(t)
	h.session("ses_1", "triage", "")
	req, answer := h.hold(ask())
	b := h.signIn()
	if resp, body := b.post("/ui/access/"+req.ID+"/deny", url.Values{"note": {"not this issue"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("deny = %d:\n%s", resp.StatusCode, body)
	}
	ans := <-answer
	if ans.Approved || ans.Code != access.CodeDenied || !strings.Contains(ans.Message, "not this issue") {
		t.Fatalf("the held call's answer = %+v, want denied with the note", ans)
	}
	recs, _ := h.log.Query(audit.Filter{Tool: access.AuditTool(access.EventDeny)})
	if len(recs) != 1 || !strings.Contains(recs[0].Reason, "denied by console:con_") {
		t.Fatalf("deny records = %+v, want one naming the console session", recs)
	}
	// A note the access manager refuses is refused with its reason.
	req2, _ := h.hold(ask(func(a *access.Ask) { a.Call.Path = "/repos/acme/api/issues/8/labels" }))
	if resp, body := b.post("/ui/access/"+req2.ID+"/deny", url.Values{"note": {"two\nlines"}}); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "the note holds a control character") {
		t.Fatalf("deny with a two-line note = %d, want 422 saying why:\n%s", resp.StatusCode, body)
	}
}

func TestRevokeInTheConsole(t *testing.T) {
	h := newHarness(t)
	h.session("ses_1", "triage", "")
	b := h.signIn()
	resp, _ := b.post("/ui/sessions/ses_1/revoke", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/sessions/ses_1" {
		t.Fatalf("revoke = %d %q, want 303 to the session", resp.StatusCode, resp.Header.Get("Location"))
	}
	if by := h.ss.revoked["ses_1"]; !strings.HasPrefix(by, "console:con_") || !strings.HasSuffix(by, "(os:tester)") {
		t.Fatalf("revoked by %q, want the console session and the operator", by)
	}
	page := b.mustGet("/ui/sessions/ses_1")
	if !strings.Contains(page, "revoked") || strings.Contains(page, "Revoke this session") {
		t.Fatalf("the revoked session's page still offers to revoke it:\n%s", page)
	}
	if resp, _ := b.post("/ui/sessions/ses_nope/revoke", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("revoke an unknown session = %d, want 404", resp.StatusCode)
	}
}

func TestVerifyTheChainFromTheOverview(t *testing.T) {
	h := newHarness(t)
	h.fill()
	b := h.signIn()
	if resp, _ := b.post("/ui/verify", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("verify = %d, want 303", resp.StatusCode)
	}
	h.con.verify.wg.Wait()
	body := b.mustGet("/ui/")
	if !strings.Contains(body, "The whole chain was verified at") || !strings.Contains(body, "intact") {
		t.Fatalf("the overview does not show the verification:\n%s", body)
	}
}

func TestStaticAssets(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	for path, ctype := range map[string]string{"/ui/static/console.js": "text/javascript", "/ui/static/console.css": "text/css"} {
		resp, body := b.get(path + "?v=" + assetVersion)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if strings.HasSuffix(path, ".js") {
			if len(body) > 20<<10 {
				t.Errorf("console.js is %d bytes, over the 20 KiB budget", len(body))
			}
			for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
				if strings.Contains(body, sink) {
					t.Errorf("console.js uses %s", sink)
				}
			}
		}
	}
	if resp, _ := b.get("/ui/static/"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /ui/static/ = %d, want 404 (no listing)", resp.StatusCode)
	}
}

func TestSessionsListShowsTheNewest(t *testing.T) {
	h := newHarness(t)
	for i := range maxSessionRows + 50 {
		h.session(fmt.Sprintf("ses_%04d", i), "triage", "")
	}
	body := h.signIn().mustGet("/ui/sessions")
	if !strings.Contains(body, fmt.Sprintf("The newest %d of %d", maxSessionRows, maxSessionRows+50)) || !strings.Contains(body, "ses_0249") || strings.Contains(body, "ses_0049<") {
		t.Fatalf("the sessions page does not show the newest %d of %d:\n%.2000s", maxSessionRows, maxSessionRows+50, body)
	}
}

// A filter no index serves looks through a bounded stretch of the log per
// page, and its links go on from where it stopped.
func TestRareFiltersLookThroughABoundedStretch(t *testing.T) {
	h := newHarness(t)
	h.con.window = 5
	for i := range 20 {
		d := audit.Allow
		if i == 2 || i == 17 {
			d = audit.Deny
		}
		h.write(audit.Record{Session: "ses_1", Scope: "triage", Tool: "github", Method: "GET", Path: fmt.Sprintf("/issues/%d", i), Decision: d})
	}
	b := h.signIn()
	type page struct{ query, seqs, stopped string }
	for _, p := range []page{
		{"decision=deny", "18", "16"},               // seqs 16-20 looked through
		{"before=16&decision=deny", "", "11"},       // 11-15: nothing
		{"before=11&decision=deny", "", "6"},        // 6-10: nothing
		{"before=6&decision=deny", "3", ""},         // 1-5: seq 3, and the log's start
		{"after=3&decision=deny", "", "8"},          // newer: 4-8
		{"decision=deny&session=ses_1", "18 3", ""}, // an indexed filter is not windowed
		{"scope=nope", "", "16"},                    // a scope nothing has
		{"decision=deny&n=1", "18", "16"},           // one found; older ones may be further back
	} {
		body := b.mustGet("/ui/audit?" + p.query)
		if got := strings.Join(seqsOf(body), " "); got != p.seqs {
			t.Errorf("GET /ui/audit?%s shows %q, want %q", p.query, got, p.seqs)
		}
		m := regexp.MustCompile(`stopped at seq (\d+)`).FindStringSubmatch(body)
		got := ""
		if m != nil {
			got = m[1]
		}
		if got != p.stopped {
			t.Errorf("GET /ui/audit?%s stopped at %q, want %q", p.query, got, p.stopped)
		}
	}
}
