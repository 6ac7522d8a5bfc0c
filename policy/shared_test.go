package policy

import "testing"

// Several brokers share a session's counters: each call's number comes
// from the store, and max_calls is checked against it, not against what
// this broker counted.
func TestDecideNthChecksMaxCallsAgainstTheStoresCount(t *testing.T) {
	s := NewSession("s1", testScope(t, ScopeConfig{TTL: "1h", MaxCalls: 5}), t0, 0, "")
	if d := s.DecideNth(t0, okReq, 5); !d.Allow {
		t.Fatalf("DecideNth(5 of 5) = %+v, want allow", d)
	}
	if d := s.DecideNth(t0, okReq, 6); d.Code != CodeMaxCalls {
		t.Fatalf("DecideNth(6 of 5) = %+v, want %s", d, CodeMaxCalls)
	}
	// The store's count wins over this broker's, which saw two calls.
	if got := s.Info(t0).Calls; got != 6 {
		t.Fatalf("Calls = %d, want the store's 6", got)
	}
}

// A revocation or a tripwire on another broker ends the session here at
// its next call; counters never go back.
func TestAdoptTakesAnotherBrokersEndAndCounters(t *testing.T) {
	three := 3
	sc := testScope(t, ScopeConfig{TTL: "1h", MaxDenials: &three})
	s := NewSession("s1", sc, t0, 0, "")
	info := s.Adopt(t0, Shared{State: StateActive, Calls: 7, Denials: 2})
	if info.State != StateActive || info.Calls != 7 || info.Denials != 2 {
		t.Fatalf("Adopt(active, 7, 2) = %+v", info)
	}
	if info = s.Adopt(t0, Shared{State: StateActive, Calls: 3, Denials: 1}); info.Calls != 7 || info.Denials != 2 {
		t.Fatalf("Adopt(lower counters) = %+v, want them kept", info)
	}
	if info = s.Adopt(t0, Shared{State: StateActive, Calls: 8, Denials: 3}); info.State != StateEnded {
		t.Fatalf("Adopt(denials at max_denials) = %+v, want ended by the tripwire", info)
	}
	r := NewSession("s2", sc, t0, 0, "")
	r.Adopt(t0, Shared{State: StateRevoked, EndReason: "by ops"})
	decide(t, r, t0, okReq, CodeSessionRevoked)
	// A final state is final: an active row does not revive it.
	r.Adopt(t0, Shared{State: StateActive})
	decide(t, r, t0, okReq, CodeSessionRevoked)
}
