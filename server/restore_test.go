package server

import (
	"testing"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

// restart drops h's live sessions without a Flush (as a crash does) and
// serves the same store again, restored as a starting broker restores it.
func (h *httpEnv) restart(t *testing.T) *LiveSessions {
	t.Helper()
	store := h.sessions.store
	m := NewLiveSessions(store, LiveSessionsOptions{Configs: h.broker.Configs(), History: auditUsage(h.audit), Now: h.clock.Now})
	if _, _, err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRestoredCountersComeFromTheAudit (issue 14 item 6): counters a crash
// kept from the store come back from the audit log, which holds every
// call, counted as policy counts them.
func TestRestoredCountersComeFromTheAudit(t *testing.T) {
	h := newHTTPEnv(t)
	info, tok, err := h.sessions.Create(admin.SessionRequest{Scope: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.client(tok)
	if err != nil {
		t.Fatal(err)
	}
	ok := map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	servertest.CallTool(t, c, "github", ok)
	servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/admin"})         // a denial
	servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/x", "bogus": 1}) // invalid arguments: a denial, not a call
	// A crash before the store heard of any of it: the store as it was
	// when the session started.
	if err := h.sessions.store.Save(info); err != nil {
		t.Fatal(err)
	}
	got, err := h.restart(t).Show(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Calls != 2 || got.Denials != 2 || got.State != policy.StateEnded || got.LastCall.IsZero() {
		t.Fatalf("restored session = %+v; want 2 calls and 2 denials from the audit, ended by max_denials 2", got)
	}
}

// TestASessionWhoseConfigCannotBeRestoredEnds (issue 14 item 6): a
// session whose kept config is gone ends with the reason, never runs the
// file as it is now.
func TestASessionWhoseConfigCannotBeRestoredEnds(t *testing.T) {
	h := newHTTPEnv(t)
	info, _, err := h.sessions.Create(admin.SessionRequest{Scope: "triage"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := h.sessions.store.Get(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Another store sealed with the same key, without the snapshot.
	other, err := sessions.Open(h.dir+"/other.db", h.vault.DeriveKey(sessions.KeyLabel))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Create(rec); err != nil {
		t.Fatal(err)
	}
	m := NewLiveSessions(other, LiveSessionsOptions{Configs: h.broker.Configs(), Now: h.clock.Now})
	if _, ended, err := m.Restore(); err != nil || ended != 1 {
		t.Fatalf("Restore = %d ended, %v; want the session ended", ended, err)
	}
	got, _ := m.Show(info.ID)
	if got.State != policy.StateEnded || got.EndReason == "" {
		t.Fatalf("a session without its config = %+v; want ended with a reason", got)
	}
}
