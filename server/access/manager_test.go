package access

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/tools"
)

// testSecret is the tool's credential; no form of it may be kept or shown.
const testSecret = "ghp_AccessT3stSecretValue_0a1b2c3d4e"

// fakeSessions are sessions answered from maps.
type fakeSessions struct {
	mu      sync.Mutex
	dead    map[string]string
	grants  map[string][]policy.ExactGrant
	denials map[string]int
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{dead: map[string]string{}, grants: map[string][]policy.ExactGrant{}, denials: map[string]int{}}
}

func (f *fakeSessions) Live(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if why, ok := f.dead[id]; ok {
		return errors.New(why)
	}
	return nil
}

func (f *fakeSessions) AddGrant(id string, g policy.ExactGrant) error {
	if err := f.Live(id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[id] = append(f.grants[id], g)
	return nil
}

func (f *fakeSessions) NoteDenial(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.denials[id]++
}

func (f *fakeSessions) kill(id, why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dead[id] = why
}

// testEnv is a manager over a real audit log in a temp dir, with a
// clock that moves only when told to.
type testEnv struct {
	t     *testing.T
	dir   string
	key   []byte
	clock *servertest.Clock
	log   *audit.Log
	m     *Manager
	ss    *fakeSessions
	opts  Options
}

func newTestEnv(t *testing.T, mod func(*Options)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: t.TempDir(), key: []byte("0123456789abcdef0123456789abcdef"), clock: servertest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)), ss: newFakeSessions()}
	l, err := audit.Open(audit.Options{Path: filepath.Join(e.dir, "audit.db"), Key: []byte("audit-key-0123456789abcdef012345"), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	e.log = l
	e.opts = Options{Path: filepath.Join(e.dir, "access.db"), Key: e.key, Audit: l, History: l, Now: e.clock.Now, NotifySend: "/nonexistent/notify-send"}
	if mod != nil {
		mod(&e.opts)
	}
	e.open()
	return e
}

func (e *testEnv) open() {
	e.t.Helper()
	m, err := Open(e.opts)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.m = m
	e.t.Cleanup(func() { m.Close() })
}

// restart closes the manager and opens the same file again.
func (e *testEnv) restart() {
	e.t.Helper()
	if err := e.m.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

var approval = policy.Approval{Wait: time.Hour, TTL: 10 * time.Minute, MaxOpen: 3}

// ask is a call of session ses_1 needing approval: POST /repos/acme/api/labels
// with a body, on tool github.
func ask(mod ...func(*Ask)) Ask {
	body := []byte(`{"labels":["bug"]}`)
	a := Ask{
		Session: "ses_1", Scope: "triage", Label: "run 1", Client: "editor/1.0",
		Config: "/etc/keyhole.yaml", ConfigSHA256: strings.Repeat("c", 64),
		Tool: "github", Credential: "github_token",
		Call: tools.Canonical{
			AuditFields: tools.AuditFields{Kind: "http", Method: "POST", Host: "api.example.com", Path: "/repos/acme/api/labels", QueryNames: []string{"dry"}},
			Query:       []tools.Param{{Name: "dry", Value: "no"}},
			Headers:     []tools.Param{{Name: "Content-Type", Value: "application/json"}},
			HasBody:     true, Body: body,
		},
		Request:  policy.Request{Tool: "github", Method: "POST", Segments: []string{"repos", "acme", "api", "labels"}},
		Decision: policy.Decision{Code: policy.CodeApprovalRequired, Ask: true, Grant: "github: POST /repos/acme/*/labels (with a person's approval)"},
		Approval: approval,
		Scrub: func(s string) string {
			return strings.ReplaceAll(s, testSecret, "[REDACTED]")
		},
	}
	for _, f := range mod {
		f(&a)
	}
	return a
}

func noWait(a *Ask) { a.Approval.Wait = 0 }

// held runs Ask on its own goroutine and returns the request it opened
// (or joined) once the call is held on it, and a channel with its answer.
func (e *testEnv) held(a Ask) (Request, <-chan Answer) {
	e.t.Helper()
	out := make(chan Answer, 1)
	for _, r := range e.m.List(false) {
		if r.State == StateOpen && r.Session == a.Session && r.SHA256 == RequestHash(a.Tool, a.Call) {
			go func() { out <- e.m.Ask(context.Background(), a) }()
			return e.waitHeld(r.ID, r.Waiting+1), out
		}
	}
	w, stop := e.m.Watch()
	defer stop()
	go func() { out <- e.m.Ask(context.Background(), a) }()
	for {
		select {
		case ev, ok := <-w:
			if !ok {
				e.t.Fatal("watch closed")
			}
			if ev.Type == EventRequest && ev.Request.Session == a.Session && ev.Request.SHA256 == RequestHash(a.Tool, a.Call) {
				return e.waitHeld(ev.Request.ID, 1), out
			}
		case ans := <-out:
			e.t.Fatalf("Ask returned %+v before anyone answered", ans)
		}
	}
}

// waitHeld waits until n calls are held on request id.
func (e *testEnv) waitHeld(id string, n int) Request {
	e.t.Helper()
	for i := 0; ; i++ {
		r, err := e.m.Show(id)
		if err != nil {
			e.t.Fatal(err)
		}
		if r.Waiting >= n {
			return r
		}
		if i > 20000 {
			e.t.Fatalf("request %s holds %d calls, want %d", id, r.Waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func answer(t *testing.T, ch <-chan Answer) Answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("the held call was not released")
		return Answer{}
	}
}

// records returns the audit records of keyhole.access.* tools, as
// "event id reason-after-the-id".
func (e *testEnv) records() []audit.Record {
	e.t.Helper()
	recs, err := e.log.Query(audit.Filter{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []audit.Record
	for _, r := range recs {
		if strings.HasPrefix(r.Tool, "keyhole.access.") {
			out = append(out, r)
		}
	}
	return out
}

func (e *testEnv) events(id string) []string {
	var out []string
	for _, r := range e.records() {
		if strings.HasPrefix(r.Reason, id+": ") {
			out = append(out, strings.TrimPrefix(r.Tool, "keyhole.access."))
		}
	}
	return out
}

func TestHeldCallProceedsOnceAfterApproval(t *testing.T) {
	e := newTestEnv(t, nil)
	r, out := e.held(ask())
	if r.State != StateOpen || r.Call.Method != "POST" || r.Call.Path != "/repos/acme/api/labels" || r.Call.Body.Preview != `{"labels":["bug"]}` ||
		r.Call.Query[0] != (tools.Param{Name: "dry", Value: "no"}) || r.Grant == "" || !slices.Equal(r.Risks, []string{RiskWrite, RiskNewPath}) ||
		r.Session != "ses_1" || r.Scope != "triage" || r.Label != "run 1" || r.Client != "editor/1.0" || r.Call.Credential != "github_token" {
		t.Fatalf("open request = %+v", r)
	}
	if !r.Expires.Equal(e.clock.Now().Add(10 * time.Minute)) {
		t.Fatalf("open request expires %s, want created + ttl", r.Expires)
	}
	got, err := e.m.Approve(r.ID, "os:alice", "looks right", false, e.ss)
	if err != nil || got.State != StateApproved || got.Decision.By != "os:alice" {
		t.Fatalf("Approve = %+v, %v", got, err)
	}
	ans := answer(t, out)
	if !ans.Approved || ans.ID != r.ID || !strings.Contains(ans.Grant, "approved once by os:alice") {
		t.Fatalf("held call answered %+v, want approved", ans)
	}
	if s, _ := e.m.Show(r.ID); s.State != StateUsed {
		t.Fatalf("after its use the request is %s, want used", s.State)
	}
	// Used once: the same call again opens a new request.
	again := e.m.Ask(context.Background(), ask(noWait))
	if again.Approved || again.Code != CodePending || again.ID == r.ID || !strings.Contains(again.Message, "keyhole access approve "+again.ID) {
		t.Fatalf("the same call after the approval was used = %+v, want a new pending request", again)
	}
	if got := e.events(r.ID); !slices.Equal(got, []string{"request", "approve", "use"}) {
		t.Fatalf("audit of %s = %v, want request, approve, use", r.ID, got)
	}
	for _, rec := range e.records() {
		if rec.Session != "ses_1" || rec.Scope != "triage" || rec.Method != "POST" || rec.Path != "/repos/acme/api/labels" || rec.Client != "editor/1.0" {
			t.Fatalf("access record %+v does not name the request's session, scope and call", rec)
		}
		if rec.Tool == "keyhole.access.approve" && (!strings.Contains(rec.Reason, "by os:alice") || !strings.Contains(rec.Reason, "note: looks right") || !strings.Contains(string(rec.Args), `"by":"os:alice"`)) {
			t.Fatalf("approve record %+v does not say who decided and why", rec)
		}
	}
	if rep, err := e.log.Verify(); err != nil || !rep.OK {
		t.Fatalf("audit verify = %+v, %v", rep, err)
	}
}

func TestApprovalBindsTheExactRequest(t *testing.T) {
	others := map[string]func(*Ask){
		"another body": func(a *Ask) { a.Call.Body = []byte(`{"labels":["wontfix"]}`) },
		"another path": func(a *Ask) { a.Call.Path = "/repos/acme/api/labels2" },
		"another query value": func(a *Ask) {
			a.Call.Query = []tools.Param{{Name: "dry", Value: "yes"}}
		},
		"another query name": func(a *Ask) { a.Call.Query = append(a.Call.Query, tools.Param{Name: "x", Value: "1"}) },
		"another header":     func(a *Ask) { a.Call.Headers = append(a.Call.Headers, tools.Param{Name: "X-Trace", Value: "1"}) },
		"another method":     func(a *Ask) { a.Call.Method = "PUT" },
		"no body":            func(a *Ask) { a.Call.HasBody, a.Call.Body = false, nil },
		"another session":    func(a *Ask) { a.Session = "ses_2" },
		"another tool":       func(a *Ask) { a.Tool = "github2" },
	}
	for name, mod := range others {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, nil)
			first := e.m.Ask(context.Background(), ask(noWait))
			if first.Code != CodePending {
				t.Fatalf("first ask = %+v", first)
			}
			if _, err := e.m.Approve(first.ID, "os:alice", "", false, e.ss); err != nil {
				t.Fatal(err)
			}
			other := e.m.Ask(context.Background(), ask(noWait, mod))
			if other.Approved || other.ID == first.ID || other.Code != CodePending {
				t.Fatalf("%s after approving %s = %+v, want a new pending request", name, first.ID, other)
			}
			// The approved one is still there for the exact request.
			if same := e.m.Ask(context.Background(), ask(noWait)); !same.Approved || same.ID != first.ID {
				t.Fatalf("the exact request after %s = %+v, want it approved by %s", name, same, first.ID)
			}
		})
	}
}

func TestApprovalBoundToItsConfig(t *testing.T) {
	e := newTestEnv(t, nil)
	first := e.m.Ask(context.Background(), ask(noWait))
	e.m.Approve(first.ID, "os:alice", "", false, e.ss)
	// The session's config is another one now (a tampered or migrated
	// session): the HMAC over the config digest does not match.
	ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.ConfigSHA256 = strings.Repeat("d", 64) }))
	if ans.Approved || ans.ID == first.ID {
		t.Fatalf("a call under another config = %+v, want not approved", ans)
	}
	if s, _ := e.m.Show(first.ID); s.State != StateExpired || !strings.Contains(s.Ended, "does not bind") {
		t.Fatalf("the approval bound to another config is %s (%s), want expired", s.State, s.Ended)
	}
}

func TestApprovalExpiresByTheInjectedClock(t *testing.T) {
	e := newTestEnv(t, nil)
	first := e.m.Ask(context.Background(), ask(noWait))
	e.clock.Advance(9 * time.Minute) // the open request lives 10m
	if _, err := e.m.Approve(first.ID, "os:alice", "", false, e.ss); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(10*time.Minute - time.Nanosecond) // usable until approval + ttl
	if r, _ := e.m.Show(first.ID); r.State != StateApproved {
		t.Fatalf("approval before its expiry is %s", r.State)
	}
	e.clock.Advance(time.Nanosecond)
	ans := e.m.Ask(context.Background(), ask(noWait))
	if ans.Approved || ans.ID == first.ID {
		t.Fatalf("the repeat after the approval's ttl = %+v, want a new request", ans)
	}
	if got := e.events(first.ID); !slices.Equal(got, []string{"request", "approve", "expire"}) {
		t.Fatalf("audit of %s = %v, want request, approve, expire", first.ID, got)
	}
	// An open request nobody answers expires by Sweep.
	e.clock.Advance(10 * time.Minute)
	e.m.Sweep(e.ss)
	if r, _ := e.m.Show(ans.ID); r.State != StateExpired || !strings.Contains(r.Ended, "nobody answered") {
		t.Fatalf("unanswered request after its ttl = %+v", r)
	}
	if _, err := e.m.Approve(ans.ID, "os:alice", "", false, e.ss); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("Approve of an expired request = %v, want ErrNotOpen", err)
	}
}

func TestDeniedRequestCountsTowardTheTripwire(t *testing.T) {
	e := newTestEnv(t, nil)
	r, out := e.held(ask())
	if _, err := e.m.Deny(r.ID, "os:alice", "not that repo", e.ss); err != nil {
		t.Fatal(err)
	}
	ans := answer(t, out)
	if ans.Approved || ans.Code != CodeDenied || !strings.Contains(ans.Message, "denied access request "+r.ID) || !strings.Contains(ans.Message, "not that repo") || ans.CountDenial {
		t.Fatalf("held call after a denial = %+v", ans)
	}
	if e.ss.denials["ses_1"] != 1 {
		t.Fatalf("denials noted = %d, want 1", e.ss.denials["ses_1"])
	}
	if _, err := e.m.Approve(r.ID, "os:alice", "", false, e.ss); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("Approve after Deny = %v, want ErrNotOpen", err)
	}
	// Asking again after a denial counts toward the tripwire.
	again := e.m.Ask(context.Background(), ask(noWait))
	if !again.CountDenial || again.ID == r.ID {
		t.Fatalf("asking again after a denial = %+v, want a new request that counts a denial", again)
	}
	other := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Session = "ses_2" }))
	if other.CountDenial {
		t.Fatalf("another session's ask = %+v: it was never denied", other)
	}
	if got := e.events(r.ID); !slices.Equal(got, []string{"request", "deny"}) {
		t.Fatalf("audit of %s = %v", r.ID, got)
	}
}

func TestIdenticalCallsCoalesce(t *testing.T) {
	for _, forSession := range []bool{false, true} {
		t.Run(fmt.Sprintf("for session %v", forSession), func(t *testing.T) {
			e := newTestEnv(t, nil)
			r, first := e.held(ask())
			second := make(chan Answer, 1)
			go func() { second <- e.m.Ask(context.Background(), ask()) }()
			r = e.waitHeld(r.ID, 2)
			if r.Asks != 2 || len(e.m.List(false)) != 1 {
				t.Fatalf("two identical calls = %+v, %d requests; want one request asked twice", r, len(e.m.List(false)))
			}
			if _, err := e.m.Approve(r.ID, "os:alice", "", forSession, e.ss); err != nil {
				t.Fatal(err)
			}
			a, b := answer(t, first), answer(t, second)
			approved := 0
			for _, ans := range []Answer{a, b} {
				if ans.Approved {
					approved++
				} else if ans.Code != CodeUsed {
					t.Fatalf("the call that did not proceed = %+v, want approval_used", ans)
				}
			}
			want := 1
			if forSession {
				want = 2
				if g := e.ss.grants["ses_1"]; len(g) != 1 || g[0].Method != "POST" || !slices.Equal(g[0].Segments, []string{"repos", "acme", "api", "labels"}) || g[0].Request != r.ID {
					t.Fatalf("session grants = %+v, want the exact POST", g)
				}
			}
			if approved != want {
				t.Fatalf("%d of 2 identical held calls proceeded, want %d", approved, want)
			}
		})
	}
}

func TestMaxOpenPerSession(t *testing.T) {
	e := newTestEnv(t, nil)
	var ids []string
	for i := range 3 {
		ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = fmt.Sprintf("/p/%d", i) }))
		ids = append(ids, ans.ID)
	}
	fourth := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/p/4" }))
	if fourth.Code != CodeMaxOpen || fourth.ID != "" || !strings.Contains(fourth.Message, "3 open access requests") || fourth.CountDenial {
		t.Fatalf("a fourth request = %+v, want approval_max_open", fourth)
	}
	// An identical call joins its open request instead of counting.
	if again := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/p/0" })); again.ID != ids[0] {
		t.Fatalf("a repeat of an open request = %+v, want it joined to %s", again, ids[0])
	}
	// Another session has its own limit.
	if other := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Session = "ses_2" })); other.Code != CodePending {
		t.Fatalf("another session's request = %+v", other)
	}
	e.m.Deny(ids[0], "os:alice", "", e.ss)
	fifth := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/p/5" }))
	if fifth.Code != CodePending || !fifth.CountDenial {
		t.Fatalf("a request once one was denied = %+v, want pending and counted", fifth)
	}
}

func TestConcurrentHeldCallsApprovedInAnyOrder(t *testing.T) {
	e := newTestEnv(t, func(o *Options) {})
	const n = 6
	type held struct {
		id  string
		out <-chan Answer
	}
	var calls []held
	for i := range n {
		a := ask(func(a *Ask) {
			a.Session = fmt.Sprintf("ses_%d", i)
			a.Call.Path = fmt.Sprintf("/repos/acme/api/labels/%d", i)
		})
		r, out := e.held(a)
		calls = append(calls, held{r.ID, out})
	}
	order := []int{3, 0, 5, 1, 4, 2}
	for _, i := range order {
		if i%2 == 0 {
			e.m.Approve(calls[i].id, "os:alice", "", false, e.ss)
		} else {
			e.m.Deny(calls[i].id, "os:bob", "", e.ss)
		}
	}
	for i, c := range calls {
		ans := answer(t, c.out)
		if ans.ID != c.id || ans.Approved != (i%2 == 0) {
			t.Fatalf("call %d = %+v, want approved %v for %s", i, ans, i%2 == 0, c.id)
		}
	}
}

func TestRequestsDieWithTheirSession(t *testing.T) {
	e := newTestEnv(t, nil)
	r, out := e.held(ask())
	e.m.EndSession("ses_1", "was revoked")
	if ans := answer(t, out); ans.Approved || ans.Code != CodeExpired || !strings.Contains(ans.Message, "was revoked") {
		t.Fatalf("held call of a revoked session = %+v", ans)
	}
	if got := e.events(r.ID); !slices.Equal(got, []string{"request", "expire"}) {
		t.Fatalf("audit = %v", got)
	}
	// A session found dead when a person answers, or by the sweep.
	second := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Session = "ses_2" }))
	third := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Session = "ses_3" }))
	e.ss.kill("ses_2", "session ses_2 has ended: client disconnected")
	e.ss.kill("ses_3", "session ses_3 was revoked")
	if _, err := e.m.Approve(second.ID, "os:alice", "", false, e.ss); !errors.Is(err, ErrNotOpen) || !strings.Contains(err.Error(), "client disconnected") {
		t.Fatalf("Approve of a dead session's request = %v", err)
	}
	e.m.Sweep(e.ss)
	if r, _ := e.m.Show(third.ID); r.State != StateExpired {
		t.Fatalf("after a sweep a revoked session's request is %s", r.State)
	}
	if len(e.m.List(false)) != 0 {
		t.Fatalf("open requests left: %+v", e.m.List(false))
	}
}

func TestHeldCallLeftAsPendingWhenItsCallerGoesAway(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Answer, 1)
	w, stop := e.m.Watch()
	go func() { out <- e.m.Ask(ctx, ask()) }()
	ev := <-w
	stop()
	e.waitHeld(ev.Request.ID, 1)
	cancel()
	ans := answer(t, out)
	if ans.Code != CodePending || !strings.Contains(ans.Message, "keyhole access approve "+ev.Request.ID) {
		t.Fatalf("a cancelled held call = %+v", ans)
	}
	// The request is still open; its approval waits for the repeat.
	e.m.Approve(ev.Request.ID, "os:alice", "", false, e.ss)
	if ans := e.m.Ask(context.Background(), ask(noWait)); !ans.Approved {
		t.Fatalf("the repeat after approval = %+v", ans)
	}
}

func TestNoteIsOneLineOfText(t *testing.T) {
	e := newTestEnv(t, nil)
	r := e.m.Ask(context.Background(), ask(noWait))
	for _, note := range []string{"a\nb", "x\x1b[2Ky", "\u202egnp.exe", strings.Repeat("n", 501)} {
		if _, err := e.m.Approve(r.ID, "os:alice", note, false, e.ss); err == nil {
			t.Fatalf("Approve with note %q succeeded", note)
		}
	}
	if s, _ := e.m.Show(r.ID); s.State != StateOpen {
		t.Fatalf("a refused note changed the request to %s", s.State)
	}
	if _, err := e.m.Approve("acr_nosuchrequest0000000", "os:alice", "", false, e.ss); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Approve of an unknown id = %v, want ErrNotFound", err)
	}
}

func TestOutsideTheScopeRequest(t *testing.T) {
	e := newTestEnv(t, nil)
	ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) {
		a.Call.Method = "DELETE"
		a.Call.HasBody, a.Call.Body = false, nil
		a.Decision = policy.Decision{Code: policy.CodeNotGranted, Ask: true, Reason: "DELETE /repos/acme/api/labels is not granted to scope triage; granted: GET /x"}
	}))
	r, _ := e.m.Show(ans.ID)
	if r.Grant != "" || !strings.Contains(r.Denied, "is not granted") || !slices.Equal(r.Risks, []string{RiskWrite, RiskDelete, RiskNewPath, RiskOutside}) {
		t.Fatalf("request outside the scope = %+v", r)
	}
	recs := e.records()
	if len(recs) != 1 || recs[0].Code != policy.CodeNotGranted || recs[0].Decision != audit.Deny || !strings.Contains(recs[0].Reason, "outside its scope") {
		t.Fatalf("request record = %+v", recs)
	}
}

func TestNoSecretIsKeptOrShown(t *testing.T) {
	e := newTestEnv(t, nil)
	w, stop := e.m.Watch()
	defer stop()
	leaky := ask(noWait, func(a *Ask) {
		a.Call.Body = []byte(`{"token":"` + testSecret + `"}`)
		a.Call.Query = []tools.Param{{Name: "k", Value: testSecret}}
		a.Call.Headers = []tools.Param{{Name: "X-Key", Value: testSecret}}
		a.Call.Path = "/x/" + testSecret
	})
	ans := e.m.Ask(context.Background(), leaky)
	r, _ := e.m.Show(ans.ID)
	if r.Call.Body.SHA256 == "" || r.Call.Body.Bytes != len(leaky.Call.Body) || !strings.Contains(r.Call.Body.Preview, "[REDACTED]") {
		t.Fatalf("body = %+v", r.Call.Body)
	}
	e.m.Approve(ans.ID, "os:alice", "", false, e.ss)
	if use := e.m.Ask(context.Background(), leaky); !use.Approved {
		t.Fatalf("the approved request was not used: %+v", use)
	}
	var seen strings.Builder
	for range 3 {
		ev := <-w
		fmt.Fprintf(&seen, "%+v\n", ev)
	}
	fmt.Fprintf(&seen, "%+v %+v %+v\n", r, ans, e.m.List(true))
	for _, rec := range e.records() {
		fmt.Fprintf(&seen, "%+v %s\n", rec, rec.Args)
	}
	servertest.AssertNoSecret(t, "requests, events and records", seen.String(), testSecret)
	e.m.Close()
	assertFileHasNoSecret(t, e.opts.Path)
}

func TestLongBodyPreviewIsCapped(t *testing.T) {
	e := newTestEnv(t, nil)
	body := []byte(strings.Repeat("é", MaxPreview))
	ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Body = body }))
	r, _ := e.m.Show(ans.ID)
	b := r.Call.Body
	if !b.Truncated || len(b.Preview) > MaxPreview || !strings.HasPrefix(string(body), b.Preview) || b.Bytes != len(body) {
		t.Fatalf("preview of a %d-byte body: %d bytes, truncated %v", len(body), len(b.Preview), b.Truncated)
	}
	bin := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Body = []byte{0xff, 0x00, 0x01} }))
	if r, _ := e.m.Show(bin.ID); r.Call.Body.Encoding != "base64" || r.Call.Body.Preview != "/wAB" {
		t.Fatalf("binary body = %+v", r.Call.Body)
	}
}

func assertFileHasNoSecret(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	servertest.AssertNoSecret(t, path, string(b), testSecret)
}

// A repeat of a request that expired unanswered (before any sweep) opens
// a new one instead of joining it.
func TestRepeatOfAnExpiredOpenRequestOpensANewOne(t *testing.T) {
	e := newTestEnv(t, nil)
	first := e.m.Ask(context.Background(), ask(noWait))
	e.clock.Advance(10 * time.Minute)
	second := e.m.Ask(context.Background(), ask(noWait))
	if second.ID == first.ID || second.Code != CodePending {
		t.Fatalf("repeat after the ttl = %+v, want a new pending request", second)
	}
	if r, _ := e.m.Show(first.ID); r.State != StateExpired {
		t.Fatalf("the first request is %s, want expired", r.State)
	}
}
