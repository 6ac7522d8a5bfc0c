package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func testScope(t testing.TB, c ScopeConfig) *Scope {
	t.Helper()
	c.Grants = []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/ok"}}}
	p := mustCompile(t, map[string]ScopeConfig{"s": c})
	sc, _ := p.Scope("s")
	return sc
}

var (
	okReq  = get("/ok")
	badReq = get("/admin")
)

const badReason = "GET /admin is not granted to scope s; granted: GET /ok"

func decide(t *testing.T, s *Session, now time.Time, req Request, wantCode string) Decision {
	t.Helper()
	d := s.Decide(now, req)
	if d.Code != wantCode || d.Allow != (wantCode == "") || d.Reason == "" {
		t.Fatalf("Decide(%s, %s) = %+v, want code %q", now.Format(time.TimeOnly), req, d, wantCode)
	}
	return d
}

func TestSessionTTL_ExpiresByInjectedClock(t *testing.T) {
	sc := testScope(t, ScopeConfig{TTL: "1h"})
	s := NewSession("s1", sc, t0, 0, "triage run")
	if got := s.Info(t0); got.Expires != t0.Add(time.Hour) || got.State != StateActive || got.Label != "triage run" || got.Scope != "s" || got.ID != "s1" {
		t.Fatalf("Info(t0) = %+v", got)
	}
	decide(t, s, t0.Add(time.Hour-time.Nanosecond), okReq, "")
	d := decide(t, s, t0.Add(time.Hour), okReq, CodeSessionExpired)
	if want := "session s1 expired at 2026-11-27T13:00:00Z; start a new session"; d.Reason != want {
		t.Fatalf("Reason = %q, want %q", d.Reason, want)
	}
	// The clock going back does not revive it.
	decide(t, s, t0.Add(time.Minute), okReq, CodeSessionExpired)
	if got := s.Info(t0); got.State != StateExpired || got.Calls != 1 {
		t.Fatalf("Info after expiry = state %s calls %d, want expired 1", got.State, got.Calls)
	}
}

func TestSessionInfoShowsExpiry(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{TTL: "10m"}), t0, 0, "")
	if got := s.Info(t0.Add(9 * time.Minute)).State; got != StateActive {
		t.Fatalf("Info(+9m).State = %s, want active", got)
	}
	if got := s.Info(t0.Add(10 * time.Minute)).State; got != StateExpired {
		t.Fatalf("Info(+10m).State = %s, want expired", got)
	}
	if got := s.Info(t0).State; got != StateExpired {
		t.Fatalf("Info(t0) after expiry seen = %s, want expired", got)
	}
}

func TestNewSessionTTL(t *testing.T) {
	sc := testScope(t, ScopeConfig{TTL: "1h"})
	tests := map[string]struct{ in, want time.Duration }{
		"scope default":   {0, time.Hour},
		"shorter kept":    {time.Minute, time.Minute},
		"longer clamped":  {48 * time.Hour, time.Hour},
		"negative scopes": {-time.Minute, time.Hour},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NewSession("x", sc, t0, tt.in, "").Info(t0).Expires.Sub(t0); got != tt.want {
				t.Fatalf("NewSession(ttl %s) lives %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestSessionRevokeAndEnd(t *testing.T) {
	sc := testScope(t, ScopeConfig{})
	s := NewSession("s1", sc, t0, 0, "")
	decide(t, s, t0, okReq, "")
	s.Revoke("leaked transcript")
	d := decide(t, s, t0.Add(time.Second), okReq, CodeSessionRevoked)
	if want := "session s1 was revoked: leaked transcript"; d.Reason != want {
		t.Fatalf("Reason = %q, want %q", d.Reason, want)
	}
	s.End("done") // a revoked session stays revoked
	if got := s.Info(t0); got.State != StateRevoked || got.EndReason != "leaked transcript" || got.Calls != 1 {
		t.Fatalf("Info = %+v, want revoked, leaked transcript, 1 call", got)
	}

	e := NewSession("s2", sc, t0, 0, "")
	e.End("")
	if d := decide(t, e, t0, okReq, CodeSessionEnded); d.Reason != "session s2 has ended" {
		t.Fatalf("Reason = %q", d.Reason)
	}
	e.Revoke("late")
	if got := e.Info(t0).State; got != StateEnded {
		t.Fatalf("State after End then Revoke = %s, want ended", got)
	}
}

func TestSessionMaxCalls(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{MaxCalls: 3, MaxDenials: intp(0)}), t0, 0, "")
	decide(t, s, t0, okReq, "")
	decide(t, s, t0, badReq, CodeNotGranted) // denied calls count too
	decide(t, s, t0, okReq, "")
	d := decide(t, s, t0, okReq, CodeMaxCalls)
	if want := "session s1 has used all 3 calls of scope s"; d.Reason != want {
		t.Fatalf("Reason = %q, want %q", d.Reason, want)
	}
	if got := s.Info(t0); got.Calls != 4 || got.Denials != 1 || got.State != StateActive {
		t.Fatalf("Info = calls %d denials %d state %s, want 4, 1, active", got.Calls, got.Denials, got.State)
	}
}

func TestSessionRate(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{Rate: "2/s", MaxDenials: intp(1)}), t0, 0, "")
	decide(t, s, t0, okReq, "")
	decide(t, s, t0, okReq, "")
	d := decide(t, s, t0, okReq, CodeRateLimited)
	if want := "scope s allows 2 calls per second; slow down and retry"; d.Reason != want {
		t.Fatalf("Reason = %q, want %q", d.Reason, want)
	}
	decide(t, s, t0.Add(499*time.Millisecond), okReq, CodeRateLimited)
	decide(t, s, t0.Add(500*time.Millisecond), okReq, "")
	decide(t, s, t0.Add(500*time.Millisecond), okReq, CodeRateLimited)
	// Rate refusals are not probing: with max_denials 1 the session lives on.
	if got := s.Info(t0.Add(time.Second)); got.State != StateActive || got.Denials != 0 || got.Calls != 6 {
		t.Fatalf("Info = state %s denials %d calls %d, want active 0 6", got.State, got.Denials, got.Calls)
	}
}

func TestSessionTripwire(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{MaxDenials: intp(3)}), t0, 0, "")
	decide(t, s, t0, badReq, CodeNotGranted)
	s.NoteScrubbed(t0)
	decide(t, s, t0, okReq, "")
	d := decide(t, s, t0, badReq, CodeTripwire)
	wantEnd := "tripwire: this session was ended after 3 denials; ask the user for a new session (max_denials 3 of scope s)"
	if want := badReason + "; " + wantEnd; d.Reason != want {
		t.Fatalf("Reason =\n %q\nwant\n %q", d.Reason, want)
	}
	d = decide(t, s, t0, okReq, CodeSessionEnded)
	if want := "session s1 has ended: " + wantEnd; d.Reason != want {
		t.Fatalf("Reason = %q, want %q", d.Reason, want)
	}
	if got := s.Info(t0); got.State != StateEnded || got.EndReason != wantEnd || got.Denials != 3 || got.Calls != 3 {
		t.Fatalf("Info = %+v", got)
	}
}

func TestSessionTripwireByNotes(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{MaxDenials: intp(2)}), t0, 0, "")
	s.NoteDenial(t0)
	s.NoteScrubbed(t0)
	decide(t, s, t0, okReq, CodeSessionEnded)
}

func TestSessionTripwireDisabled(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{MaxDenials: intp(0)}), t0, 0, "")
	for range 100 {
		decide(t, s, t0, badReq, CodeNotGranted)
	}
	decide(t, s, t0, okReq, "")
	if got := s.Info(t0).Denials; got != 100 {
		t.Fatalf("Denials = %d, want 100", got)
	}
}

func TestRestoreSession(t *testing.T) {
	sc := testScope(t, ScopeConfig{MaxDenials: intp(3), MaxCalls: 10})
	info := SessionInfo{ID: "s1", Scope: "s", Created: t0, Expires: t0.Add(time.Hour), Calls: 9, Denials: 2, LastCall: t0}
	s := RestoreSession(info, sc)
	if got := s.Info(t0); got.State != StateActive || got.Calls != 9 {
		t.Fatalf("restored Info = %+v", got)
	}
	decide(t, s, t0, badReq, CodeTripwire)

	revoked := RestoreSession(SessionInfo{ID: "s2", Expires: t0.Add(time.Hour), State: StateRevoked, EndReason: "x"}, sc)
	decide(t, revoked, t0, okReq, CodeSessionRevoked)
}

func TestSessionInfoJSON(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{}), t0, 0, "")
	b, err := json.Marshal(s.Info(t0))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"s1","scope":"s","created":"2026-11-27T12:00:00Z","expires":"2026-11-27T13:00:00Z","state":"active","calls":0,"denials":0}`
	if string(b) != want {
		t.Fatalf("json = %s\nwant   %s", b, want)
	}
	s.Decide(t0, okReq)
	s.End("done")
	b, _ = json.Marshal(s.Info(t0))
	var back SessionInfo
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s.Info(t0)) {
		t.Fatalf("round trip = %+v, %v; want %+v", back, err, s.Info(t0))
	}
	if !strings.Contains(string(b), `"last_call":"2026-11-27T12:00:00Z"`) || !strings.Contains(string(b), `"end_reason":"done"`) {
		t.Fatalf("json = %s, want last_call and end_reason", b)
	}
}

func TestSessionConcurrentCalls(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{MaxCalls: 50}), t0, 0, "")
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 100 {
		wg.Go(func() {
			if s.Decide(t0, okReq).Allow {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := s.Info(t0).Calls; allowed != 50 || got != 100 {
		t.Fatalf("allowed %d of 100 with max_calls 50, Calls %d; want 50, 100", allowed, got)
	}
}

// TestRestoreSessionNeverGivesMoreThanItsScope (issue 14 item 6): a
// record with a later expiry than its scope allows comes back clamped, and
// one whose denials reached max_denials comes back ended.
func TestRestoreSessionNeverGivesMoreThanItsScope(t *testing.T) {
	sc := testScope(t, ScopeConfig{TTL: "1h", MaxDenials: intp(3)})
	stretched := RestoreSession(SessionInfo{ID: "s1", Created: t0, Expires: t0.Add(48 * time.Hour)}, sc)
	if got := stretched.Info(t0).Expires; !got.Equal(t0.Add(time.Hour)) {
		t.Fatalf("RestoreSession(expires created+48h, scope ttl 1h).Expires = %v, want %v", got, t0.Add(time.Hour))
	}
	decide(t, stretched, t0.Add(time.Hour), okReq, CodeSessionExpired)

	tripped := RestoreSession(SessionInfo{ID: "s2", Created: t0, Expires: t0.Add(time.Hour), Denials: 3}, sc)
	got := tripped.Info(t0)
	if got.State != StateEnded || got.Denials != 3 || !strings.Contains(got.EndReason, "tripwire") {
		t.Fatalf("RestoreSession(3 denials, max_denials 3).Info = %+v, want ended by the tripwire with 3 denials", got)
	}
	decide(t, tripped, t0, okReq, CodeSessionEnded)
}

func TestSessionNoteScrubbedSaysWhatIsLeft(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{MaxDenials: intp(3)}), t0, 0, "")
	for i, want := range []Tripwire{{Counted: true, Left: 2}, {Counted: true, Left: 1}, {Counted: true, Left: 0, Ended: true}, {}} {
		if got := s.NoteScrubbed(t0); got != want {
			t.Fatalf("NoteScrubbed #%d = %+v, want %+v", i+1, got, want)
		}
	}
	off := NewSession("s2", testScope(t, ScopeConfig{MaxDenials: intp(0)}), t0, 0, "")
	if got := off.NoteScrubbed(t0); got != (Tripwire{}) {
		t.Fatalf("NoteScrubbed without max_denials = %+v, want nothing counted", got)
	}
}

func TestSessionTripEndsAtOnceWithItsOwnCode(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{MaxDenials: intp(20)}), t0, 0, "")
	d := s.Trip(t0, CodeSecretInArguments, "the arguments of a call carried a credential")
	if d.Allow || d.Code != CodeSecretInArguments || !strings.Contains(d.Reason, "ask the user for a new session") {
		t.Fatalf("Trip = %+v", d)
	}
	info := s.Info(t0)
	if info.State != StateEnded || info.Calls != 1 || info.Denials != 1 {
		t.Fatalf("Info after Trip = %+v, want ended after 1 call", info)
	}
	if got := decide(t, s, t0, okReq, CodeSessionEnded); got.Reason != info.DeadReason() || !strings.Contains(got.Reason, "carried a credential") {
		t.Fatalf("next call = %q, want the trip's reason %q", got.Reason, info.DeadReason())
	}
	if d := s.Trip(t0, CodeSecretInArguments, "again"); d.Code != CodeSessionEnded {
		t.Fatalf("Trip of an ended session = %+v, want session_ended", d)
	}
}
