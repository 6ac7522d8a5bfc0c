package main

import (
	"encoding/json"
	"net/http"
	"os/user"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// changes lists the tools of the change records (keyhole.*) in order.
func changes(recs []auditLine) []auditLine {
	var out []auditLine
	for _, r := range recs {
		if strings.HasPrefix(r.Tool, "keyhole.") {
			out = append(out, r)
		}
	}
	return out
}

// TestAuditNamesEveryChangeOfWhoMayDoWhat: init, secret set, rotate and
// rm, session new and revoke and reload are each recorded, with the OS
// user who did it and never a value, whether the command opened the data
// dir itself or went through a running broker.
func TestAuditNamesEveryChangeOfWhoMayDoWhat(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL) // init, secret set github_token (no broker)
	var outs []string
	do := func(stdin string, args ...string) {
		r := h.ok(stdin, args...)
		outs = append(outs, r.stdout, r.stderr)
	}
	do(cliSecret+"-2", "secret", "rotate", "github_token")
	tok := strings.TrimSpace(h.ok("", "session", "new", "--scope", "triage", "--label", "local").stdout)
	_, url := startServe(t, h)
	do(cliSecret+"-other", "secret", "set", "other_token") // through the broker
	do("", "session", "new", "--scope", "triage", "--label", "remote")
	do("", "session", "revoke", "--scope", "triage")
	do("", "reload")
	do("", "secret", "rm", "other_token")

	want := []struct{ tool, about string }{
		{"keyhole.init", "initialised"},
		{"keyhole.secret.set", "github_token"},
		{"keyhole.secret.rotate", "github_token"},
		{"keyhole.session.new", "label local"},
		{"keyhole.secret.set", "other_token"},
		{"keyhole.session.new", "label remote"},
		{"keyhole.session.revoke", "revoked"},
		{"keyhole.session.revoke", "revoked"},
		{"keyhole.reload", "reloaded"},
		{"keyhole.secret.rm", "other_token"},
	}
	got := changes(h.auditRecordsFull(t))
	if len(got) != len(want) {
		t.Fatalf("%d change records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Tool != w.tool || !strings.Contains(got[i].Reason, w.about) || got[i].Operator != me.Username {
			t.Errorf("change %d = %s %q by %q, want %s about %q by %s", i, got[i].Tool, got[i].Reason, got[i].Operator, w.tool, w.about, me.Username)
		}
	}
	if got[2].Cred != "github_token" {
		t.Errorf("the rotate record names credential %q, want github_token", got[2].Cred)
	}
	all := h.ok("", "audit", "tail", "-n", "0", "--json").stdout
	outs = append(outs, all, h.ok("", "audit", "tail", "-n", "0").stdout)
	h.assertNowhere(outs...)
	for _, v := range []string{cliSecret + "-2", cliSecret + "-other", tok} {
		if strings.Contains(all, v) {
			t.Fatalf("the audit holds a value or a token: %.12s…", v)
		}
	}
	_ = url
}

// TestAuthFailuresAreAuditedThroughTheBinary: HTTP requests with no token,
// an unknown one or a revoked one are recorded as keyhole.auth.failed,
// with the source address and the reason, once per minute per source and
// reason however many come, and never with the token.
func TestAuthFailuresAreAuditedThroughTheBinary(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	_, url := startServe(t, h)
	var s struct{ ID, Token string }
	json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "triage", "--json").stdout), &s)
	h.ok("", "session", "revoke", s.ID)
	post := func(token string) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("request with token %.8q = %d, want 401", token, resp.StatusCode)
		}
	}
	for i := 0; i < 30; i++ {
		post("")
		post("khs_" + strings.Repeat("x", 40))
		post(s.Token)
	}
	byCode := map[string]auditLine{}
	n := 0
	for _, r := range h.auditRecordsFull(t) {
		if r.Tool == "keyhole.auth.failed" {
			n++
			byCode[r.Code] = r
		}
	}
	if n != 3 {
		t.Fatalf("%d keyhole.auth.failed records for 90 refused requests within a minute, want 3 (one per reason)", n)
	}
	for _, code := range []string{"missing_token", "unknown_token", "session_revoked"} {
		r, ok := byCode[code]
		if !ok || r.Source != "127.0.0.1" {
			t.Errorf("record for %s = %+v, want one from 127.0.0.1", code, r)
		}
	}
	raw := h.ok("", "audit", "tail", "-n", "0", "--json").stdout
	if strings.Contains(raw, s.Token) || strings.Contains(raw, s.Token[4:20]) {
		t.Fatal("an auth failure record holds the token")
	}
	table := h.ok("", "audit", "tail", "--tool", "keyhole.auth.failed").stdout
	if !strings.Contains(table, "from 127.0.0.1") {
		t.Fatalf("audit tail does not show the source:\n%s", table)
	}
}

// TestAuditTailColumnsAndCut: the table has CREDENTIAL, SCRUBBED and a
// shortened REASON; when -n leaves records out, stderr says so.
func TestAuditTailColumnsAndCut(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	c := h.stdioClient(t, "--standalone")
	call(c, "/issues/1")
	call(c, "/admin/"+strings.Repeat("x", 200))
	c.Close()
	r := h.ok("", "audit", "tail", "--tool", "tracker")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if !strings.Contains(lines[0], "CREDENTIAL") || !strings.Contains(lines[0], "SCRUBBED") || !strings.Contains(lines[0], "REASON") {
		t.Fatalf("header = %q", lines[0])
	}
	if len(lines) != 3 || !strings.Contains(lines[1], "github_token v1") || !strings.Contains(lines[2], "GET /admin/xxx") || !strings.HasSuffix(lines[2], "x…") || len(lines[2]) > 400 {
		t.Fatalf("table =\n%s\nwant the credential and a shortened reason", r.stdout)
	}
	if r.stderr != "" {
		t.Fatalf("stderr = %q with nothing cut", r.stderr)
	}
	r = h.ok("", "audit", "tail", "-n", "1", "--tool", "tracker")
	if !strings.Contains(r.stderr, "showing the last 1 matching records") || strings.Count(strings.TrimSpace(r.stdout), "\n") != 1 {
		t.Fatalf("tail -n 1 = stdout %q, stderr %q; want one row and a note", r.stdout, r.stderr)
	}
	_ = servertest.RaceChildEnv
}
