package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestApprovalCompileErrors(t *testing.T) {
	grants := []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/x"}}}
	tests := map[string]struct {
		scope ScopeConfig
		want  []FieldError
	}{
		"on_deny": {ScopeConfig{OnDeny: "ask", Grants: grants},
			[]FieldError{{"scopes.s.on_deny", `"ask" is not an on_deny mode; write deny (the default) or request`}}},
		"durations": {ScopeConfig{Approval: &ApprovalConfig{Wait: "soon", TTL: "0s"}, Grants: grants},
			[]FieldError{
				{"scopes.s.approval.wait", `"soon" is not a duration; write e.g. 55s or 2m`},
				{"scopes.s.approval.ttl", `"0s" must be positive and at most 24h`},
			}},
		"bounds": {ScopeConfig{Approval: &ApprovalConfig{Wait: "11m", TTL: "25h", MaxOpen: intp(0)}, Grants: grants},
			[]FieldError{
				{"scopes.s.approval.wait", `"11m" must be between 0 (answer at once) and 10m`},
				{"scopes.s.approval.ttl", `"25h" must be positive and at most 24h`},
				{"scopes.s.approval.max_open", `must be between 1 and 100 open requests per session`},
			}},
		"webhook without secret": {ScopeConfig{Approval: &ApprovalConfig{Webhook: "https://hooks.example.com/keyhole"}, Grants: grants},
			[]FieldError{{"scopes.s.approval.webhook_secret", `required with webhook: name the vault secret that signs its posts (keyhole secret set NAME)`}}},
		"secret without webhook": {ScopeConfig{Approval: &ApprovalConfig{WebhookSecret: "hook_key"}, Grants: grants},
			[]FieldError{{"scopes.s.approval.webhook_secret", `applies only with webhook`}}},
		"plain http elsewhere": {ScopeConfig{Approval: &ApprovalConfig{Webhook: "http://hooks.example.com/k", WebhookSecret: "k"}, Grants: grants},
			[]FieldError{{"scopes.s.approval.webhook", `plain http is allowed only to a loopback host; use https`}}},
		"user info": {ScopeConfig{Approval: &ApprovalConfig{Webhook: "https://u:p@hooks.example.com/k", WebhookSecret: "k"}, Grants: grants},
			[]FieldError{{"scopes.s.approval.webhook", `must not carry a user or password; the posts are signed with webhook_secret`}}},
		"not a URL": {ScopeConfig{Approval: &ApprovalConfig{Webhook: "/hook", WebhookSecret: "k"}, Grants: grants},
			[]FieldError{{"scopes.s.approval.webhook", `"/hook" is not an absolute http or https URL`}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, errs := Compile(map[string]ScopeConfig{"s": tt.scope}, testTools)
			var got []FieldError
			for _, e := range errs {
				got = append(got, *e.(*FieldError))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Compile(%+v) errors =\n%q\nwant\n%q", tt.scope, got, tt.want)
			}
		})
	}
}

func TestApprovalSettings(t *testing.T) {
	p := mustCompile(t, map[string]ScopeConfig{
		"plain": {Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/x"}}}},
		"set": {OnDeny: "request", Approval: &ApprovalConfig{Wait: "0s", TTL: "1h", MaxOpen: intp(5), Webhook: "http://127.0.0.1:9/hook", WebhookSecret: "hook_key", Notify: true},
			Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/x"}}}},
	})
	plain, _ := p.Scope("plain")
	if got, want := plain.Approval(), (Approval{Wait: 55 * time.Second, TTL: 10 * time.Minute, MaxOpen: 3}); got != want {
		t.Fatalf("default Approval() = %+v, want %+v", got, want)
	}
	set, _ := p.Scope("set")
	want := Approval{OnDenyRequest: true, Wait: 0, TTL: time.Hour, MaxOpen: 5, Webhook: "http://127.0.0.1:9/hook", WebhookSecret: "hook_key", Notify: true}
	if got := set.Approval(); got != want {
		t.Fatalf("Approval() = %+v, want %+v", got, want)
	}
	if set.ReadOnly("github") {
		t.Fatal("a generic tool of an on_deny: request scope reads as read-only; a person may approve a write")
	}
	if !plain.ReadOnly("github") {
		t.Fatal("a GET-only grant does not read as read-only")
	}
}

func approvalPolicy(t *testing.T) *Policy {
	return mustCompile(t, map[string]ScopeConfig{
		"s": {Grants: []GrantConfig{
			{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/repos/**"}, Approve: true},
			{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/repos/acme/*"}},
			{Tool: "github", Methods: []string{"POST"}, Paths: []string{"/repos/acme/*/labels"}, Approve: true},
			{Tool: "archive", Actions: []string{"get"}, Prefixes: []string{"private/"}, Approve: true},
			{Tool: "archive", Actions: []string{"get"}, Prefixes: []string{"private/public/"}},
		}},
		"requests": {OnDeny: "request", MaxDenials: intp(2), Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/ok"}}}},
	})
}

func TestDecideApproveGrants(t *testing.T) {
	sc, _ := approvalPolicy(t).Scope("s")
	tests := []struct {
		req   Request
		code  string
		grant string
	}{
		// A grant that needs no approval wins over one that does, whatever the order.
		{get("/repos/acme/api"), "", "github: GET /repos/acme/*"},
		{get("/repos/other/api"), CodeApprovalRequired, "github: GET /repos/** (with a person's approval)"},
		{post("/repos/acme/api/labels"), CodeApprovalRequired, "github: POST /repos/acme/*/labels (with a person's approval)"},
		{post("/repos/acme/api/issues"), CodeNotGranted, ""},
		{Request{Tool: "archive", Action: "get", Key: "private/payroll.csv"}, CodeApprovalRequired, "archive: get private/ (with a person's approval)"},
		{Request{Tool: "archive", Action: "get", Key: "private/public/x"}, "", "archive: get private/public/"},
		{Request{Tool: "archive", Action: "list", Key: "private/"}, CodeNotGranted, ""},
	}
	for _, tt := range tests {
		d := sc.Decide(tt.req)
		if d.Code != tt.code || d.Allow != (tt.code == "") || d.Grant != tt.grant || d.Ask != (tt.code == CodeApprovalRequired) || d.Reason == "" {
			t.Errorf("Decide(%s) = %+v, want code %q, grant %q", tt.req, d, tt.code, tt.grant)
		}
	}
	if got := sc.Summary("github"); !reflect.DeepEqual(got, []string{"GET /repos/** (with a person's approval)", "GET /repos/acme/*", "POST /repos/acme/*/labels (with a person's approval)"}) {
		t.Fatalf("Summary(github) = %q, want approve grants marked", got)
	}
}

func TestSessionDecideAskCountsNoDenial(t *testing.T) {
	p := approvalPolicy(t)
	sc, _ := p.Scope("s")
	s := NewSession("s1", sc, t0, 0, "")
	for range 30 {
		if d := s.Decide(t0, get("/repos/other/api")); d.Code != CodeApprovalRequired || !d.Ask {
			t.Fatalf("Decide = %+v, want approval_required", d)
		}
	}
	if info := s.Info(t0); info.Denials != 0 || info.Calls != 30 || info.State != StateActive {
		t.Fatalf("Info after 30 calls waiting for approval = %+v, want 30 calls, no denials, active", info)
	}

	rq, _ := p.Scope("requests")
	s = NewSession("s2", rq, t0, 0, "")
	for range 3 {
		if d := s.Decide(t0, get("/admin")); d.Code != CodeNotGranted || !d.Ask || d.Allow {
			t.Fatalf("Decide(on_deny: request) = %+v, want not_granted with Ask", d)
		}
	}
	if info := s.Info(t0); info.Denials != 0 || info.State != StateActive {
		t.Fatalf("Info = %+v: a requestable denial is counted by whoever cannot make it a request, not by Decide", info)
	}
	s.NoteDenial(t0)
	s.NoteDenial(t0)
	if d := s.Decide(t0, get("/admin")); d.Code != CodeSessionEnded {
		t.Fatalf("Decide after max_denials notes = %+v, want session_ended", d)
	}
	// Unknown tools are never requestable.
	s = NewSession("s3", rq, t0, 0, "")
	if d := s.Decide(t0, Request{Tool: "archive", Action: "list"}); d.Ask || d.Code != CodeUnknownTool {
		t.Fatalf("Decide(unknown tool) = %+v, want unknown_tool without Ask", d)
	}
}

func TestSessionExactGrants(t *testing.T) {
	p := approvalPolicy(t)
	sc, _ := p.Scope("s")
	s := NewSession("s1", sc, t0, 0, "")
	label := post("/repos/acme/api/labels")
	if err := s.AddGrant(t0, ExactGrantOf(label, "acr_1")); err != nil {
		t.Fatal(err)
	}
	s.AddGrant(t0, ExactGrantOf(label, "acr_2")) // the same grant again: kept once
	d := s.Decide(t0, label)
	if !d.Allow || d.Grant != "github: POST /repos/acme/api/labels (for this session, by access request acr_1)" {
		t.Fatalf("Decide(%s) with an exact grant = %+v", label, d)
	}
	// Exactly that method and path: no pattern, no other method, no sibling.
	for _, req := range []Request{post("/repos/acme/other/labels"), get("/repos/other/api"), post("/repos/acme/api/labels/x"), {Tool: "github", Method: "PUT", Segments: seg("/repos/acme/api/labels")}} {
		if d := s.Decide(t0, req); d.Allow {
			t.Errorf("Decide(%s) = %+v: the exact grant reached another request", req, d)
		}
	}
	if d := s.Recheck(t0, label); !d.Allow {
		t.Fatalf("Recheck(%s) = %+v, want the exact grant to allow a hop to it", label, d)
	}
	if d := s.Recheck(t0, get("/repos/other/api")); d.Allow || d.Ask || d.Code != CodeApprovalRequired {
		t.Fatalf("Recheck of a hop that needs approval = %+v, want refused without Ask", d)
	}
	info := s.Info(t0)
	if len(info.Grants) != 1 {
		t.Fatalf("Grants = %+v, want one", info.Grants)
	}
	b, _ := json.Marshal(info)
	if !strings.Contains(string(b), `"grants":[{"tool":"github","method":"POST","segments":["repos","acme","api","labels"],"request":"acr_1"}]`) {
		t.Fatalf("json = %s", b)
	}
	var back SessionInfo
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	restored := RestoreSession(back, sc)
	if d := restored.Decide(t0, label); !d.Allow {
		t.Fatalf("a restored session lost its exact grant: %+v", d)
	}
	s.Revoke("done")
	if err := s.AddGrant(t0, ExactGrantOf(get("/x"), "acr_3")); err == nil {
		t.Fatal("AddGrant on a revoked session succeeded")
	}
}
