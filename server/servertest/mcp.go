package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// Wire keeps every byte an MCP client received.
type Wire struct {
	mu sync.Mutex
	b  []byte
}

func (w *Wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	return len(p), nil
}

// Bytes returns what was received so far.
func (w *Wire) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.b...)
}

// ServeStdio serves one MCP client on in and out until in ends or ctx is
// done, as a stdio MCP server does (keyhole's Broker.ServeStdio).
type ServeStdio func(ctx context.Context, in io.Reader, out io.Writer) error

// ConnectStdio runs serve over pipes (the real stdio framing) and returns
// an initialized mcp-go client named name, and the log of every byte it
// received. When the test ends, the client is closed and serve must
// return, without error.
func ConnectStdio(t testing.TB, serve ServeStdio, name string) (*client.Client, *Wire) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	wire := &Wire{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, inR, outW)
		outW.Close()
	}()
	c := client.NewClient(transport.NewIO(io.TeeReader(outR, wire), inW, io.NopCloser(strings.NewReader(""))))
	t.Cleanup(func() {
		c.Close()
		inW.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stdio server = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("stdio session did not end")
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := Initialize(ctx, c, name, mcp.LATEST_PROTOCOL_VERSION); err != nil {
		t.Fatal(err)
	}
	return c, wire
}

// Initialize sends initialize as client name at protocol version.
func Initialize(ctx context.Context, c *client.Client, name, version string) error {
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = version
	init.Params.ClientInfo = mcp.Implementation{Name: name, Version: "1.0"}
	if _, err := c.Initialize(ctx, init); err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	return nil
}

// ConnectHTTP connects an initialized streamable-HTTP MCP client named
// name, holding a bearer token; opts add transport options (a TLS
// client, say). It may run on any goroutine.
func ConnectHTTP(url, token, name string, opts ...transport.StreamableHTTPCOption) (*client.Client, error) {
	opts = append([]transport.StreamableHTTPCOption{
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}),
		// Complaints that a killed broker refused the session's DELETE are expected.
		transport.WithHTTPLogger(slog.New(slog.DiscardHandler)),
	}, opts...)
	c, err := client.NewStreamableHttpClient(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		return nil, fmt.Errorf("start client: %w", err)
	}
	if err := Initialize(ctx, c, name, mcp.LATEST_LEGACY_PROTOCOL_VERSION); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// StartCommand launches an MCP server binary with args as an MCP client
// would (environment env, working directory dir) and initializes it as
// client name. Its stderr is kept for the error. It may run on any
// goroutine.
func StartCommand(binary, dir string, env, args []string, name string) (*client.Client, error) {
	return StartCommandStderr(binary, dir, env, args, name, nil)
}

// StartCommandStderr is StartCommand that also copies the server's stderr
// to stderr (nil: kept for the error only).
func StartCommandStderr(binary, dir string, env, args []string, name string, stderr io.Writer) (*client.Client, error) {
	c, err := client.NewStdioMCPClientWithOptions(binary, env, args, transport.WithCommandFunc(func(ctx context.Context, cmd string, env, args []string) (*exec.Cmd, error) {
		c := exec.CommandContext(ctx, cmd, args...)
		c.Env, c.Dir = env, dir
		return c, nil
	}))
	if err != nil {
		return nil, err
	}
	var kept SyncBuffer
	if r, ok := client.GetStderr(c); ok {
		var w io.Writer = &kept
		if stderr != nil {
			w = io.MultiWriter(&kept, stderr)
		}
		go io.Copy(w, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Initialize(ctx, c, name, mcp.LATEST_LEGACY_PROTOCOL_VERSION); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w (stderr: %s)", err, kept.String())
	}
	return c, nil
}

// CallTool calls tool name with args and fails t on a protocol error (a
// tool error is a result).
func CallTool(t testing.TB, c *client.Client, name string, args any) *mcp.CallToolResult {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := c.CallTool(context.Background(), req)
	if err != nil {
		t.Fatalf("CallTool(%s): %v", name, err)
	}
	return res
}

// ResultText is the text content of a tool result.
func ResultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}
