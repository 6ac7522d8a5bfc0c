package report

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
)

func TestReplayReportsWhatWouldFlip(t *testing.T) {
	f, _ := triageFixture(t)
	// Not decided by grants: a rate limit, refused arguments.
	f.write(audit.Record{Time: t0.Add(min_(41)), Session: "ses_a", Scope: "triage", Tool: "github", Kind: "http", Method: "GET", Path: "/repos/acme/api/issues",
		Credential: "gh_token", Decision: audit.Deny, Code: "rate_limited", Reason: "slow down"})
	f.call(t0.Add(min_(42)), "ses_a", "triage", "c/1", "github", `{"method":"get","path":"/x"}`, 0)

	same, err := Replay(context.Background(), f.src, f.cfg, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if same.Flips() != 0 || same.Replayed != 8 || same.Unchanged != 8 || len(same.Widened) != 0 || len(same.Narrowed) != 0 {
		t.Fatalf("Replay against the same config = %+v, want 8 calls, nothing flips", same)
	}
	if !equalJSON(same.Skipped, []Counted{{"not decided by a grant (invalid_arguments)", 1}, {"not decided by a grant (rate_limited)", 1}}) {
		t.Fatalf("skipped = %+v", same.Skipped)
	}

	next := strings.Replace(triageYAML, "paths: [/repos/acme/api/issues, /repos/acme/api/issues/*]}",
		"paths: [/repos/acme/api/issues]}\n      - {tool: github, methods: [DELETE], paths: [/repos/acme/api]}\n      - {tool: gitlab, methods: [GET], paths: [/x]}", 1)
	next = strings.Replace(next, "  archive:\n", "  gitlab:\n    kind: http\n    base_url: https://gitlab.com\n    credential: {secret: gl_token, inject: bearer}\n  archive:\n", 1)
	cfg, err := config.Parse("next.yaml", []byte(next), tools.Env{})
	if err != nil {
		t.Fatalf("config.Parse(next) = %v", err)
	}
	rep, err := Replay(context.Background(), f.src, cfg, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWidened := []Flip{
		{Scope: "triage", Tool: "github", Grant: "github: DELETE /repos/acme/api", Calls: 2, Sessions: 1, Examples: []string{"DELETE /repos/acme/api"}},
		{Scope: "triage", Tool: "gitlab", Grant: "the tool gitlab", Reason: "the tool is newly granted to the scope; the request was not recorded (the tool was unknown to the scope then)",
			Calls: 1, Sessions: 1, Examples: []string{"-"}},
	}
	wantNarrowed := []Flip{
		{Scope: "triage", Tool: "github", Grant: "github: GET /repos/acme/api/issues/*", Calls: 2, Sessions: 1,
			Reason:   "GET /repos/acme/api/issues/7 is not granted to scope triage; granted: GET /repos/acme/api/issues, DELETE /repos/acme/api, POST /repos/acme/api/issues/*/comments, DELETE /repos/acme/api/issues/*/comments",
			Examples: []string{"GET /repos/acme/api/issues/7", "GET /repos/acme/api/issues/9"}},
	}
	if !equalJSON(rep.Widened, wantWidened) || !equalJSON(rep.Narrowed, wantNarrowed) {
		t.Fatalf("Replay widened =\n%+v\nnarrowed =\n%+v\nwant\n%+v\n%+v", rep.Widened, rep.Narrowed, wantWidened, wantNarrowed)
	}
	if rep.Flips() != 5 || rep.Replayed != 8 || rep.Unchanged != 3 {
		t.Fatalf("Replay = %d flips, %d replayed, %d unchanged; want 5, 8, 3", rep.Flips(), rep.Replayed, rep.Unchanged)
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	for _, w := range []string{"Denied → allowed", "Allowed → denied", "e.g. GET /repos/acme/api/issues/9", "5 flips"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("text does not hold %q:\n%s", w, b.String())
		}
	}
	// A scope the new config drops narrows every call it allowed.
	dropped, err := config.Parse("dropped.yaml", []byte(strings.Replace(triageYAML, "  release:\n    grants:\n      - {tool: github, methods: [GET], paths: [/repos/acme/api/releases]}\n", "", 1)), tools.Env{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err = Replay(context.Background(), f.src, dropped, ReplayOptions{})
	if err != nil || len(rep.Narrowed) != 1 || rep.Narrowed[0].Scope != "release" || rep.Narrowed[0].Reason != "scope release is not in dropped.yaml" {
		t.Fatalf("Replay without release = %+v, %v", rep, err)
	}
}

// TestReplayOfCallsAPersonApproved: a call a person approved through an
// access request and one that waited and was not approved, replayed
// against the same approve: true grant (nothing flips), a plain grant (no
// approval needed: both widen) and no grant (the approved one would break).
func TestReplayOfCallsAPersonApproved(t *testing.T) {
	const cfg = `version: 1
tools:
  github: {kind: http, base_url: "https://api.github.com", credential: {secret: gh_token, inject: bearer}}
scopes:
  triage:
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues]}
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/labels], approve: true}
`
	f := newFixture(t, cfg, nil, nil)
	rec := audit.Record{Time: t0, Session: "s1", Scope: "triage", Tool: "github", Kind: "http", Method: "POST", Path: "/repos/acme/api/issues/7/labels", Credential: "gh_token"}
	approved := rec
	approved.Decision, approved.Grant = audit.Allow, "access request acr_1 approved once by os:alice"
	p, err := f.log.Begin(context.Background(), approved)
	if err != nil {
		t.Fatal(err)
	}
	p.Finish(context.Background(), approved)
	waited := rec
	waited.Path, waited.Decision, waited.Code, waited.Reason = "/repos/acme/api/issues/8/labels", audit.Deny, "approval_required", "not approved"
	f.write(waited)

	replay := func(yaml string) *ReplayReport {
		t.Helper()
		next, err := config.Parse("next.yaml", []byte(yaml), tools.Env{})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Replay(context.Background(), f.src, next, ReplayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := replay(cfg); rep.Flips() != 0 || rep.Unchanged != 2 {
		t.Fatalf("the same config: %d flips, %d unchanged; want 0 and 2", rep.Flips(), rep.Unchanged)
	}
	rep := replay(strings.Replace(cfg, ", approve: true", "", 1))
	if rep.Flips() != 2 || len(rep.Widened) != 1 || rep.Widened[0].Grant != "github: POST /repos/acme/api/issues/*/labels (no person's approval needed any more)" {
		t.Fatalf("without approve: widened %+v, narrowed %+v", rep.Widened, rep.Narrowed)
	}
	rep = replay(strings.Replace(cfg, "      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/labels], approve: true}\n", "", 1))
	if rep.Flips() != 1 || len(rep.Narrowed) != 1 || rep.Narrowed[0].Grant != approved.Grant || rep.Unchanged != 1 {
		t.Fatalf("without the grant: widened %+v, narrowed %+v, %d unchanged", rep.Widened, rep.Narrowed, rep.Unchanged)
	}
}
