package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// oversizedCall calls github with a body that makes the message larger
// than MaxMessageBytes, and returns the JSON-RPC error it must get.
func oversizedCall(t *testing.T, c *client.Client, size int) error {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = "github"
	req.Params.Arguments = map[string]any{"method": "POST", "path": "/repos/acme/api/issues/1/comments", "body": strings.Repeat("A", size)}
	res, err := c.CallTool(context.Background(), req)
	if err == nil {
		t.Fatalf("a %d-byte call = %s, want a JSON-RPC error naming the limit", size, servertest.ResultText(res))
	}
	return err
}

// oversizedNotification sends a notification larger than MaxMessageBytes.
func oversizedNotification(t *testing.T, c *client.Client) {
	t.Helper()
	n := mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{Method: "notifications/keyhole-test"}}
	n.Params.AdditionalFields = map[string]any{"pad": strings.Repeat("B", 5<<20)}
	// Over HTTP the broker answers 413 with the JSON-RPC error; over
	// stdio the error comes as a line with a null id.
	_ = c.GetTransport().SendNotification(context.Background(), n)
}

// TestBadInputDoesNotEndASession: a tools/call of 4.5 to 10 MiB and a 5 MiB
// notification get a JSON-RPC error naming the 4 MiB limit, over stdio and
// over HTTP alike, and the session goes on: the next call is served, and
// nothing of the refused messages reached the upstream or the audit.
func TestBadInputDoesNotEndASession(t *testing.T) {
	args := map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	run := func(t *testing.T, e *env, c *client.Client, wire *servertest.Wire) {
		for _, size := range []int{9 << 19, 10 << 20} { // 4.5 MiB, 10 MiB
			err := oversizedCall(t, c, size)
			if !strings.Contains(err.Error(), "at most 4 MiB") {
				t.Fatalf("a %d-byte call: %v, want the 4 MiB limit named", size, err)
			}
		}
		oversizedNotification(t, c)
		if wire != nil {
			waitForWire(t, wire, `"id":null,"error":{"code":-32600,"message":"message too large`)
		}
		if res := servertest.CallTool(t, c, "github", args); res.IsError {
			t.Fatalf("the call after the refused messages = %s, want it served", servertest.ResultText(res))
		}
		if n := len(e.up.Requests()); n != 1 {
			t.Fatalf("upstream received %d requests, want only the last call", n)
		}
		if recs := e.records(); len(recs) != 1 || recs[0].Decision != "allow" {
			t.Fatalf("audit = %+v, want only the last call, allowed", recs)
		}
	}
	t.Run("stdio", func(t *testing.T) {
		e := newEnv(t, baseConfig)
		c, wire := e.connect("triage")
		run(t, e, c, wire)
	})
	t.Run("http", func(t *testing.T) {
		h := newHTTPEnv(t)
		c, err := h.client(h.token("triage"))
		if err != nil {
			t.Fatal(err)
		}
		run(t, h.env, c, nil)
	})
}

const scrubNoteConfig = baseConfig + `  probe:
    max_denials: 3
    grants:
      - {tool: github, methods: [GET], paths: [/echo, /repos/acme/api/issues]}
`

// TestScrubbedResultSaysItCountsTowardMaxDenials: a result keyhole had to
// scrub a credential from says so, and how many more such results end the
// session; the last one says the session has ended.
func TestScrubbedResultSaysItCountsTowardMaxDenials(t *testing.T) {
	e := newEnv(t, scrubNoteConfig)
	c, _ := e.connect("probe")
	echo := map[string]any{"method": "GET", "path": "/echo"}
	for _, want := range []string{
		"(keyhole removed a credential from this result; this counts toward the session's max_denials: 2 more and the session ends)",
		"(keyhole removed a credential from this result; this counts toward the session's max_denials: 1 more and the session ends)",
		"the session has ended: ask the user for a new session)",
	} {
		res := servertest.CallTool(t, c, "github", echo)
		if res.IsError || !strings.Contains(servertest.ResultText(res), want) {
			t.Fatalf("scrubbed result = %s, want it to say %q", servertest.ResultText(res), want)
		}
	}
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "ask the user for a new session") {
		t.Fatalf("call after the tripwire = %s, want the session's end explained", servertest.ResultText(res))
	}
	plain := servertest.CallTool(t, c, "github", echo)
	if strings.Contains(servertest.ResultText(plain), "removed a credential") {
		t.Fatalf("a denied call mentions scrubbing: %s", servertest.ResultText(plain))
	}
}

// waitForWire waits until the client has received want.
func waitForWire(t *testing.T, wire *servertest.Wire, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(wire.Bytes()), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the client never received %s; it received:\n%.600s", want, wire.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
