package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
	"github.com/keyhole-dev/keyhole/vault/pgvault"
)

// twoBrokers are two brokers of one config whose sessions live in one
// PostgreSQL store, each with its own audit log: what two hosts behind a
// load balancer hold.
func twoBrokers(t *testing.T) (e *env, a, b *LiveSessions, bb *Broker) {
	t.Helper()
	e = newEnv(t, baseConfig)
	db := servertest.MigratedPostgres(t)
	open := func(replica string, br *Broker) *LiveSessions {
		st, err := sessions.OpenPostgres(db, e.vault.DeriveKey(sessions.KeyLabel))
		if err != nil {
			t.Fatal(err)
		}
		return NewLiveSessions(st, LiveSessionsOptions{Configs: br.Configs(), Now: e.clock.Now, Replica: replica})
	}
	al, err := audit.Open(audit.Options{Path: filepath.Join(t.TempDir(), "audit.sqlite"), Key: e.vault.DeriveKey(auditKeyLabel)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	bb = NewBroker(Options{Config: e.broker.Config(), Secrets: e.vault, Audit: auditLog{al}, Now: e.clock.Now})
	return e, open("a", e.broker), open("b", bb), bb
}

func sharedCall(t *testing.T, br *Broker, m *LiveSessions, tok, path string) *Outcome {
	t.Helper()
	s, err := m.Authenticate(tok)
	if err != nil {
		return &Outcome{Decision: audit.Deny, Message: err.Error()}
	}
	args, _ := json.Marshal(map[string]string{"method": "GET", "path": path})
	return br.Call(context.Background(), s, "github", args)
}

// max_calls counts every broker's calls (scope tiny: 3 calls).
func TestSharedStoreMaxCallsCountsEveryBroker(t *testing.T) {
	e, a, b, bb := twoBrokers(t)
	info, tok, err := a.Create(admin.SessionRequest{Scope: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	for i, br := range []struct {
		b *Broker
		m *LiveSessions
	}{{e.broker, a}, {bb, b}, {e.broker, a}} {
		if out := sharedCall(t, br.b, br.m, tok, "/repos/acme/api/issues"); out.Decision != audit.Allow {
			t.Fatalf("call %d of 3: %s %s", i+1, out.Decision, out.Message)
		}
	}
	out := sharedCall(t, bb, b, tok, "/repos/acme/api/issues")
	if out.Decision != audit.Deny || !strings.Contains(out.Message, "has used all 3 calls") {
		t.Fatalf("the fourth call, through the other broker: %s %s", out.Decision, out.Message)
	}
	if got, _ := a.Show(info.ID); got.Calls != 4 {
		t.Fatalf("calls of the session = %d, want 4", got.Calls)
	}
}

// The tripwire counts every broker's denials: one on each of two brokers
// reaches max_denials 2, and the session ends on both.
func TestSharedStoreTripwireCountsEveryBroker(t *testing.T) {
	e, a, b, bb := twoBrokers(t)
	_, tok, err := a.Create(admin.SessionRequest{Scope: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if out := sharedCall(t, e.broker, a, tok, "/admin"); out.Decision != audit.Deny {
		t.Fatalf("a denied path through a: %s", out.Decision)
	}
	if out := sharedCall(t, bb, b, tok, "/admin"); out.Decision != audit.Deny || !strings.Contains(out.Message, "tripwire") {
		t.Fatalf("the second denial, through b: %s %s; want the tripwire", out.Decision, out.Message)
	}
	out := sharedCall(t, e.broker, a, tok, "/repos/acme/api/issues")
	if out.Decision != audit.Deny || !strings.Contains(out.Message, "tripwire") {
		t.Fatalf("a granted call through a after b's tripwire: %s %s", out.Decision, out.Message)
	}
	if got := e.up.Requests(); len(got) != 0 {
		t.Fatalf("the upstream received %d requests", len(got))
	}
}

// A session revoked through one broker is denied by another that holds it
// live, at its next call.
func TestSharedStoreRevocationReachesALiveSession(t *testing.T) {
	e, a, b, bb := twoBrokers(t)
	info, tok, err := a.Create(admin.SessionRequest{Scope: "triage"})
	if err != nil {
		t.Fatal(err)
	}
	if out := sharedCall(t, bb, b, tok, "/repos/acme/api/issues"); out.Decision != audit.Allow {
		t.Fatalf("a call through b: %s %s", out.Decision, out.Message)
	}
	if _, err := a.Revoke(info.ID, "", false, "by ops"); err != nil {
		t.Fatal(err)
	}
	before := len(e.up.Requests())
	out := sharedCall(t, bb, b, tok, "/repos/acme/api/issues")
	if out.Decision != audit.Deny || !strings.Contains(out.Message, "revoked") {
		t.Fatalf("b's next call after a revoked it: %s %s", out.Decision, out.Message)
	}
	if len(e.up.Requests()) != before {
		t.Fatal("the upstream received the call of a revoked session")
	}
	if got, _ := b.Show(info.ID); got.State != policy.StateRevoked {
		t.Fatalf("b shows the session %s", got.State)
	}
}

// A secret rotated through one broker's vault of a shared store is the
// one every other broker sends at its next call, although each holds the
// old value decrypted in its cache (secretcache.go): the cache is checked
// against the store's version on every call, and the store's cached rows
// are emptied by NOTIFY.
func TestSharedStoreRotationReachesEveryBrokersCache(t *testing.T) {
	e := newEnv(t, baseConfig)
	db := servertest.MigratedPostgres(t)
	key := make([]byte, 32)
	rand.Read(key)
	keys := vault.KeySource{EnvKey: base64.StdEncoding.EncodeToString(key)}
	if err := pgvault.Create(context.Background(), db, keys, nil); err != nil {
		t.Fatal(err)
	}
	open := func() *pgvault.Vault {
		v, err := pgvault.Open(context.Background(), db, keys)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	va, vb := open(), open()
	const first, second = "ghp_FirstValue_0123456789abcdefAB", "ghp_SecondValue_9876543210fedcbaCD"
	if err := va.Set("github_token", []byte(first), "test"); err != nil {
		t.Fatal(err)
	}
	st, err := sessions.OpenPostgres(db, va.DeriveKey(sessions.KeyLabel))
	if err != nil {
		t.Fatal(err)
	}
	broker := func(v *pgvault.Vault) (*Broker, *LiveSessions) {
		al, err := audit.Open(audit.Options{Path: filepath.Join(t.TempDir(), "audit.sqlite"), Key: v.DeriveKey(auditKeyLabel)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { al.Close() })
		br := NewBroker(Options{Config: e.broker.Config(), Secrets: v, Audit: auditLog{al}, Now: e.clock.Now})
		return br, NewLiveSessions(st, LiveSessionsOptions{Configs: br.Configs(), Now: e.clock.Now})
	}
	ba, ma := broker(va)
	bb, mb := broker(vb)
	_, tok, err := ma.Create(admin.SessionRequest{Scope: "triage"})
	if err != nil {
		t.Fatal(err)
	}
	sent := func(br *Broker, m *LiveSessions) string {
		t.Helper()
		if out := sharedCall(t, br, m, tok, "/repos/acme/api/issues"); out.Decision != audit.Allow {
			t.Fatalf("call: %s %s", out.Decision, out.Message)
		}
		reqs := e.up.Requests()
		return reqs[len(reqs)-1].Header.Get("Authorization")
	}
	if got := sent(bb, mb); got != "Bearer "+first {
		t.Fatal("broker b did not send the first value")
	}
	sent(ba, ma)
	if _, err := va.Rotate("github_token", []byte(second)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := sent(bb, mb)
		if got == "Bearer "+second {
			break
		}
		if got != "Bearer "+first || time.Now().After(deadline) {
			t.Fatal("broker b did not send the rotated value within 10 s of the rotation through broker a's vault")
		}
	}
	if got := sent(ba, ma); got != "Bearer "+second {
		t.Fatal("broker a did not send the rotated value")
	}
}
