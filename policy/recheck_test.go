package policy

import (
	"testing"
	"time"
)

func TestScopeReadOnly(t *testing.T) {
	p := mustCompile(t, testScopes())
	tests := []struct {
		scope, tool string
		want        bool
	}{
		{"triage", "github", false}, // POST comments
		{"deep", "github", true},    // GET and HEAD
		{"titles", "issue_titles", true},
		{"report", "archive", true},
		{"bucket", "archive", true},
		{"report", "github", false}, // not granted
	}
	for _, tt := range tests {
		sc, _ := p.Scope(tt.scope)
		if got := sc.ReadOnly(tt.tool); got != tt.want {
			t.Errorf("Scope(%s).ReadOnly(%s) = %v, want %v", tt.scope, tt.tool, got, tt.want)
		}
	}
}

// A redirect hop is re-checked against the scope and the session's
// liveness, and spends none of the session's limits.
func TestSessionRecheckSpendsNothing(t *testing.T) {
	sc := testScope(t, ScopeConfig{TTL: "1h", MaxCalls: 1, MaxDenials: new(1), Rate: "1/h"})
	s := NewSession("s1", sc, t0, 0, "")
	for range 3 {
		if d := s.Recheck(t0, okReq); !d.Allow || d.Reason == "" {
			t.Fatalf("Recheck(%s) = %+v, want allowed", okReq, d)
		}
		if d := s.Recheck(t0, badReq); d.Allow || d.Code != CodeNotGranted {
			t.Fatalf("Recheck(%s) = %+v, want not_granted", badReq, d)
		}
	}
	if info := s.Info(t0); info.Calls != 0 || info.Denials != 0 || info.State != StateActive {
		t.Fatalf("after rechecks Info = %+v, want no calls, no denials, active", info)
	}
	decide(t, s, t0, okReq, "") // the one call max_calls and rate allow
	if d := s.Recheck(t0.Add(time.Hour), okReq); d.Allow || d.Code != CodeSessionExpired {
		t.Fatalf("Recheck after expiry = %+v, want session_expired", d)
	}
}

func TestSessionLive(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{TTL: "1h"}), t0, 0, "")
	if d := s.Live(t0); !d.Allow || d.Reason == "" {
		t.Fatalf("Live(t0) = %+v, want allowed", d)
	}
	s.Revoke("by test")
	if d := s.Live(t0); d.Allow || d.Code != CodeSessionRevoked {
		t.Fatalf("Live after Revoke = %+v, want session_revoked", d)
	}
	if info := s.Info(t0); info.Calls != 0 {
		t.Fatalf("Live counted %d calls", info.Calls)
	}
}
