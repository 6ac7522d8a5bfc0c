package server

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
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
		cs := e.broker.callSecrets()
		probe := e.broker.probeScrubbers(s, tool, cs)
		if argsProbe(probe, args, nil) || argsProbe(probe, args, call) {
			b.Fatal("benign arguments were taken for a credential")
		}
		cs.release()
	}
}

// BenchmarkMCPCall is an allowed call as an MCP client makes it: mcp-go's
// client and server over streamable HTTP (protocol 2026-07-28, as
// cmd/keyhole-bench uses), the phantom-token check, then the whole
// pipeline of BenchmarkBrokeredCall. With clients > 1 the calls come from
// that many sessions at once, as at concurrency 8 of make bench. Its CPU
// profile shows what keyhole adds to mcp-go's own cost per call.
func BenchmarkMCPCall(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			h := newHTTPEnv(b)
			cs := make([]*client.Client, clients)
			for i := range cs {
				c, err := client.NewStreamableHttpClient(h.srv.URL+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + h.token("triage")}))
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				init := mcp.InitializeRequest{}
				init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
				init.Params.ClientInfo = mcp.Implementation{Name: "bench", Version: "1"}
				if _, err := c.Initialize(context.Background(), init); err != nil {
					b.Fatal(err)
				}
				cs[i] = c
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			for _, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						req := mcp.CallToolRequest{}
						req.Params.Name = "github"
						req.Params.Arguments = map[string]any{"method": "GET", "path": "/repos/acme/api/issues/1"}
						res, err := c.CallTool(context.Background(), req)
						if err != nil || res.IsError {
							b.Errorf("call: %v %v", err, res)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
