package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// bareMaxBody caps an upstream body, as keyhole's response.max_bytes does.
const bareMaxBody = 256 << 10

// serveBare serves the bare passthrough: one MCP tool, "tracker", taking
// keyhole's generic http arguments {method, path}, adding the bench
// credential from a constant and returning the upstream's answer as
// {status, headers, body}, structured and as text, with no policy, vault or
// audit. It writes its MCP URL as one line to out and
// serves until in reaches EOF (its parent is gone) or ctx is done.
func serveBare(ctx context.Context, upstream string, in io.Reader, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bare: listen: %w", err)
	}
	srv := &http.Server{Handler: bareHandler(upstream), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if _, err := fmt.Fprintf(out, "http://%s/mcp\n", ln.Addr()); err != nil {
		srv.Close()
		return fmt.Errorf("bare: announce: %w", err)
	}
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, in)
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	case err := <-served:
		return fmt.Errorf("bare: serve: %w", err)
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// bareHandler is the passthrough's MCP endpoint at /mcp, with mcp-go's
// default streamable-HTTP settings.
func bareHandler(upstream string) http.Handler {
	hc := &http.Client{Transport: newTransport(), Timeout: 30 * time.Second}
	s := mcpserver.NewMCPServer("bare", "1", mcpserver.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("tracker",
		mcp.WithDescription("Forward one HTTP call to the upstream."),
		mcp.WithString("method", mcp.Required()),
		mcp.WithString("path", mcp.Required()),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return bareCall(ctx, hc, upstream, req), nil
	})
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcpserver.NewStreamableHTTPServer(s, mcpserver.WithEndpointPath("/mcp")))
	return mux
}

// bareView mirrors the shape of keyhole's http tool result.
type bareView struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    any               `json:"body"`
}

func bareCall(ctx context.Context, hc *http.Client, upstream string, req mcp.CallToolRequest) *mcp.CallToolResult {
	method, err := req.RequireString("method")
	if err != nil {
		return mcp.NewToolResultError(err.Error())
	}
	path, err := req.RequireString("path")
	if err != nil {
		return mcp.NewToolResultError(err.Error())
	}
	r, err := http.NewRequestWithContext(ctx, method, upstream+path, nil)
	if err != nil {
		return mcp.NewToolResultError("bad request: " + err.Error())
	}
	r.Header.Set("Authorization", "Bearer "+benchSecret)
	resp, err := hc.Do(r)
	if err != nil {
		return mcp.NewToolResultError("upstream: " + err.Error())
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, bareMaxBody))
	if err != nil {
		return mcp.NewToolResultError("upstream body: " + err.Error())
	}
	view := bareView{Status: resp.StatusCode, Headers: map[string]string{"content-type": resp.Header.Get("Content-Type")}, Body: string(raw)}
	if json.Valid(raw) {
		view.Body = json.RawMessage(raw)
	}
	text, err := json.Marshal(view)
	if err != nil {
		return mcp.NewToolResultError("encode: " + err.Error())
	}
	return mcp.NewToolResultStructured(view, string(text))
}

// child is a server process the bench started and owns.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	URL   string
}

// PID is the child's process id.
func (c *child) PID() int { return c.cmd.Process.Pid }

// Stop closes the child's stdin, signals it to stop and waits for it.
func (c *child) Stop() {
	if c.stdin != nil {
		c.stdin.Close()
	}
	c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() {
		c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// startBare runs `self bare --upstream URL` and waits for its URL.
func startBare(ctx context.Context, self, upstream string) (*child, error) {
	cmd := exec.CommandContext(ctx, self, "bare", "--upstream", upstream)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bare: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bare: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bare: start %s: %w", self, err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "http://") {
		c.Stop()
		return nil, errors.Join(fmt.Errorf("bare: no URL announced (got %q)", line), err)
	}
	c.URL = strings.TrimSpace(line)
	return c, nil
}
