package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// bigCall calls tracker with a path padded to size bytes: a message over
// the 4 MiB limit.
func bigCall(c *client.Client, size int) error {
	req := mcp.CallToolRequest{}
	req.Params.Name = "tracker"
	req.Params.Arguments = map[string]any{"method": "GET", "path": "/issues/" + strings.Repeat("a", size)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.CallTool(ctx, req)
	if err == nil {
		return fmt.Errorf("a %d-byte call was answered with a result: %s", size, servertest.ResultText(res))
	}
	if !strings.Contains(err.Error(), "at most 4 MiB") {
		return fmt.Errorf("a %d-byte call failed with %v, want a JSON-RPC error naming the 4 MiB limit", size, err)
	}
	return nil
}

func bigNotification(c *client.Client) {
	n := mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{Method: "notifications/keyhole-test"}}
	n.Params.AdditionalFields = map[string]any{"pad": strings.Repeat("B", 5<<20)}
	_ = c.GetTransport().SendNotification(context.Background(), n)
}

// TestBadInputDoesNotEndASession_ThroughTheBinary: through the stdio relay
// (the default), standalone stdio and HTTP alike, a tools/call of 4.5 to
// 10 MiB and a 5 MiB notification get a JSON-RPC error naming the limit,
// and the session goes on.
func TestBadInputDoesNotEndASession_ThroughTheBinary(t *testing.T) {
	up, hits := countingUpstream(t)
	check := func(t *testing.T, c *client.Client) {
		t.Helper()
		for _, size := range []int{9 << 19, 10 << 20} {
			if err := bigCall(c, size); err != nil {
				t.Fatal(err)
			}
		}
		bigNotification(c)
		before := hits.Load()
		if res, err := call(c, "/issues/1"); err != nil || res.IsError {
			t.Fatalf("the call after the refused messages = %v %+v, want it served: the session must go on", err, res)
		}
		if hits.Load() != before+1 {
			t.Fatal("the call after the refused messages did not reach the upstream")
		}
	}
	t.Run("relay", func(t *testing.T) {
		h := brokerHome(t, up.URL)
		h.killBrokerAtCleanup(t)
		c := h.stdioClient(t)
		defer c.Close()
		check(t, c)
	})
	t.Run("standalone", func(t *testing.T) {
		h := brokerHome(t, up.URL)
		c := h.stdioClient(t, "--standalone")
		defer c.Close()
		check(t, c)
	})
	t.Run("http", func(t *testing.T) {
		h := brokerHome(t, up.URL)
		_, url := startServe(t, h)
		_, c := h.httpSession(t, url, "http-agent")
		check(t, c)
	})
}

// TestTripwireEndedSessionSaysSoThroughTheRelay: once a session's tripwire
// ends it, the agent behind the stdio relay is told why on every request
// (not "broker unavailable"), and the relay keeps answering until the
// client goes.
func TestTripwireEndedSessionSaysSoThroughTheRelay(t *testing.T) {
	up, hits := countingUpstream(t)
	h := brokerHome(t, up.URL)
	cfg := filepath.Join(h.dir, "keyhole.yaml")
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(b), "    ttl: 1h\n", "    ttl: 1h\n    max_denials: 2\n", 1)), 0o600)
	h.killBrokerAtCleanup(t)
	c := h.stdioClient(t)
	defer c.Close()
	call(c, "/admin")
	res, err := call(c, "/admin/2")
	if err != nil || !res.IsError || !strings.Contains(servertest.ResultText(res), "this session was ended after 2 denials; ask the user for a new session") {
		t.Fatalf("the call that tripped the tripwire = %v %s", err, resultText(res))
	}
	for i := 0; i < 3; i++ {
		res, err = call(c, "/issues/1")
		if err != nil {
			t.Fatalf("call %d after the tripwire: %v, want a tool error saying why", i, err)
		}
		text := servertest.ResultText(res)
		if !res.IsError || !strings.Contains(text, "this session was ended after 2 denials; ask the user for a new session") || strings.Contains(text, "unavailable") {
			t.Fatalf("call %d after the tripwire = %s, want the tripwire named", i, text)
		}
	}
	if _, err := c.ListTools(context.Background(), mcp.ListToolsRequest{}); err == nil || !strings.Contains(err.Error(), "ask the user for a new session") {
		t.Fatalf("tools/list after the tripwire = %v, want a JSON-RPC error saying why", err)
	}
	if hits.Load() != 0 {
		t.Fatalf("upstream received %d requests", hits.Load())
	}
}

func resultText(r *mcp.CallToolResult) string {
	if r == nil {
		return "<nil>"
	}
	return servertest.ResultText(r)
}

// TestStdioServesMCP20260728: `keyhole stdio`, through the relay and
// standalone, serves a client of revision 2026-07-28 at that revision
// (and one of 2025-11-25 at its own), and stderr holds no housekeeping of
// mcp-go's transport.
func TestStdioServesMCP20260728(t *testing.T) {
	up, _ := countingUpstream(t)
	for _, mode := range []string{"relay", "standalone"} {
		t.Run(mode, func(t *testing.T) {
			h := brokerHome(t, up.URL)
			h.killBrokerAtCleanup(t)
			args := []string{"stdio", "--scope", "triage"}
			if mode == "standalone" {
				args = append(args, "--standalone")
			}
			for _, version := range []string{mcp.LATEST_PROTOCOL_VERSION, mcp.LATEST_LEGACY_PROTOCOL_VERSION} {
				if mode == "standalone" && version == mcp.LATEST_LEGACY_PROTOCOL_VERSION {
					continue // one standalone process owns the data dir at a time
				}
				var stderr servertest.SyncBuffer
				tr := transport.NewStdioWithOptions(binary, h.env, args, transport.WithCommandFunc(func(ctx context.Context, cmd string, env, args []string) (*exec.Cmd, error) {
					c := exec.CommandContext(ctx, cmd, args...)
					c.Env, c.Dir, c.Stderr = env, h.dir, &stderr
					return c, nil
				}))
				c := client.NewClient(tr)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				if err := c.Start(ctx); err != nil {
					t.Fatal(err)
				}
				init := mcp.InitializeRequest{}
				init.Params.ProtocolVersion = version
				init.Params.ClientInfo = mcp.Implementation{Name: "rev-" + version, Version: "1"}
				if _, err := c.Initialize(ctx, init); err != nil {
					t.Fatalf("initialize at %s: %v (stderr: %s)", version, err, stderr.String())
				}
				if got := c.ProtocolVersion(); got != version {
					t.Fatalf("a client of %s was served at %s", version, got)
				}
				if res, err := call(c, "/issues/1"); err != nil || res.IsError {
					t.Fatalf("call at %s = %v %+v", version, err, res)
				}
				cancel()
				c.Close()
				if strings.Contains(stderr.String(), "listening to server forever") {
					t.Fatalf("stderr holds mcp-go's housekeeping:\n%s", stderr.String())
				}
			}
			var rec struct{ Client string }
			for _, r := range h.auditRecordsFull(t) {
				if r.Tool == "tracker" && strings.HasPrefix(r.Client, "rev-"+mcp.LATEST_PROTOCOL_VERSION) {
					rec.Client = r.Client
				}
			}
			if rec.Client == "" {
				t.Fatal("no audit record names the 2026-07-28 client")
			}
		})
	}
}
