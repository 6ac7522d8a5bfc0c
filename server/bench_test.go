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
