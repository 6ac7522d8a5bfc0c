package examples_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/report"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// incident is an example's scripted agent run, done, and what its
// post-mortem reads.
type incident struct {
	script   *servertest.Script
	src      *report.Sources
	sessions map[string]string // "agent" or "agent#run" → session id
	seqs     []uint64          // the record of each step
	session  string            // the incident's session
	seq      uint64            // the incident's record
}

// runIncident runs an example's agent.json against its keyhole.yaml, as
// the broker serves it (each run of an agent a phantom-token session of
// the script's scope, on a clock the script moves), with the upstreams
// standing in for the real APIs. The reports read the log as `keyhole
// report` does, with the example's own config. With
// KEYHOLE_EXAMPLES_KEEP=DIR the data dir, the key file and the local
// config are kept in DIR/<example>, to run the binary on.
func runIncident(t *testing.T, dir string) *incident {
	t.Helper()
	s := servertest.LoadScript(t, filepath.Join(dir, "agent.json"))
	text, err := os.ReadFile(filepath.Join(dir, "keyhole.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if keep := os.Getenv("KEYHOLE_EXAMPLES_KEEP"); keep != "" {
		root = filepath.Join(keep, dir)
		os.RemoveAll(root)
		if err := os.MkdirAll(root, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(root, "keyhole.yaml")
	if err := os.WriteFile(cfgPath, s.LocalConfig(t, text), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := vault.KeySource{KeyFile: filepath.Join(root, "master.key")}
	dataDir := filepath.Join(root, "data")
	if _, err := server.Init(server.InitOptions{ConfigPath: filepath.Join(root, "starter.yaml"), DataDir: dataDir, KeyFile: keys.KeyFile}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	v, err := vault.Open(filepath.Join(dataDir, server.VaultFile), keys)
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range s.Secrets {
		if err := v.Set(name, []byte(value), "example"); err != nil {
			t.Fatal(err)
		}
	}
	v.Close()
	start := time.Now().UTC().Truncate(time.Second)
	clock := servertest.NewClock(start)
	rt, err := server.Open(server.RuntimeOptions{DataDir: dataDir, ConfigPath: cfgPath, Keys: keys, Now: clock.Now})
	if err != nil {
		t.Fatalf("server.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Runtime.Close = %v", err)
		}
	})
	// Each run of an agent is a phantom-token session labelled with the
	// agent's name, served over streamable HTTP, so runs can overlap.
	store, err := sessions.Open(rt.DataDir.File(server.SessionsFile), rt.Vault.DeriveKey(sessions.KeyLabel))
	if err != nil {
		t.Fatal(err)
	}
	live := server.NewLiveSessions(store, server.LiveSessionsOptions{Configs: rt.Broker.Configs(), Now: clock.Now})
	srv := httptest.NewServer(rt.Broker.HTTPHandler(live, server.HTTPOptions{Loopback: true}))
	var clients []*client.Client
	s.Run(t, func(agent string) *client.Client {
		_, tok, err := live.Create(admin.SessionRequest{Scope: s.Scope, Label: agent})
		if err != nil {
			t.Fatal(err)
		}
		c, err := servertest.ConnectHTTP(srv.URL+"/mcp", tok, agent)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		return c
	}, func(d time.Duration) { clock.Advance(start.Add(d).Sub(clock.Now())) })
	for _, c := range clients {
		c.Close()
	}
	srv.Close()
	live.Flush()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	cfg, err := config.Load(filepath.Join(dir, "keyhole.yaml"), tools.Env{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := server.OpenAuditReader(dataDir, keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	src, err := r.ReportSources(cfg, clock.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	inc := &incident{script: s, src: src, sessions: map[string]string{}}
	// One record per call, in the order of the steps.
	var recs []audit.Record
	err = r.Stream(context.Background(), audit.Filter{}, func(rec audit.Record) error {
		if !strings.HasPrefix(rec.Tool, "keyhole.") { // keyhole's own records (a session started)
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(s.Steps) {
		t.Fatalf("%d records for %d steps", len(recs), len(s.Steps))
	}
	for i, st := range s.Steps {
		key := st.Agent
		if st.Run != "" {
			key += "#" + st.Run
		}
		if st.Tool != recs[i].Tool || recs[i].Client != st.Agent+"/1.0" {
			t.Fatalf("record %d = %s by %s, want step %s", i, recs[i].Tool, recs[i].Client, st)
		}
		inc.sessions[key] = recs[i].Session
		inc.seqs = append(inc.seqs, recs[i].Seq)
		if st.Incident {
			inc.session, inc.seq = recs[i].Session, recs[i].Seq
		}
	}
	if inc.seq == 0 {
		t.Fatal("the script marks no incident")
	}
	return inc
}

// post is the post-mortem of the incident, read back from its JSON as a
// program reading `keyhole report session --json` would.
type post struct {
	Session struct {
		Scope    string
		Calls    report.CallCounts
		Incident struct{ Seq uint64 }
	}
	Questions []struct {
		ID     string
		Answer string
		Facts  json.RawMessage
	}
	Timeline []report.Event
}

func (inc *incident) postMortem(t *testing.T) (*post, map[string]string) {
	t.Helper()
	rep, err := report.Session(context.Background(), inc.src, inc.session, report.SessionOptions{Incident: inc.seq})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var p post
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	answers := map[string]string{}
	var ids []string
	for _, q := range p.Questions {
		ids = append(ids, q.ID)
		answers[q.ID] = q.Answer
	}
	if !slices.Equal(ids, report.QuestionIDs) {
		t.Fatalf("questions = %v, want %v", ids, report.QuestionIDs)
	}
	marked := 0
	for _, e := range p.Timeline {
		if e.Incident {
			marked++
			if e.Seq != inc.seq {
				t.Fatalf("the timeline marks %d, want %d", e.Seq, inc.seq)
			}
		}
	}
	if marked != 1 {
		t.Fatalf("the timeline marks %d calls as the incident", marked)
	}
	return &p, answers
}

// facts decodes the facts of question id.
func facts[T any](t *testing.T, p *post, id string) T {
	t.Helper()
	var f T
	for _, q := range p.Questions {
		if q.ID == id {
			if err := json.Unmarshal(q.Facts, &f); err != nil {
				t.Fatalf("facts of %s: %v", id, err)
			}
			return f
		}
	}
	t.Fatalf("no question %s", id)
	return f
}

func hasAll(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s %q does not say %q", what, text, w)
		}
	}
}

// TestIncidentCleanupAgent: an archival agent whose S3 credential also
// deletes. The report finds the delete reach it never used and the
// attempt beyond it; a token sized to its reads would have expired 37
// minutes before; scope suggest keeps list and get on the exports it read.
func TestIncidentCleanupAgent(t *testing.T) {
	inc := runIncident(t, "incident-cleanup-agent")
	p, answers := inc.postMortem(t)
	if p.Session.Scope != "archive_cleanup" || p.Session.Calls != (report.CallCounts{Total: 5, Allowed: 4, Denied: 1}) {
		t.Fatalf("session = %+v", p.Session)
	}

	held := facts[report.HeldFacts](t, p, "held")
	if len(held.Credentials) != 1 || held.Credentials[0].Secret != "aws_archive" ||
		!slices.Equal(held.Credentials[0].Tools, []string{"archive", "archive_admin"}) || !slices.Equal(held.Credentials[0].Kinds, []string{"static"}) {
		t.Errorf("held = %+v", held)
	}
	nec := facts[report.NecessaryFacts](t, p, "necessary")
	aws := nec.Credentials[0]
	if !aws.Necessary || aws.GrantedLines != 7 || aws.UsedLines != 2 ||
		!slices.Equal(aws.UnusedDeletes, []string{"archive_admin: DELETE /staging/**", "archive_admin: DELETE /exports/**"}) ||
		nec.DeniedCalls != 1 || nec.Denied[0].Value != "archive_admin: DELETE /backups/db-2025-12-31.dump (not_granted)" {
		t.Errorf("necessary = %+v", nec)
	}
	hasAll(t, "necessary", answers["necessary"], "2 of its 7 granted lines", "delete reach", "DELETE /backups/db-2025-12-31.dump")
	exp := facts[report.ExpiryAnswerFacts](t, p, "expiry")
	if e := exp.Credentials[0]; !e.LongLived || !e.ExpiredBefore || e.SizedSeconds != 180 || e.MarginSeconds != 37*60 {
		t.Errorf("expiry = %+v", e)
	}
	hasAll(t, "expiry", answers["expiry"], "Yes.", "long-lived", "3 minutes of work", "37 minutes before the incident")
	fit := facts[report.ScopeFitFacts](t, p, "scope_fit")
	if fit.Verdict != "broader" || fit.Sessions != 2 || len(fit.Agents) != 1 || fit.Agents[0] != (report.Counted{Value: "archiver", Count: 2}) ||
		!slices.Contains(fit.Broad, `archive: list "" (the whole bucket)`) || !slices.Contains(fit.Unused, "archive_admin: DELETE /exports/**") {
		t.Errorf("scope_fit = %+v", fit)
	}
	shared := facts[report.SharedFacts](t, p, "shared")
	if s := shared.Credentials[0]; s.Sessions != 1 || len(s.OtherScopes) != 0 {
		t.Errorf("shared = %+v", s)
	}

	blast, err := report.BlastRadius(context.Background(), inc.src, report.BlastOptions{Secret: "aws_archive"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{report.FlagDeleteReach, report.FlagWriteReach, report.FlagBroadPattern, report.FlagGrantedNeverUsed} {
		if !slices.Contains(blast.Secrets[0].Flags, f) {
			t.Errorf("blast radius of aws_archive flags %v, want %s", blast.Secrets[0].Flags, f)
		}
	}
	sug, err := report.Suggest(context.Background(), inc.src, report.SuggestOptions{Scope: "archive_cleanup"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []policy.GrantConfig{{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"exports/2025/"}}}; !jsonEqual(sug.Grants, want) {
		t.Errorf("scope suggest = %+v, want %+v", sug.Grants, want)
	}
	for _, d := range sug.Diff {
		if d.Tool == "archive_admin" && d.Status != "unused" {
			t.Errorf("scope suggest keeps %+v", d)
		}
	}
	if len(sug.Denied) != 1 || !strings.Contains(sug.Denied[0].Value, "DELETE /backups") {
		t.Errorf("scope suggest denied = %+v", sug.Denied)
	}
}

// TestIncidentOnboardingBot: a ticket-triage scope whose credential can
// create users. The bot's incident is the first write to /users of its
// session; the scope was inherited from IT's provisioning agent.
func TestIncidentOnboardingBot(t *testing.T) {
	inc := runIncident(t, "incident-onboarding-bot")
	p, answers := inc.postMortem(t)
	if inc.session != inc.sessions["onboarding-bot"] {
		t.Fatalf("the incident is in session %s, want onboarding-bot's", inc.session)
	}
	nec := facts[report.NecessaryFacts](t, p, "necessary")
	hd := nec.Credentials[0]
	if hd.Secret != "helpdesk_admin" || hd.IncidentLine != "helpdesk: POST /users" || !hd.IncidentFirst || !hd.IncidentWrites || hd.UsedLines != 5 || hd.GrantedLines != 8 {
		t.Errorf("necessary = %+v", hd)
	}
	hasAll(t, "necessary", answers["necessary"], "the incident used helpdesk: POST /users (write reach)")
	fit := facts[report.ScopeFitFacts](t, p, "scope_fit")
	if fit.Verdict != "inherited" || fit.Sessions != 2 || fit.SessionUsed != 5 || fit.Lines != 8 ||
		!jsonEqual(fit.Agents, []report.Counted{{Value: "it-provisioning", Count: 1}, {Value: "onboarding-bot", Count: 1}}) {
		t.Errorf("scope_fit = %+v", fit)
	}
	hasAll(t, "scope_fit", answers["scope_fit"], "Inherited", "2 agents", "5 of its 8 granted lines")
	exp := facts[report.ExpiryAnswerFacts](t, p, "expiry")
	if e := exp.Credentials[0]; !e.ExpiredBefore || e.SizedSeconds != 240 || e.MarginSeconds != 21*60 {
		t.Errorf("expiry = %+v", e)
	}
	shared := facts[report.SharedFacts](t, p, "shared")
	if s := shared.Credentials[0]; s.Sessions != 1 || s.Agents[0].Value != "it-provisioning" {
		t.Errorf("shared = %+v", s)
	}
	blast, err := report.BlastRadius(context.Background(), inc.src, report.BlastOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := blast.Secrets[0].Flags; !slices.Contains(f, report.FlagWriteReach) || slices.Contains(f, report.FlagDeleteReach) {
		t.Errorf("blast radius flags %v, want write reach and no delete reach", f)
	}
	// From the bot's session alone, suggest keeps its triage and, as a
	// call the scope allowed, the incident's POST /users: the report says
	// to remove it by hand, suggest never guesses what was wrong.
	sug, err := report.Suggest(context.Background(), inc.src, report.SuggestOptions{Scope: "ticket_triage", Session: inc.session, Since: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := []policy.GrantConfig{
		{Tool: "helpdesk", Methods: []string{"GET"}, Paths: []string{"/tickets", "/tickets/*"}},
		{Tool: "helpdesk", Methods: []string{"GET", "POST"}, Paths: []string{"/tickets/4711/comments"}},
		{Tool: "helpdesk", Methods: []string{"POST"}, Paths: []string{"/users"}},
	}
	if !jsonEqual(sug.Grants, want) {
		t.Errorf("scope suggest --session = %+v, want %+v", sug.Grants, want)
	}
}

// TestIncidentBillingSync: a sync agent that reads whole customer records
// and passes on three fields. The report shows what it received, the
// fields it used, and proposes response.fields.
func TestIncidentBillingSync(t *testing.T) {
	inc := runIncident(t, "incident-billing-sync")
	p, answers := inc.postMortem(t)
	nec := facts[report.NecessaryFacts](t, p, "necessary")
	var stripe *report.NecessaryFact
	for i := range nec.Credentials {
		if nec.Credentials[i].Secret == "stripe_live" {
			stripe = &nec.Credentials[i]
		}
	}
	if stripe == nil || len(stripe.Responses) != 1 {
		t.Fatalf("necessary = %+v", nec)
	}
	ru := stripe.Responses[0]
	if ru.Tool != "stripe" || len(ru.Fields) != 0 || ru.Calls != 3 || ru.AvgBytes < 500 ||
		!slices.Equal(ru.Passed, []string{"currency", "delinquent", "email"}) || !slices.Equal(ru.Proposed, ru.Passed) {
		t.Errorf("stripe responses = %+v", ru)
	}
	hasAll(t, "necessary", answers["necessary"], "passed on only currency, delinquent and email", "response.fields [currency, delinquent, email]")
	sug, err := report.Suggest(context.Background(), inc.src, report.SuggestOptions{Scope: "billing_sync"})
	if err != nil {
		t.Fatal(err)
	}
	want := []policy.GrantConfig{
		{Tool: "crm", Methods: []string{"PATCH"}, Paths: []string{"/accounts/*"}},
		{Tool: "stripe", Methods: []string{"GET"}, Paths: []string{"/customers/*"}},
	}
	if !jsonEqual(sug.Grants, want) {
		t.Errorf("scope suggest = %+v, want %+v", sug.Grants, want)
	}
	for _, d := range sug.Diff {
		if d.Line == "GET /accounts/*" && d.Status != "unused" || d.Line == "PATCH /accounts/*" && d.Status != "keep" {
			t.Errorf("diff line %+v", d)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
