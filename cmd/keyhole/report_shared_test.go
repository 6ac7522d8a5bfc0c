package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// With --store, the report commands read every chain of the store: one
// session's calls through two brokers are counted together by report
// session, blast-radius, scope suggest and policy test; --replica reads
// one chain; an incident is named REPLICA:SEQ, a bare seq being refused
// while the store has several chains.
func TestReportsReadEveryChainOfTheStore(t *testing.T) {
	up := newMarkerUpstream(t)
	h := sharedHome(t, up.URL, 25)
	b1, b2 := startBroker(t, h, "b1"), startBroker(t, h, "b2")
	id, tok := sessionNew(t, h, "triage")
	for i, path := range []string{"/issues/1", "/issues/2", "/issues/3"} {
		if res, err := call(connect(t, b1.url, tok), path); err != nil || res.IsError {
			t.Fatalf("call %d through b1: %v %s", i, err, resultText(res))
		}
	}
	c2 := connect(t, b2.url, tok)
	for _, path := range []string{"/issues/4", "/issues/5"} {
		if res, err := call(c2, path); err != nil || res.IsError {
			t.Fatalf("call %s through b2: %v %s", path, err, resultText(res))
		}
	}
	if res, err := call(c2, "/admin"); err != nil || !res.IsError {
		t.Fatalf("call /admin through b2 = %v %s, want denied", err, resultText(res))
	}
	var denied sharedRecord
	for _, r := range sharedRecords(t, h, "--session", id) {
		if r.Path == "/admin" {
			denied = r
		}
	}
	if denied.Replica != "b2" || denied.Seq == 0 {
		t.Fatalf("the denied call's record = %+v, want one in b2's chain", denied)
	}

	type sessionReport struct {
		Session struct {
			Calls    struct{ Total, Allowed, Denied int }
			State    string
			Incident struct {
				Seq      uint64
				Replica  string
				Decision string
			}
		}
		Timeline []struct {
			Seq     uint64
			Replica string
		}
	}
	report := func(args ...string) sessionReport {
		t.Helper()
		var rep sessionReport
		out := h.ok("", append([]string{"report", "session", id, "--json"}, args...)...).stdout
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("report session %s --json: %v\n%s", strings.Join(args, " "), err, out)
		}
		return rep
	}

	t.Run("report session counts the calls of both chains", func(t *testing.T) {
		rep := report()
		if c := rep.Session.Calls; c.Total != 6 || c.Allowed != 5 || c.Denied != 1 {
			t.Fatalf("report session --store: calls %+v, want 6: 5 allowed (3 through b1, 2 through b2), 1 denied", c)
		}
		if rep.Session.State != "active" {
			t.Errorf("report session --store: state %q, want active (the store's session record)", rep.Session.State)
		}
		chains := map[string]int{}
		for _, e := range rep.Timeline {
			chains[e.Replica]++
		}
		if len(rep.Timeline) != 6 || chains["b1"] != 3 || chains["b2"] != 3 {
			t.Fatalf("report session --store: timeline of %d calls by chain %v, want 3 of b1 and 3 of b2", len(rep.Timeline), chains)
		}
		if inc := rep.Session.Incident; inc.Replica != "b2" || inc.Seq != denied.Seq || inc.Decision != "deny" {
			t.Errorf("report session --store: incident %+v, want the last call, b2:%d (denied)", inc, denied.Seq)
		}
	})

	t.Run("an incident is named REPLICA:SEQ", func(t *testing.T) {
		name := fmt.Sprintf("b2:%d", denied.Seq)
		if inc := report("--incident", name).Session.Incident; inc.Replica != "b2" || inc.Seq != denied.Seq || inc.Decision != "deny" {
			t.Fatalf("report session --incident %s: incident %+v", name, inc)
		}
		bare := fmt.Sprint(denied.Seq)
		for args, want := range map[string]string{
			"--incident " + bare:                      "REPLICA:SEQ",
			"--incident b9:1":                         `no audit chain of replica "b9"`,
			"--incident b1:" + bare + " --replica b2": "--replica b2 reads only that chain",
			"--incident b1:x":                         "not a record number",
		} {
			r := h.run("", append([]string{"report", "session", id, "--json"}, strings.Fields(args)...)...)
			if r.code == 0 || !strings.Contains(r.stderr, want) || r.stdout != "" {
				t.Errorf("report session %s: exit %d, stdout %q, stderr %q; want an error saying %q", args, r.code, r.stdout, r.stderr, want)
			}
		}
		rep := report("--replica", "b2", "--incident", bare)
		if c := rep.Session.Calls; c.Total != 3 || rep.Session.Incident.Seq != denied.Seq {
			t.Fatalf("report session --replica b2 --incident %s: calls %+v, incident %+v; want b2's 3 calls", bare, c, rep.Session.Incident)
		}
	})

	t.Run("blast-radius, scope suggest and policy test see both chains", func(t *testing.T) {
		var blast struct {
			Secrets []struct {
				Secret          string
				Sessions, Calls int
			}
			Scopes []struct {
				Scope                   string
				Sessions, Calls, Denied int
			}
		}
		out := h.ok("", "report", "blast-radius", "--json").stdout
		if err := json.Unmarshal([]byte(out), &blast); err != nil {
			t.Fatalf("report blast-radius --json: %v\n%s", err, out)
		}
		if len(blast.Secrets) != 1 || blast.Secrets[0].Calls != 5 || blast.Secrets[0].Sessions != 1 {
			t.Errorf("report blast-radius --store: secrets %+v, want github_token: 5 calls of 1 session", blast.Secrets)
		}
		for _, s := range blast.Scopes {
			if s.Scope == "triage" && (s.Calls != 5 || s.Denied != 1 || s.Sessions != 1) {
				t.Errorf("report blast-radius --store: scope %+v, want triage: 5 calls, 1 denied, 1 session", s)
			}
		}
		var sug struct {
			Calls, Sessions int
			YAML            string
		}
		out = h.ok("", "scope", "suggest", "--scope", "triage", "--json").stdout
		if err := json.Unmarshal([]byte(out), &sug); err != nil {
			t.Fatalf("scope suggest --json: %v\n%s", err, out)
		}
		if sug.Calls != 5 || sug.Sessions != 1 || !strings.Contains(sug.YAML, "/issues/*") {
			t.Errorf("scope suggest --store: %d calls of %d sessions, YAML %q; want 5 calls of 1 session, /issues/*", sug.Calls, sug.Sessions, sug.YAML)
		}
		var replay struct{ Replayed, Unchanged int }
		out = h.ok("", "policy", "test", "--config", filepath.Join(h.dir, "keyhole.yaml"), "--json").stdout
		if err := json.Unmarshal([]byte(out), &replay); err != nil || replay.Replayed != 6 || replay.Unchanged != 6 {
			t.Errorf("policy test --store with the same config = %+v (%v), want 6 calls replayed, 6 unchanged\n%s", replay, err, out)
		}
	})
}
