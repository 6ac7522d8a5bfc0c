package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// sessionJSON is what a program reads of `report session --json`.
type sessionJSON struct {
	Session struct {
		ID, Scope, Label, State, Record string
		Calls                           struct{ Total, Allowed, Denied int }
		Incident                        struct {
			Seq     uint64
			Request string
		}
	}
	Questions []struct {
		ID, Question, Answer string
		Facts                json.RawMessage
	}
	Credentials []struct {
		Secret string
		Grants []struct {
			Line  string
			Calls int
		}
	}
	Timeline []struct {
		Seq      uint64
		Request  string
		Incident bool
	}
}

// TestReportsOnALiveBroker: the four commands through the binary while a
// broker owns the data dir (they read the log without its lock), session
// labels through the broker's socket, and again once it stopped, labels
// from the session store read without opening it. No output holds the
// secret.
func TestReportsOnALiveBroker(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	serve, url := startServe(t, h)

	var s struct{ ID, Token string }
	if err := json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "triage", "--label", "nightly-triage", "--json").stdout), &s); err != nil {
		t.Fatal(err)
	}
	c, err := servertest.ConnectHTTP(url, s.Token, "report-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []string{"/issues", "/issues/1", "/issues/2", "/admin"} {
		if _, err := call(c, p); err != nil {
			t.Fatal(err)
		}
	}
	var outputs []string
	check := func(rep sessionJSON, record string) {
		t.Helper()
		var ids []string
		for _, q := range rep.Questions {
			ids = append(ids, q.ID)
			if q.Answer == "" || q.Question == "" || len(q.Facts) < 3 {
				t.Errorf("question %s = %+v", q.ID, q)
			}
		}
		if !slices.Equal(ids, []string{"held", "necessary", "active", "expiry", "scope_fit", "shared"}) {
			t.Fatalf("question ids = %v", ids)
		}
		if rep.Session.ID != s.ID || rep.Session.Label != "nightly-triage" || rep.Session.Calls.Total != 4 || rep.Session.Calls.Denied != 1 ||
			rep.Session.Incident.Request != "GET /admin" || !strings.Contains(rep.Session.Record, record) {
			t.Fatalf("session = %+v", rep.Session)
		}
		if len(rep.Timeline) != 4 || !rep.Timeline[3].Incident || len(rep.Credentials) != 1 || rep.Credentials[0].Secret != "github_token" {
			t.Fatalf("timeline %+v, credentials %+v", rep.Timeline, rep.Credentials)
		}
		if g := rep.Credentials[0].Grants; len(g) != 2 || g[0].Line != "GET /issues" || g[0].Calls != 1 || g[1].Calls != 2 {
			t.Fatalf("grants = %+v", g)
		}
	}

	r := h.ok("", "report", "session", s.ID, "--json")
	outputs = append(outputs, r.stdout)
	var rep sessionJSON
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report session --json: %v\n%s", err, r.stdout)
	}
	check(rep, "session record")
	for _, args := range [][]string{
		{"report", "session", s.ID},
		{"report", "session", s.ID, "--markdown", "--incident", strconv.FormatUint(rep.Timeline[1].Seq, 10)},
		{"report", "blast-radius"},
		{"report", "blast-radius", "--secret", "github_token", "--markdown"},
		{"report", "blast-radius", "--format", "mermaid"},
		{"report", "blast-radius", "--scope", "triage", "--format", "dot"},
		{"scope", "suggest", "--scope", "triage"},
	} {
		outputs = append(outputs, h.ok("", args...).stdout)
	}
	if !strings.Contains(outputs[1], "Session "+s.ID) || !strings.Contains(outputs[1], "← incident") {
		t.Fatalf("report session (text) =\n%s", outputs[1])
	}
	if !strings.Contains(outputs[5], "flowchart LR") || !strings.Contains(outputs[6], "digraph blast_radius") {
		t.Fatalf("graphs = %s\n%s", outputs[5], outputs[6])
	}

	var blast struct {
		Secrets []struct {
			Secret   string
			Sessions int
			Flags    []string
		}
	}
	r = h.ok("", "report", "blast-radius", "--json")
	outputs = append(outputs, r.stdout)
	if err := json.Unmarshal([]byte(r.stdout), &blast); err != nil || len(blast.Secrets) != 1 || blast.Secrets[0].Sessions != 1 || slices.Contains(blast.Secrets[0].Flags, "stale") {
		t.Fatalf("blast-radius --json = %+v (%v)", blast, err)
	}
	var sug struct {
		Grants []struct {
			Tool    string
			Methods []string
			Paths   []string
		}
		Denied []struct{ Value string }
	}
	r = h.ok("", "scope", "suggest", "--scope", "triage", "--json")
	outputs = append(outputs, r.stdout)
	if err := json.Unmarshal([]byte(r.stdout), &sug); err != nil || len(sug.Grants) != 1 ||
		!slices.Equal(sug.Grants[0].Paths, []string{"/issues", "/issues/*"}) || len(sug.Denied) != 1 || sug.Denied[0].Value != "tracker: GET /admin (not_granted)" {
		t.Fatalf("scope suggest --json = %+v (%v)\n%s", sug, err, r.stdout)
	}

	// policy test: the same config flips nothing (0); one without
	// /issues/* breaks two calls (1); a broken config is an error (2).
	if r := h.run("", "policy", "test", "--config", "keyhole.yaml"); r.code != 0 || !strings.Contains(r.stdout, "Nothing flips") {
		t.Fatalf("policy test of the same config = exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	cfg, _ := os.ReadFile(filepath.Join(h.dir, "keyhole.yaml"))
	os.WriteFile(filepath.Join(h.dir, "narrow.yaml"), []byte(strings.Replace(string(cfg), "paths: [/issues, /issues/*]", "paths: [/issues]", 1)), 0o600)
	r = h.run("", "policy", "test", "--config", "narrow.yaml", "--json")
	var replay struct {
		Narrowed []struct{ Calls int }
	}
	if err := json.Unmarshal([]byte(r.stdout), &replay); r.code != 1 || err != nil || len(replay.Narrowed) != 1 || replay.Narrowed[0].Calls != 2 {
		t.Fatalf("policy test of a narrower config = exit %d, %+v (%v)\n%s", r.code, replay, err, r.stderr)
	}
	outputs = append(outputs, r.stdout)
	os.WriteFile(filepath.Join(h.dir, "broken.yaml"), []byte("version: 1\nscopes: {x: {}}\n"), 0o600)
	if r := h.run("", "policy", "test", "--config", "broken.yaml"); r.code != 2 || r.stderr == "" {
		t.Fatalf("policy test of a broken config = exit %d %q", r.code, r.stderr)
	}
	if r := h.run("", "policy", "test"); r.code != 2 {
		t.Fatalf("policy test without --config = exit %d", r.code)
	}
	if r := h.run("", "report", "session", "ses_nosuch"); r.code != 1 || !strings.Contains(r.stderr, "no such session") {
		t.Fatalf("report session of an unknown session = exit %d %q", r.code, r.stderr)
	}
	if r := h.run("", "report", "session", s.ID, "--incident", "x"); r.code != 2 {
		t.Fatalf("report session --incident x = exit %d", r.code)
	}
	if r := h.run("", "report", "blast-radius", "--format", "svg"); r.code != 2 {
		t.Fatalf("blast-radius --format svg = exit %d", r.code)
	}

	// Without the broker: labels from the session store's snapshot.
	c.Close()
	serve.Process.Signal(syscall.SIGTERM)
	serve.Wait()
	r = h.ok("", "report", "session", s.ID, "--json")
	outputs = append(outputs, r.stdout)
	rep = sessionJSON{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	check(rep, "session record")
	h.assertNowhere(outputs...)
}

// TestBlastRadiusBeforeAnyCall: a data dir where nothing ran yet still
// shows what its credentials can reach, every grant unused.
func TestBlastRadiusBeforeAnyCall(t *testing.T) {
	h := brokerHome(t, "http://127.0.0.1:9")
	r := h.ok("", "report", "blast-radius", "--json")
	var blast struct {
		Secrets []struct {
			Secret string
			Flags  []string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &blast); err != nil || len(blast.Secrets) != 1 ||
		!slices.Contains(blast.Secrets[0].Flags, "stale") || !slices.Contains(blast.Secrets[0].Flags, "granted_never_used") {
		t.Fatalf("blast-radius before any call = %+v (%v)\n%s", blast, err, r.stdout)
	}
	if r := h.run("", "report", "session", "ses_x"); r.code != 1 || !strings.Contains(r.stderr, "no such session: ses_x") {
		t.Fatalf("report session before any call = exit %d %q", r.code, r.stderr)
	}
}

// TestReportsOnIncidents runs each incident
// example's scripted agent through `keyhole stdio` (a broker started in
// the background, each run of an agent its own client process) against
// local upstreams, then the four commands through the binary. The
// broker's clock is the wall clock here, so the answers that depend on
// the script's timing (expiry) are checked in ./examples, not here.
func TestReportsOnIncidents(t *testing.T) {
	type want struct {
		dir, verdict string
		necessary    []string // in the necessary answer
		grants       string   // scope suggest's YAML holds it
	}
	// Short subtest names: the data dir's socket path must fit in 108 bytes.
	for name, w := range map[string]want{
		"cleanup":    {"incident-cleanup-agent", "broader", []string{"delete reach (archive_admin: DELETE /staging/**", "DELETE /backups/db-2025-12-31.dump"}, "{tool: archive, actions: [list, get], prefixes: [exports/2025/]}"},
		"onboarding": {"incident-onboarding-bot", "inherited", []string{"the incident used helpdesk: POST /users (write reach)"}, "{tool: helpdesk, methods: [GET], paths: [/tickets, /tickets/*]}"},
		"billing":    {"incident-billing-sync", "broader", []string{"response.fields [currency, delinquent, email]"}, "{tool: stripe, methods: [GET], paths: [/customers/*]}"},
	} {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join("..", "..", "examples", w.dir)
			s := servertest.LoadScript(t, filepath.Join(src, "agent.json"))
			text, err := os.ReadFile(filepath.Join(src, "keyhole.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			h := newHome(t)
			h.ok("", "init")
			var secrets []string
			for name, value := range s.Secrets {
				h.ok(value, "secret", "set", name)
				secrets = append(secrets, value)
			}
			if err := os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), s.LocalConfig(t, text), 0o600); err != nil {
				t.Fatal(err)
			}
			h.killBrokerAtCleanup(t)
			var clients []*client.Client
			s.Run(t, func(agent string) *client.Client {
				c, err := servertest.StartCommand(binary, h.dir, h.env, []string{"stdio", "--scope", s.Scope}, agent)
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
				return c
			}, func(time.Duration) {})
			for _, c := range clients {
				c.Close()
			}
			var recs []struct {
				Seq     uint64
				Session string
			}
			for _, line := range strings.Split(strings.TrimSpace(h.ok("", "audit", "tail", "-n", "1000", "--json").stdout), "\n") {
				var r struct {
					Seq     uint64
					Session string
					Tool    string
				}
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(r.Tool, "keyhole.") { // keyhole's own records (a session started)
					recs = append(recs, struct {
						Seq     uint64
						Session string
					}{r.Seq, r.Session})
				}
			}
			_, at := s.Incident()
			if len(recs) != len(s.Steps) || at < 0 {
				t.Fatalf("%d records for %d steps (incident at step %d)", len(recs), len(s.Steps), at)
			}
			inc := recs[at]
			outputs := []string{h.ok("", "report", "session", inc.Session, "--incident", strconv.FormatUint(inc.Seq, 10)).stdout}
			r := h.ok("", "report", "session", inc.Session, "--incident", strconv.FormatUint(inc.Seq, 10), "--json")
			outputs = append(outputs, r.stdout)
			var rep sessionJSON
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatal(err)
			}
			answers := map[string]string{}
			var fit struct{ Verdict string }
			for _, q := range rep.Questions {
				answers[q.ID] = q.Answer
				if q.ID == "scope_fit" {
					json.Unmarshal(q.Facts, &fit)
				}
			}
			if fit.Verdict != w.verdict || rep.Session.Incident.Seq != inc.Seq {
				t.Errorf("scope_fit verdict %q (incident %d), want %q (%d): %s", fit.Verdict, rep.Session.Incident.Seq, w.verdict, inc.Seq, answers["scope_fit"])
			}
			for _, n := range w.necessary {
				if !strings.Contains(answers["necessary"], n) {
					t.Errorf("necessary = %q, want it to say %q", answers["necessary"], n)
				}
			}
			sug := h.ok("", "scope", "suggest", "--scope", s.Scope).stdout
			if !strings.Contains(sug, w.grants) {
				t.Errorf("scope suggest =\n%s\nwant %s", sug, w.grants)
			}
			outputs = append(outputs, sug, h.ok("", "report", "blast-radius", "--markdown").stdout, h.ok("", "report", "blast-radius", "--format", "dot").stdout)
			if r := h.run("", "policy", "test", "--config", "keyhole.yaml"); r.code != 0 {
				t.Errorf("policy test against the config that ran = exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			for _, o := range outputs {
				for _, v := range secrets {
					servertest.AssertNoSecret(t, "report output", o, v)
				}
			}
		})
	}
}
