package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/vault"
)

const triageYAML = `version: 1
tools:
  github:
    kind: http
    base_url: https://api.github.com
    credential: {secret: gh_token, inject: bearer}
  archive:
    kind: s3
    bucket: acme-archive
    region: us-east-1
    credential: {secret: aws_ro, inject: aws_sigv4}
scopes:
  triage:
    description: Triage issues in acme/api.
    ttl: 1h
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues, /repos/acme/api/issues/*]}
      - {tool: github, methods: [POST, DELETE], paths: [/repos/acme/api/issues/*/comments]}
      - {tool: archive, actions: [list, get], prefixes: [reports/]}
  release:
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/releases]}
`

func min_(n int) time.Duration { return time.Duration(n) * time.Minute }

// triageFixture scripts four sessions whose true answers are known:
//
//   - ses_a (triage, label nightly): three reads of issues in its first 5
//     minutes, a denied DELETE of the repo at minute 6, then at minute 40
//     the incident, another denied DELETE.
//   - ses_b (triage, label release-bot) a day before: one comment.
//   - ses_c (release) two days before: one read of the releases.
//   - ses_old (triage) 40 days before: outside the 30-day window.
//
// gh_token was created 400 days before and rotated 10 days before (v3);
// aws_ro was created 100 days before and never rotated.
func triageFixture(t *testing.T) (*fixture, uint64) {
	secrets := []vault.Meta{
		{Name: "aws_ro", Version: 1, Created: t0.Add(-100 * 24 * time.Hour), Updated: t0.Add(-100 * 24 * time.Hour)},
		{Name: "gh_token", Version: 3, Created: t0.Add(-400 * 24 * time.Hour), Updated: t0.Add(-10 * 24 * time.Hour), LastUsed: t0.Add(5 * time.Minute)},
	}
	sessions := []policy.SessionInfo{
		{ID: "ses_a", Scope: "triage", Label: "nightly", Created: t0, Expires: t0.Add(time.Hour), State: policy.StateRevoked, EndReason: "revoked by operator"},
		{ID: "ses_b", Scope: "triage", Label: "release-bot", Created: t0.Add(-24 * time.Hour), Expires: t0.Add(-23 * time.Hour), State: policy.StateExpired},
		{ID: "ses_c", Scope: "release", Label: "release-notes", Created: t0.Add(-48 * time.Hour), Expires: t0.Add(-47 * time.Hour), State: policy.StateExpired},
	}
	f := newFixture(t, triageYAML, secrets, sessions)
	const cc = "claude-code/1.0"
	f.call(t0.Add(-40*24*time.Hour), "ses_old", "triage", cc, "github", `{"method":"GET","path":"/repos/acme/api/issues"}`, 10)
	f.call(t0.Add(-48*time.Hour), "ses_c", "release", "notes/2", "github", `{"method":"GET","path":"/repos/acme/api/releases"}`, 10)
	f.call(t0.Add(-24*time.Hour), "ses_b", "triage", "bot/1", "github", `{"method":"POST","path":"/repos/acme/api/issues/3/comments","body":{"body":"x"}}`, 10)
	f.call(t0, "ses_a", "triage", cc, "github", `{"method":"GET","path":"/repos/acme/api/issues"}`, 3000)
	f.call(t0.Add(min_(2)), "ses_a", "triage", cc, "github", `{"method":"GET","path":"/repos/acme/api/issues/7"}`, 1000)
	f.call(t0.Add(min_(5)), "ses_a", "triage", cc, "github", `{"method":"GET","path":"/repos/acme/api/issues/9"}`, 1000)
	f.call(t0.Add(min_(6)), "ses_a", "triage", cc, "github", `{"method":"DELETE","path":"/repos/acme/api"}`, 0)
	f.call(t0.Add(min_(7)), "ses_a", "triage", cc, "gitlab", `{}`, 0)
	incident := f.call(t0.Add(min_(40)), "ses_a", "triage", cc, "github", `{"method":"DELETE","path":"/repos/acme/api"}`, 0)
	return f, incident
}

func TestSessionAnswersTheSixQuestions(t *testing.T) {
	f, incident := triageFixture(t)
	rep := f.session("ses_a", SessionOptions{})

	var ids []string
	for _, q := range rep.Questions {
		ids = append(ids, q.ID)
		if q.Question == "" || q.Answer == "" {
			t.Errorf("question %s = %+v, want a question and an answer", q.ID, q)
		}
	}
	if !slices.Equal(ids, []string{"held", "necessary", "active", "expiry", "scope_fit", "shared"}) {
		t.Fatalf("question ids = %v", ids)
	}
	h := rep.Session
	if h.Scope != "triage" || h.Label != "nightly" || h.State != "revoked" || h.EndReason != "revoked by operator" ||
		h.Calls != (CallCounts{Total: 6, Allowed: 3, Denied: 3}) || h.Incident.Seq != incident || h.Incident.By != "last call" ||
		!h.Incident.Time.Equal(t0.Add(min_(40))) || h.Tripwire || !slices.Equal(h.Clients, []string{"claude-code/1.0"}) {
		t.Fatalf("session header = %+v", h)
	}

	t.Run("held", func(t *testing.T) {
		ans, facts := answer[HeldFacts](t, rep, "held")
		want := []HeldFact{
			{Secret: "aws_ro", VersionAtStart: 1, VersionSource: "the vault: unchanged since before the session started", Tools: []string{"archive"}, Kinds: []string{"aws_sts", "static"}},
			{Secret: "gh_token", VersionAtStart: 3, VersionSource: "its first use in the session, at 2026-03-10 10:00:00Z", Tools: []string{"github"}, Kinds: []string{"static"}, Used: true},
		}
		if !facts.Live || !equalJSON(facts.Credentials, want) {
			t.Fatalf("held facts = %+v, want live and %+v", facts, want)
		}
		for _, s := range []string{"2 credentials", "gh_token (v3", "aws_ro (v1", "never used aws_ro"} {
			if !strings.Contains(ans, s) {
				t.Errorf("held answer %q does not say %q", ans, s)
			}
		}
	})

	t.Run("necessary", func(t *testing.T) {
		ans, facts := answer[NecessaryFacts](t, rep, "necessary")
		aws, gh := facts.Credentials[0], facts.Credentials[1]
		if aws.Necessary || aws.GrantedLines != 2 || aws.UsedLines != 0 {
			t.Errorf("aws_ro = %+v, want 2 lines, none used, not necessary", aws)
		}
		if !gh.Necessary || gh.GrantedLines != 4 || gh.UsedLines != 2 || gh.AllowedCalls != 3 ||
			!slices.Equal(gh.UnusedWrites, []string{"github: POST /repos/acme/api/issues/*/comments", "github: DELETE /repos/acme/api/issues/*/comments"}) ||
			!slices.Equal(gh.UnusedDeletes, []string{"github: DELETE /repos/acme/api/issues/*/comments"}) {
			t.Errorf("gh_token = %+v", gh)
		}
		if g := gh.Grants[1]; g.Line != "GET /repos/acme/api/issues/*" || g.Calls != 2 || g.Distinct != 2 ||
			!slices.Equal(g.Examples, []string{"GET /repos/acme/api/issues/7", "GET /repos/acme/api/issues/9"}) {
			t.Errorf("gh_token grant 1 = %+v", g)
		}
		// ses_b commented a day before: in the window.
		if g := gh.Grants[2]; g.Calls != 0 || g.ScopeCalls != 1 {
			t.Errorf("POST comments = %+v, want unused by the session, 1 call by the scope", g)
		}
		if facts.DeniedCalls != 3 || facts.Denied[0] != (Counted{"github: DELETE /repos/acme/api (not_granted)", 2}) ||
			facts.Denied[1] != (Counted{"gitlab: - (unknown_tool)", 1}) {
			t.Errorf("denied = %d %+v", facts.DeniedCalls, facts.Denied)
		}
		for _, s := range []string{"aws_ro was not necessary", "2 of its 4 granted lines", "3 allowed calls", "delete reach", "3 calls"} {
			if !strings.Contains(ans, s) {
				t.Errorf("necessary answer %q does not say %q", ans, s)
			}
		}
	})

	t.Run("active", func(t *testing.T) {
		ans, facts := answer[ActiveFacts](t, rep, "active")
		if facts.SessionSeconds != 40*60 || !facts.SessionStarted.Equal(t0) {
			t.Errorf("session facts = %+v, want 40 minutes from t0", facts)
		}
		gh := facts.Credentials[1]
		if gh.AgeDays != 10 || gh.CreatedDays != 400 || gh.RotatedAfter || !gh.FirstUse.Equal(t0) || !gh.LastUse.Equal(t0.Add(min_(5))) || gh.NotRotated90Day {
			t.Errorf("gh_token = %+v", gh)
		}
		if aws := facts.Credentials[0]; aws.AgeDays != 100 || !aws.NotRotated90Day || !aws.FirstUse.IsZero() {
			t.Errorf("aws_ro = %+v", aws)
		}
		for _, s := range []string{"40 minutes", "400 days", "10 days", "never rotated", "10:00:00Z to 10:05:00Z"} {
			if !strings.Contains(ans, s) {
				t.Errorf("active answer %q does not say %q", ans, s)
			}
		}
	})

	t.Run("expiry", func(t *testing.T) {
		ans, facts := answer[ExpiryAnswerFacts](t, rep, "expiry")
		gh := facts.Credentials[1]
		if !gh.LongLived || gh.MintedPerSession || gh.WorkSeconds != 300 || gh.SizedSeconds != 300 || !gh.SizedExpiry.Equal(t0.Add(min_(5))) ||
			!gh.ExpiredBefore || gh.MarginSeconds != 35*60 {
			t.Errorf("gh_token = %+v", gh)
		}
		// aws_ro may be assumed per session, or static: the config does not say.
		if aws := facts.Credentials[0]; aws.MintedPerSession || aws.SizedSeconds != 0 || !aws.ExpiredBefore {
			t.Errorf("aws_ro = %+v", aws)
		}
		for _, s := range []string{"Yes.", "long-lived", "5 minutes of work", "35 minutes before the incident"} {
			if !strings.Contains(ans, s) {
				t.Errorf("expiry answer %q does not say %q", ans, s)
			}
		}
	})

	t.Run("scope_fit", func(t *testing.T) {
		ans, facts := answer[ScopeFitFacts](t, rep, "scope_fit")
		if facts.Verdict != "inherited" || facts.Sessions != 2 || facts.Lines != 6 || facts.SessionUsed != 2 ||
			!equalJSON(facts.Agents, []Counted{{"nightly", 1}, {"release-bot", 1}}) ||
			!slices.Equal(facts.Unused, []string{"archive: list reports/", "archive: get reports/", "github: DELETE /repos/acme/api/issues/*/comments"}) ||
			!slices.Equal(facts.Broad, []string{"github: POST /repos/acme/api/issues/*/comments", "github: DELETE /repos/acme/api/issues/*/comments"}) {
			t.Fatalf("scope_fit facts = %+v", facts)
		}
		for _, s := range []string{"Inherited", "2 agents", "2 of its 6 granted lines"} {
			if !strings.Contains(ans, s) {
				t.Errorf("scope_fit answer %q does not say %q", ans, s)
			}
		}
	})

	t.Run("shared", func(t *testing.T) {
		ans, facts := answer[SharedFacts](t, rep, "shared")
		aws, gh := facts.Credentials[0], facts.Credentials[1]
		if aws.Sessions != 0 || len(aws.OtherScopes) != 0 {
			t.Errorf("aws_ro = %+v", aws)
		}
		if gh.Sessions != 2 || !slices.Equal(gh.OtherScopes, []string{"release"}) ||
			!equalJSON(gh.Agents, []Counted{{"release-bot", 1}, {"release-notes", 1}}) ||
			!equalJSON(gh.ScopesUsed, []Counted{{"release", 1}, {"triage", 1}}) {
			t.Errorf("gh_token = %+v", gh)
		}
		for _, s := range []string{"2 other sessions", "release-bot", "1 other scope"} {
			if !strings.Contains(ans, s) {
				t.Errorf("shared answer %q does not say %q", ans, s)
			}
		}
	})

	if len(rep.Timeline) != 6 || !rep.Timeline[5].Incident || rep.Timeline[0].Incident || rep.Timeline[0].Request != "GET /repos/acme/api/issues" {
		t.Fatalf("timeline = %+v", rep.Timeline)
	}
}

// TestSessionIncidentChangesTheAnswers: the same session with the incident
// at its second call: the work before it is the first call, the calls
// after it are not counted, and a token sized to the work would not have
// expired before it.
func TestSessionIncidentChangesTheAnswers(t *testing.T) {
	f, _ := triageFixture(t)
	var seqs []uint64
	f.log.Stream(context.Background(), audit.Filter{Session: "ses_a"}, func(r audit.Record) error { seqs = append(seqs, r.Seq); return nil })
	rep := f.session("ses_a", SessionOptions{Incident: seqs[1]})
	if rep.Session.Incident.By != "seq" || rep.Session.Incident.Request != "GET /repos/acme/api/issues/7" || !rep.Timeline[1].Incident {
		t.Fatalf("incident = %+v", rep.Session.Incident)
	}
	_, exp := answer[ExpiryAnswerFacts](t, rep, "expiry")
	// Work: the call at t0 alone; a token sized to it lives a minute and
	// the incident is at minute 2.
	if gh := exp.Credentials[1]; gh.WorkSeconds != 0 || gh.SizedSeconds != 60 || !gh.ExpiredBefore || gh.MarginSeconds != 60 {
		t.Fatalf("expiry at the second call = %+v", gh)
	}
	_, nec := answer[NecessaryFacts](t, rep, "necessary")
	if gh := nec.Credentials[1]; gh.AllowedCalls != 2 || nec.DeniedCalls != 0 {
		t.Fatalf("necessary at the second call = %+v, %d denied", gh, nec.DeniedCalls)
	}

	// --at between the calls at minutes 2 and 5: the incident is the call
	// at minute 2, at the time asked.
	rep = f.session("ses_a", SessionOptions{At: t0.Add(min_(3))})
	if rep.Session.Incident.Seq != seqs[1] || !rep.Session.Incident.Time.Equal(t0.Add(min_(3))) {
		t.Fatalf("incident at minute 3 = %+v", rep.Session.Incident)
	}
	_, exp = answer[ExpiryAnswerFacts](t, rep, "expiry")
	if gh := exp.Credentials[1]; gh.SizedSeconds != 60 || !gh.ExpiredBefore || gh.MarginSeconds != 120 {
		t.Fatalf("expiry at minute 3 = %+v", gh)
	}

	// An incident that is another session's call is refused.
	var other uint64
	f.log.Stream(context.Background(), audit.Filter{Session: "ses_b"}, func(r audit.Record) error { other = r.Seq; return nil })
	if _, err := Session(context.Background(), f.src, "ses_a", SessionOptions{Incident: other}); !errors.Is(err, ErrIncident) {
		t.Fatalf("Session with another session's incident = %v, want ErrIncident", err)
	}
	if _, err := Session(context.Background(), f.src, "ses_nosuch", SessionOptions{}); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Session of an unknown session = %v, want ErrNoSession", err)
	}
}

// TestSessionOfAScopeOnlyOneAgentUses: ses_c is the only session of
// release and used its one line: the scope fits; a stdio-like session
// without a record reads its state from the audit.
func TestSessionOfAScopeOnlyOneAgentUses(t *testing.T) {
	f, _ := triageFixture(t)
	f.src.Sessions = nil
	f.src.SessionsNote = "no broker"
	rep := f.session("ses_c", SessionOptions{})
	if rep.Session.State != "unknown" || !strings.Contains(rep.Session.Record, "audit only") || !strings.Contains(rep.Session.Record, "no broker") {
		t.Fatalf("header without a record = %+v", rep.Session)
	}
	ans, fit := answer[ScopeFitFacts](t, rep, "scope_fit")
	if fit.Verdict != "fit" || fit.Sessions != 1 || fit.Lines != 1 || fit.SessionUsed != 1 || len(fit.Unused) != 0 {
		t.Fatalf("scope_fit of release = %+v (%s)", fit, ans)
	}
	_, sh := answer[SharedFacts](t, rep, "shared")
	// ses_a and ses_b used gh_token in the window (ses_old did not: it is
	// 38 days before ses_c).
	if gh := sh.Credentials[0]; gh.Secret != "gh_token" || gh.Sessions != 2 || !slices.Equal(gh.OtherScopes, []string{"triage"}) {
		t.Fatalf("shared of release = %+v", sh)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestAgentOf(t *testing.T) {
	for _, c := range []struct{ label, client, want string }{
		{"nightly", "claude-code/1.0", "nightly"},
		{"", "claude-code/1.0", "claude-code"},
		{"stdio", "cursor/0.4", "cursor"},
		{"stdio pid 942", "archiver/1.0", "archiver"},
		{"", "", "(unnamed client)"},
	} {
		if got := agentOf(c.label, c.client); got != c.want {
			t.Errorf("agentOf(%q, %q) = %q, want %q", c.label, c.client, got, c.want)
		}
	}
}

// TestSessionTextEscapesAgentChosenText: a tool name an agent chose
// (denied as unknown, recorded as sent) with an escape sequence and a
// newline cannot forge or erase a line of the text or Markdown report;
// the JSON keeps it exact.
func TestSessionTextEscapesAgentChosenText(t *testing.T) {
	f, _ := triageFixture(t)
	evil := "gh\x1b[2K\n▶ 99 10:41:00Z github GET /fake allow 200 ← incident\u202e"
	f.call(t0.Add(min_(45)), "ses_a", "triage", "claude-code/1.0", evil, `{}`, 0)
	rep := f.session("ses_a", SessionOptions{})
	for name, write := range map[string]func(*bytes.Buffer) error{
		"text":     func(b *bytes.Buffer) error { return rep.WriteText(b) },
		"markdown": func(b *bytes.Buffer) error { return rep.WriteMarkdown(b) },
	} {
		var b bytes.Buffer
		if err := write(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if strings.ContainsAny(out, "\x1b\u202e") || strings.Contains(out, "\n▶ 99") || !strings.Contains(out, `gh\x1b[2K\n▶ 99`) {
			t.Errorf("%s report holds the agent's text raw:\n%s", name, out)
		}
	}
	b, _ := json.Marshal(rep)
	var back SessionReport
	if err := json.Unmarshal(b, &back); err != nil || back.Timeline[len(back.Timeline)-1].Tool != evil {
		t.Fatalf("JSON timeline tool = %q, want it exact", back.Timeline[len(back.Timeline)-1].Tool)
	}
}
