package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
)

// sentAuth is the Authorization header of the upstream's last request.
func sentAuth(t *testing.T, e *env) string {
	t.Helper()
	reqs := e.up.Requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return reqs[len(reqs)-1].Header.Get("Authorization")
}

// callGitHub makes one allowed call and fails unless it succeeded.
func callGitHub(t *testing.T, e *env, s *Session) {
	t.Helper()
	out := e.broker.Call(context.Background(), s, "github", json.RawMessage(`{"method":"GET","path":"/repos/acme/api/issues"}`))
	if out.Result == nil {
		t.Fatalf("Call(github) = %s, want a result", out.Message)
	}
}

// TestSecretCacheFollowsTheVault: every call injects the value the vault
// holds now, whatever changed it and whether or not the broker was told:
// a rotate, a removal and a new set of the same name (version 1 again), a
// replace.
func TestSecretCacheFollowsTheVault(t *testing.T) {
	e := newEnv(t, baseConfig)
	s, err := e.broker.NewSession(NewSessionID(), "triage", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	callGitHub(t, e, s)
	if got := sentAuth(t, e); got != "Bearer "+testSecret {
		t.Fatalf("first call sent %q, want the stored secret", got)
	}
	steps := []struct {
		name   string
		change func() error
		want   string
	}{
		{"rotate", func() error {
			_, err := e.vault.Rotate("github_token", []byte("ghp_Rotated_1111111111111111"))
			return err
		}, "ghp_Rotated_1111111111111111"},
		{"rm and set", func() error {
			if err := e.vault.Delete("github_token"); err != nil {
				return err
			}
			return e.vault.Set("github_token", []byte("ghp_SetAgain_222222222222222"), "again")
		}, "ghp_SetAgain_222222222222222"},
		{"replace", func() error {
			_, err := e.vault.Replace("github_token", []byte("ghp_SetAgain_222222222222222"), []byte("ghp_Replaced_33333333333333"))
			return err
		}, "ghp_Replaced_33333333333333"},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		callGitHub(t, e, s)
		if got := sentAuth(t, e); got != "Bearer "+st.want {
			t.Fatalf("after %s the call sent %q, want Bearer %s", st.name, got, st.want)
		}
	}
}

// TestSecretCacheZeroesOnEviction: an evicted secret's value and every
// scrubber of it are zeroed once no call holds it — not before, so a call
// in flight keeps a whole credential — on a change, a reload and at the
// end of the runtime.
func TestSecretCacheZeroesOnEviction(t *testing.T) {
	e := newEnv(t, baseConfig)
	s, err := e.broker.NewSession(NewSessionID(), "triage", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	tool := s.cfg.Tools["github"]
	evictions := map[string]func(){
		"secret changed": func() { e.broker.secretChanged("github_token") },
		// A reload of another file: one with the same bytes is the config
		// the broker already has (Configs knows it by digest) and loads nothing.
		"reload":         func() { e.reconfigure(baseConfig+"\n# reloaded\n", e.up.URL) },
		"runtime closed": func() { (&Runtime{Broker: e.broker}).Close() },
	}
	for name, evict := range evictions {
		t.Run(name, func(t *testing.T) {
			cs := e.broker.callSecrets()
			held, err := cs.get("github_token")
			if err != nil {
				t.Fatal(err)
			}
			value := held.secret.Bytes()
			sc := held.scrubber(tool)
			evict()
			if string(value) != testSecret {
				t.Fatalf("%s: a held secret was changed before its call ended", name)
			}
			if !sc.Contains([]byte("x "+testSecret)) || sc.Contains([]byte("benign")) {
				t.Fatalf("%s: a held scrubber stopped working before its call ended", name)
			}
			cs.release()
			if !bytes.Equal(value, make([]byte, len(value))) {
				t.Fatalf("%s: an evicted secret was not zeroed when its last call ended", name)
			}
			if !sc.Contains([]byte("benign")) {
				t.Fatalf("%s: an evicted scrubber was not wiped (it does not fail closed)", name)
			}
			// The next call reads the secret afresh.
			callGitHub(t, e, s)
			if got := sentAuth(t, e); got != "Bearer "+testSecret {
				t.Fatalf("%s: the next call sent %q, want the stored secret", name, got)
			}
		})
	}
}

// TestSecretCacheEvictsUnheldAtOnce: with no call holding it, an evicted
// secret is zeroed by the eviction itself.
func TestSecretCacheEvictsUnheldAtOnce(t *testing.T) {
	e := newEnv(t, baseConfig)
	cs := e.broker.callSecrets()
	held, err := cs.get("github_token")
	if err != nil {
		t.Fatal(err)
	}
	value := held.secret.Bytes()
	cs.release()
	if string(value) != testSecret {
		t.Fatal("a cached secret was zeroed while still in the cache")
	}
	e.broker.secretChanged("github_token")
	if !bytes.Equal(value, make([]byte, len(value))) {
		t.Fatal("an evicted secret no call held was not zeroed")
	}
}

// TestSecretCacheCannotPrintItself: a cached entry printed by mistake
// shows no secret (CONVENTIONS: a credential type cannot print itself).
func TestSecretCacheCannotPrintItself(t *testing.T) {
	e := newEnv(t, baseConfig)
	cs := e.broker.callSecrets()
	defer cs.release()
	held, err := cs.get("github_token")
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("%v %+v %#v %v", held, held, held, []any{held, held.secret})
	assertNoSecret(t, "a printed cache entry", []byte(out))
}

// TestSecretCacheUnavailable: a missing secret is not cached; the call
// fails as before, and a secret set later is used.
func TestSecretCacheUnavailable(t *testing.T) {
	e := newEnv(t, baseConfig)
	s, err := e.broker.NewSession(NewSessionID(), "triage", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Delete("github_token"); err != nil {
		t.Fatal(err)
	}
	out := e.broker.Call(context.Background(), s, "github", json.RawMessage(`{"method":"GET","path":"/repos/acme/api/issues"}`))
	if out.Result != nil || out.Decision != "error" {
		t.Fatalf("Call with the secret removed = %+v, want an error", out)
	}
	if err := e.vault.Set("github_token", []byte(testSecret), "back"); err != nil {
		t.Fatal(err)
	}
	callGitHub(t, e, s)
}

// TestSecretCacheAdminChangesEvict: an operator's set, rotate and rm
// through the broker's admin API drop the cached value at once, zeroed.
func TestSecretCacheAdminChangesEvict(t *testing.T) {
	e := newEnv(t, baseConfig)
	ops := &adminOps{vault: e.vault, secretChanged: e.broker.secretChanged,
		changes: recorder{log: func() (AuditLog, error) { return e.auditLog, nil }, now: e.clock.Now}}
	cached := func() []byte {
		t.Helper()
		cs := e.broker.callSecrets()
		defer cs.release()
		held, err := cs.get("github_token")
		if err != nil {
			t.Fatal(err)
		}
		return held.secret.Bytes()
	}
	zeroed := func(what string, b []byte) {
		t.Helper()
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatalf("after %s the cached value was not zeroed", what)
		}
	}
	v := cached()
	if _, err := ops.SecretRotate("github_token", []byte("ghp_Rotated_1111111111111111")); err != nil {
		t.Fatal(err)
	}
	zeroed("secret rotate", v)
	v = cached()
	if err := ops.SecretDelete("github_token"); err != nil {
		t.Fatal(err)
	}
	zeroed("secret rm", v)
	if err := ops.SecretSet("github_token", []byte(testSecret), "again"); err != nil {
		t.Fatal(err)
	}
	if string(cached()) != testSecret {
		t.Fatal("after secret set the cache does not hold the new value")
	}
}
