package admin

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
)

// fakeOps records each call as text and answers from its fields.
type fakeOps struct {
	calls []string
	value []byte // the last secret value received, as the handler passed it
	err   error
}

func (f *fakeOps) note(format string, args ...any) error {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.err
}

func (f *fakeOps) SecretSet(name string, value []byte, desc string) error {
	f.value = value
	return f.note("set %s %q %s", name, value, desc)
}
func (f *fakeOps) SecretRotate(name string, value []byte) (SecretMeta, error) {
	f.value = value
	return SecretMeta{Name: name, Version: 2}, f.note("rotate %s %q", name, value)
}
func (f *fakeOps) SecretMeta(name string) (SecretMeta, error) {
	return SecretMeta{Name: name, Version: 1}, f.note("meta %s", name)
}
func (f *fakeOps) SecretList() ([]SecretMeta, error) {
	return []SecretMeta{{Name: "a"}, {Name: "b"}}, f.note("list")
}
func (f *fakeOps) SecretDelete(name string) error { return f.note("delete %s", name) }
func (f *fakeOps) SecretLoginStart(name, redirect string) (LoginStart, error) {
	return LoginStart{URL: "https://auth.example/authorize?x", State: "st", Tool: "api"}, f.note("login %s %s", name, redirect)
}
func (f *fakeOps) SecretLoginFinish(name, state, code string) (SecretMeta, error) {
	return SecretMeta{Name: name, Version: 3}, f.note("login finish %s %s %s", name, state, code)
}
func (f *fakeOps) SessionNew(r SessionRequest) (SessionInfo, string, error) {
	return SessionInfo{ID: "ses_1", Scope: r.Scope}, "khs_token", f.note("new %s %s %s %s %v %s", r.Scope, r.TTL, r.Label, r.Config, r.Relay, r.ClientVersion)
}
func (f *fakeOps) SessionList(all bool) ([]SessionInfo, error) {
	return []SessionInfo{{ID: "ses_1"}}, f.note("sessions %v", all)
}
func (f *fakeOps) SessionShow(id string) (SessionInfo, error) {
	return SessionInfo{ID: id}, f.note("show %s", id)
}
func (f *fakeOps) SessionRevoke(id, scope string, all bool) ([]string, error) {
	return []string{"ses_1"}, f.note("revoke %q %q %v", id, scope, all)
}
func (f *fakeOps) SessionEnd(id string) error { return f.note("end %s", id) }
func (f *fakeOps) Reload(config string) (Reloaded, error) {
	return Reloaded{Config: config, Changed: true}, f.note("reload %s", config)
}
func (f *fakeOps) Status() (Status, error) {
	return Status{PID: 7, Version: "v1.2.3", Configs: []ConfigStatus{{Path: "/p/keyhole.yaml"}}}, f.note("status")
}
func (f *fakeOps) Stop() (Stopping, error) { return Stopping{PID: 7}, f.note("stop") }

// serve serves ops on a unix socket in a temp data dir and dials it.
func serve(t *testing.T, ops Ops) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "kh-admin") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", Handler(ops))
	mux.HandleFunc("/healthz", func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, err := Dial(dir)
	if err != nil {
		t.Fatalf("Dial = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEveryOperationCrossesTheSocket(t *testing.T) {
	ops := &fakeOps{}
	c := serve(t, ops)
	value := []byte("s3cret-value")
	steps := []struct {
		name string
		run  func() (any, error)
		want any
	}{
		{"set", func() (any, error) { return nil, c.SecretSet("tok", value, "CI") }, nil},
		{"rotate", func() (any, error) { return c.SecretRotate("tok", value) }, SecretMeta{Name: "tok", Version: 2}},
		{"meta", func() (any, error) { return c.SecretMeta("a/b") }, SecretMeta{Name: "a/b", Version: 1}},
		{"list", func() (any, error) { return c.SecretList() }, []SecretMeta{{Name: "a"}, {Name: "b"}}},
		{"delete", func() (any, error) { return nil, c.SecretDelete("tok") }, nil},
		{"login", func() (any, error) { return c.SecretLoginStart("oauth", "http://127.0.0.1:9/cb") },
			LoginStart{URL: "https://auth.example/authorize?x", State: "st", Tool: "api"}},
		{"login finish", func() (any, error) { return c.SecretLoginFinish("oauth", "st", "code1") }, SecretMeta{Name: "oauth", Version: 3}},
		{"new", func() (any, error) {
			info, tok, err := c.SessionNew(SessionRequest{Scope: "triage", TTL: time.Minute, Label: "run 1", Config: "/p/keyhole.yaml", Relay: true, ClientVersion: "v9"})
			return []any{info.ID, info.Scope, tok}, err
		}, []any{"ses_1", "triage", "khs_token"}},
		{"sessions", func() (any, error) { return c.SessionList(true) }, []SessionInfo{{ID: "ses_1"}}},
		{"show", func() (any, error) { return c.SessionShow("ses_9") }, SessionInfo{ID: "ses_9"}},
		{"revoke id", func() (any, error) { return c.SessionRevoke("ses_9", "", false) }, []string{"ses_1"}},
		{"revoke scope", func() (any, error) { return c.SessionRevoke("", "triage", false) }, []string{"ses_1"}},
		{"revoke all", func() (any, error) { return c.SessionRevoke("", "", true) }, []string{"ses_1"}},
		{"end", func() (any, error) { return nil, c.SessionEnd("ses_9") }, nil},
		{"reload", func() (any, error) { return c.Reload("/p/keyhole.yaml") }, Reloaded{Config: "/p/keyhole.yaml", Changed: true}},
		{"status", func() (any, error) { return c.Status() }, Status{PID: 7, Version: "v1.2.3", Configs: []ConfigStatus{{Path: "/p/keyhole.yaml"}}}},
		{"stop", func() (any, error) { return c.Stop() }, Stopping{PID: 7}},
	}
	for _, s := range steps {
		got, err := s.run()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.want != nil && !reflect.DeepEqual(got, s.want) {
			t.Fatalf("%s = %#v, want %#v", s.name, got, s.want)
		}
	}
	want := []string{
		`set tok "s3cret-value" CI`, `rotate tok "s3cret-value"`, "meta a/b", "list", "delete tok",
		"login oauth http://127.0.0.1:9/cb", "login finish oauth st code1",
		"new triage 1m0s run 1 /p/keyhole.yaml true v9", "sessions true", "show ses_9",
		`revoke "ses_9" "" false`, `revoke "" "triage" false`, `revoke "" "" true`, "end ses_9", "reload /p/keyhole.yaml", "status", "stop",
	}
	if !reflect.DeepEqual(ops.calls, want) {
		t.Fatalf("the broker's ops saw\n%q\nwant\n%q", ops.calls, want)
	}
	if string(value) != "s3cret-value" {
		t.Fatalf("the client changed the caller's value to %q", value)
	}
	for _, b := range ops.value {
		if b != 0 {
			t.Fatalf("the handler left the secret value in its request body: %q", ops.value)
		}
	}
}

func TestErrorsKeepTheirKind(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want error
	}{
		"secret not found":  {fmt.Errorf("vault: %w", vault.ErrNotFound), vault.ErrNotFound},
		"session not found": {fmt.Errorf("no session: %w", sessions.ErrNotFound), sessions.ErrNotFound},
		"other":             {errors.New("scope \"x\" is not defined"), nil},
	} {
		t.Run(name, func(t *testing.T) {
			c := serve(t, &fakeOps{err: tc.err})
			_, err := c.SecretMeta("x")
			if err == nil || err.Error() == "" || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("SecretMeta with the broker failing %v = %v, want an error wrapping %v", tc.err, err, tc.want)
			}
			if tc.want == nil && err.Error() != tc.err.Error() {
				t.Fatalf("error = %q, want the broker's message %q", err, tc.err)
			}
		})
	}
}

func TestDialWithoutABroker(t *testing.T) {
	if _, err := Dial(t.TempDir()); !errors.Is(err, ErrNoBroker) {
		t.Fatalf("Dial(empty dir) = %v, want ErrNoBroker", err)
	}
}
