package server

import (
	"context"
	"encoding/json"
	"testing"
)

// BenchmarkBrokeredCall is one allowed call through the whole pipeline in
// process: validation, policy, vault, durable audit (intent fsynced),
// execution against a loopback upstream, scrubbing and the outcome record.
func BenchmarkBrokeredCall(b *testing.B) {
	e := newEnv(b, baseConfig)
	s, err := e.broker.NewSession(NewSessionID(), "triage", 0, "bench")
	if err != nil {
		b.Fatal(err)
	}
	args := json.RawMessage(`{"method":"GET","path":"/repos/acme/api/issues/1"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out := e.broker.Call(context.Background(), s, "github", args); out.Result == nil {
			b.Fatalf("call failed: %s", out.Message)
		}
	}
}

// BenchmarkDeniedCall is a call the scope refuses: no upstream, one record.
func BenchmarkDeniedCall(b *testing.B) {
	e := newEnv(b, baseConfig)
	s, err := e.broker.NewSession(NewSessionID(), "triage", 0, "bench")
	if err != nil {
		b.Fatal(err)
	}
	args := json.RawMessage(`{"method":"DELETE","path":"/repos/acme/api/issues/1"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out := e.broker.Call(context.Background(), s, "github", args); out.Result != nil {
			b.Fatal("denied call was allowed")
		}
	}
}

// BenchmarkArgumentProbe is the check of one call's arguments for a
// credential of any tool of the scope (invariant 9), which every call to
// a known tool pays before Prepare.
func BenchmarkArgumentProbe(b *testing.B) {
	e := newEnv(b, baseConfig)
	s, err := e.broker.NewSession(NewSessionID(), "triage", 0, "bench")
	if err != nil {
		b.Fatal(err)
	}
	tool := s.cfg.Tools["github"]
	args := json.RawMessage(`{"method":"POST","path":"/repos/acme/api/issues/1/comments","body":{"body":"Looks like a duplicate of #7; closing after review by the triage rotation."}}`)
	call, err := tool.Prepare(args)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		probe := e.broker.probeScrubbers(s, tool)
		if argsProbe(probe, args, nil) || argsProbe(probe, args, call) {
			b.Fatal("benign arguments were taken for a credential")
		}
	}
}
