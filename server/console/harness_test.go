package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// testConfig has an http tool whose labels need approval and an s3 tool;
// its webhook URL carries a token of the receiver's, which no page may
// show.
const testConfig = `version: 1
tools:
  github:
    kind: http
    description: Issue tracker.
    base_url: https://api.example.com
    credential: {secret: github_token, inject: bearer}
  archive:
    kind: s3
    bucket: acme-archive
    region: us-east-1
    credential: {secret: aws_archive, inject: aws_sigv4}
scopes:
  triage:
    description: Triage issues of acme/api.
    ttl: 1h
    max_calls: 100
    rate: 5/s
    on_deny: request
    approval: {wait: 10m, ttl: 10m, webhook: "https://hooks.example.com/keyhole?token=hookReceiverToken42", webhook_secret: hook_key}
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues, /repos/acme/api/issues/*]}
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/labels], approve: true}
  archive_report:
    ttl: 15m
    grants:
      - {tool: archive, actions: [list], prefixes: [reports/2026]}
`

// webhookToken is in testConfig's webhook URL.
const webhookToken = "hookReceiverToken42"

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// fakeSessions are agent sessions kept in a map: the console's Sessions
// and the access manager's.
type fakeSessions struct {
	mu      sync.Mutex
	byID    map[string]*policy.SessionInfo
	order   []string
	revoked map[string]string // id -> by
	grants  map[string][]policy.ExactGrant
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{byID: map[string]*policy.SessionInfo{}, revoked: map[string]string{}, grants: map[string][]policy.ExactGrant{}}
}

func (f *fakeSessions) add(info policy.SessionInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if info.State == "" {
		info.State = policy.StateActive
	}
	f.byID[info.ID] = &info
	f.order = append(f.order, info.ID)
}

func (f *fakeSessions) List(all bool) ([]policy.SessionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []policy.SessionInfo
	for _, id := range f.order {
		if s := f.byID[id]; all || s.State == policy.StateActive {
			out = append(out, *s)
		}
	}
	return out, nil
}

func (f *fakeSessions) Show(id string) (policy.SessionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.byID[id]
	if !ok {
		return policy.SessionInfo{}, fmt.Errorf("no session %s: %w", id, sessions.ErrNotFound)
	}
	return *s, nil
}

func (f *fakeSessions) Revoke(id, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.byID[id]
	if !ok {
		return fmt.Errorf("no session %s: %w", id, sessions.ErrNotFound)
	}
	if s.State == policy.StateActive {
		s.State, s.EndReason = policy.StateRevoked, "revoked in the console by "+by
		f.revoked[id] = by
	}
	return nil
}

// Live, AddGrant and NoteDenial make fakeSessions the access manager's.
func (f *fakeSessions) Live(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.byID[id]; !ok || s.State != policy.StateActive {
		return errors.New("not active")
	}
	return nil
}

func (f *fakeSessions) AddGrant(id string, g policy.ExactGrant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[id] = append(f.grants[id], g)
	return nil
}

func (f *fakeSessions) NoteDenial(string) {}

// boundAccess is the manager bound to the fake sessions, as the broker
// binds it to its own.
type boundAccess struct {
	m  *access.Manager
	ss access.Sessions
}

func (a boundAccess) List(all bool) []access.Request         { return a.m.List(all) }
func (a boundAccess) Show(id string) (access.Request, error) { return a.m.Show(id) }
func (a boundAccess) Watch() (<-chan access.Event, func())   { return a.m.Watch() }
func (a boundAccess) Deny(id, by, note string) (access.Request, error) {
	return a.m.Deny(id, by, note, a.ss)
}
func (a boundAccess) Approve(id, by, note string, forSession bool) (access.Request, error) {
	return a.m.Approve(id, by, note, forSession, a.ss)
}

// harness is a console over a real audit log and a real access manager,
// served by an httptest server on loopback.
type harness struct {
	t       *testing.T
	clock   *servertest.Clock
	log     *audit.Log
	acc     *access.Manager
	ss      *fakeSessions
	secrets []vault.Meta
	con     *Console
	srv     *httptest.Server
	logs    *servertest.SyncBuffer
}

type harnessOption func(*Options)

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, clock: servertest.NewClock(t0), ss: newFakeSessions(), logs: &servertest.SyncBuffer{}}
	log, err := audit.Open(audit.Options{Path: filepath.Join(dir, "audit.sqlite"), Key: []byte("audit-key-0123456789abcdef012345"), Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	h.log = log
	acc, err := access.Open(access.Options{Key: []byte("0123456789abcdef0123456789abcdef"), Audit: log, History: log, Now: h.clock.Now, NotifySend: "/nonexistent/notify-send"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acc.Close() })
	h.acc = acc
	cfg, err := config.Parse("/etc/keyhole/keyhole.yaml", []byte(testConfig), tools.Env{})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	h.secrets = []vault.Meta{
		{Name: "github_token", Version: 3, Description: "CI token", Created: t0.Add(-200 * 24 * time.Hour), Updated: t0.Add(-100 * 24 * time.Hour), LastUsed: t0.Add(-time.Hour)},
		{Name: "aws_archive", Version: 1, Created: t0.Add(-40 * 24 * time.Hour), Updated: t0.Add(-40 * 24 * time.Hour)},
	}
	h.srv = httptest.NewUnstartedServer(nil)
	o := Options{
		Audit: log, Sessions: h.ss, Access: boundAccess{m: acc, ss: h.ss},
		Secrets:  func() ([]vault.Meta, error) { return slices.Clone(h.secrets), nil },
		Config:   func() *config.Loaded { return cfg },
		BaseURL:  "http://" + h.srv.Listener.Addr().String(),
		Loopback: true, Operator: "os:tester", Now: h.clock.Now,
		Logger: slogTo(h.logs),
	}
	for _, f := range opts {
		f(&o)
	}
	h.con, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Config.Handler = h.con.Handler()
	h.srv.Start()
	t.Cleanup(func() {
		h.con.Close()
		h.srv.Close()
		if t.Failed() {
			t.Logf("console log:\n%s", h.logs.String())
		}
	})
	return h
}

// session adds an active agent session started at t0.
func (h *harness) session(id, scope, label string) {
	h.ss.add(policy.SessionInfo{ID: id, Scope: scope, Label: label, Created: t0, Expires: t0.Add(time.Hour)})
}

// write appends a record to the audit log.
func (h *harness) write(rec audit.Record) uint64 {
	h.t.Helper()
	if rec.Time.IsZero() {
		rec.Time = h.clock.Now()
	}
	seq, err := h.log.Write(context.Background(), rec)
	if err != nil {
		h.t.Fatal(err)
	}
	return seq
}

// ask is a call of session ses_1 that needs approval: POST a label.
func ask(mod ...func(*access.Ask)) access.Ask {
	a := access.Ask{
		Session: "ses_1", Scope: "triage", Label: "nightly", Client: "editor/1.0",
		Config: "/etc/keyhole/keyhole.yaml", ConfigSHA256: strings.Repeat("c", 64),
		Tool: "github", Credential: "github_token",
		Call: tools.Canonical{
			AuditFields: tools.AuditFields{Kind: "http", Method: "POST", Host: "api.example.com", Path: "/repos/acme/api/issues/7/labels"},
			Headers:     []tools.Param{{Name: "Content-Type", Value: "application/json"}},
			HasBody:     true, Body: []byte(`{"labels":["bug"]}`),
		},
		Request:  policy.Request{Tool: "github", Method: "POST", Segments: []string{"repos", "acme", "api", "issues", "7", "labels"}},
		Decision: policy.Decision{Code: policy.CodeApprovalRequired, Ask: true, Grant: "github: POST /repos/acme/api/issues/*/labels (with a person's approval)"},
		Approval: policy.Approval{Wait: time.Hour, TTL: 10 * time.Minute, MaxOpen: 5},
	}
	for _, f := range mod {
		f(&a)
	}
	return a
}

// hold asks on its own goroutine and returns the request once the call
// is held on it, and the call's answer when it comes.
func (h *harness) hold(a access.Ask) (access.Request, <-chan access.Answer) {
	h.t.Helper()
	events, stop := h.acc.Watch()
	defer stop()
	out := make(chan access.Answer, 1)
	go func() { out <- h.acc.Ask(context.Background(), a) }()
	for ev := range events {
		if ev.Type == access.EventRequest && ev.Request.Session == a.Session {
			return ev.Request, out
		}
	}
	h.t.Fatal("the access manager closed before the request was opened")
	return access.Request{}, nil
}

// browser is a browser tab on the harness's console, failing t.
type browser struct {
	t *testing.T
	h *harness
	*servertest.Browser
}

// browser returns a signed-out browser.
func (h *harness) browser() *browser {
	return &browser{t: h.t, h: h, Browser: servertest.NewBrowser(h.srv.URL)}
}

// signIn opens a fresh login link and returns the browser it signed in.
func (h *harness) signIn() *browser {
	h.t.Helper()
	b := h.browser()
	link, _, err := h.con.LoginURL()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := b.SignIn(link); err != nil {
		h.t.Fatal(err)
	}
	return b
}

// do sends a request (target is a path or a whole URL; form, if set, is
// posted) with extra headers, and returns the answer and its body.
func (b *browser) do(method, target string, form url.Values, header map[string]string) (*http.Response, string) {
	b.t.Helper()
	resp, body, err := b.Do(method, target, form, header)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp, body
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	return b.do(http.MethodGet, path, nil, nil)
}

// post submits a form with the browser's CSRF token (unless form sets
// its own).
func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	resp, body, err := b.Post(path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp, body
}

// mustGet fetches a page and fails unless it answers 200.
func (b *browser) mustGet(path string) string {
	b.t.Helper()
	resp, body := b.get(path)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET %s = %d, want 200:\n%s", path, resp.StatusCode, body)
	}
	return body
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// on is the browser, failing t (a subtest) instead.
func (b *browser) on(t *testing.T) *browser {
	c := *b
	c.t = t
	return &c
}
