// Package demo is `keyhole demo`: keyhole end to end on an embedded issue
// tracker, driven by a scripted agent through the real MCP path, with no
// config, no network beyond loopback and nothing left behind.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/vault"
)

// Options configures Run.
type Options struct {
	// Color marks decisions and headings with ANSI colours (for a terminal).
	Color bool
	// Now is the clock of the broker and the audit log; nil is time.Now.
	Now func() time.Time
	// TempDir is where the demo makes its temporary dir; "" is os.TempDir().
	TempDir string
}

// demoScope is the scope the scripted agent runs under.
const demoScope = "triage"

// demoSecret is the vault name of the demo's fake token.
const demoSecret = "github_token"

// demoConfig is the demo's keyhole.yaml; %s is the embedded API's URL.
const demoConfig = `version: 1
tools:
  github:
    kind: http
    description: An issue tracker in the shape of GitHub's REST API (embedded, on loopback).
    base_url: %s
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
    timeout: 5s
scopes:
  triage:
    description: Triage acme/api issues; may read and comment, nothing else.
    ttl: 10m
    grants:
      - tool: github
        methods: [GET]
        paths: [/repos/acme/api/issues, /repos/acme/api/issues/*, /debug/echo]
      - tool: github
        methods: [POST]
        paths: [/repos/acme/api/issues/*/comments]
`

// demoArgs are the arguments of one call of the demo's http tool.
type demoArgs struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Body   any    `json:"body,omitempty"`
}

// demoStep is one call of the scripted agent.
type demoStep struct {
	title string
	args  demoArgs
}

var demoSteps = []demoStep{
	{"Read the open issues", demoArgs{Method: "GET", Path: "/repos/acme/api/issues"}},
	{"Comment on issue 42", demoArgs{Method: "POST", Path: "/repos/acme/api/issues/42/comments", Body: map[string]string{"body": "Reproduced on main; the fix is in #44."}}},
	{"Close issue 42", demoArgs{Method: "PATCH", Path: "/repos/acme/api/issues/42", Body: map[string]string{"state": "closed"}}},
	{"Delete issue 43", demoArgs{Method: "DELETE", Path: "/repos/acme/api/issues/43"}},
	{"Climb out of the granted paths to the admin endpoint", demoArgs{Method: "GET", Path: "/repos/acme/api/issues/../../../admin"}},
	{"Call the endpoint that echoes its Authorization header", demoArgs{Method: "GET", Path: "/debug/echo"}},
}

// Run shows keyhole end to end with no config, no network beyond
// loopback and no prompts. It starts an embedded issue-tracker API, makes
// a temporary data dir with a vault holding a fake token and a config with
// a triage scope, and drives a scripted MCP client through the real stdio
// transport: allowed, denied, traversal and scrubbed calls. It writes the
// transcript, the session's audit table, the audit log's verification and
// the commands to do it for real to w. The temporary dir is removed before
// Run returns, on success and on error.
func Run(ctx context.Context, w io.Writer, o Options) error {
	return runDemo(ctx, w, o, nil)
}

// runDemo is Demo; seen, if set, is told of every request the embedded
// API receives.
func runDemo(ctx context.Context, w io.Writer, o Options, seen func(*http.Request)) (err error) {
	dir, err := os.MkdirTemp(o.TempDir, "keyhole-demo-")
	if err != nil {
		return fmt.Errorf("demo: make a temp dir: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("demo: remove %s: %w", dir, rerr))
		}
	}()

	token := demoToken()
	defer clear(token) // after the API below has stopped
	api, err := startDemoAPI(token, seen)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, api.Close()) }()

	rt, err := openDemoRuntime(dir, api.URL, token, o.Now)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rt.Close()) }()

	p := &demoPrinter{w: w, color: o.Color}
	p.intro(api.URL)
	agent, err := startDemoAgent(ctx, rt.Broker)
	if err != nil {
		return err
	}
	for i, st := range demoSteps {
		if err := p.step(ctx, i+1, st, agent.c, rt.Audit); err != nil {
			return errors.Join(err, agent.Close())
		}
	}
	if err := agent.Close(); err != nil {
		return err
	}
	p.upstream(api.Received())
	if err := p.audit(rt.Audit); err != nil {
		return err
	}
	p.forReal()
	if p.err != nil {
		return fmt.Errorf("demo: write the transcript: %w", p.err)
	}
	return nil
}

// demoToken returns a fresh fake token shaped like a GitHub one.
func demoToken() []byte {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 36)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return append([]byte("ghp_"), b...)
}

// openDemoRuntime writes the config, a key file and a vault holding token
// into dir, and opens them like `keyhole stdio --standalone` does.
func openDemoRuntime(dir, apiURL string, token []byte, now func() time.Time) (*server.Runtime, error) {
	cfgPath := filepath.Join(dir, "keyhole.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, demoConfig, apiURL), 0o600); err != nil {
		return nil, fmt.Errorf("demo: write config: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("demo: make data dir: %w", err)
	}
	keys := vault.KeySource{KeyFile: filepath.Join(dir, "master.key")}
	if err := vault.GenerateKeyFile(keys.KeyFile, false); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	v, err := vault.Create(filepath.Join(dataDir, server.VaultFile), keys)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	err = v.Set(demoSecret, token, "keyhole demo: a fake token")
	if cerr := v.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	rt, err := server.Open(server.RuntimeOptions{DataDir: dataDir, ConfigPath: cfgPath, Keys: keys, Now: now})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return rt, nil
}

// demoAgent is the scripted agent's MCP client, connected to a stdio
// session of the broker over pipes: the same framing a real MCP client
// speaks to `keyhole stdio`.
type demoAgent struct {
	c      *client.Client
	in     *io.PipeWriter
	cancel context.CancelFunc
	done   chan error
}

func startDemoAgent(ctx context.Context, b *server.Broker) (*demoAgent, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	a := &demoAgent{in: inW, cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := b.ServeStdio(ctx, demoScope, inR, outW)
		outW.Close()
		a.done <- err
	}()
	a.c = client.NewClient(transport.NewIO(outR, inW, io.NopCloser(strings.NewReader(""))))
	if err := a.c.Start(ctx); err != nil {
		a.Close()
		return nil, fmt.Errorf("demo: start the MCP client: %w", err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "keyhole-demo-agent", Version: server.Version}
	if _, err := a.c.Initialize(ctx, init); err != nil {
		a.Close()
		return nil, fmt.Errorf("demo: MCP initialize: %w", err)
	}
	return a, nil
}

// Close disconnects the client and waits for the session to end.
func (a *demoAgent) Close() error {
	cerr := a.c.Close()
	a.in.Close()
	a.cancel()
	if err := <-a.done; err != nil {
		return fmt.Errorf("demo: stdio session: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("demo: close the MCP client: %w", cerr)
	}
	return nil
}

// demoPrinter writes the transcript. It keeps the first write error.
type demoPrinter struct {
	w     io.Writer
	color bool
	err   error
	calls int
}

func (p *demoPrinter) printf(format string, a ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, a...)
	}
}

// paint wraps s in an ANSI style when colours are on.
func (p *demoPrinter) paint(style, s string) string {
	if !p.color {
		return s
	}
	return "\x1b[" + style + "m" + s + "\x1b[0m"
}

const (
	ansiBold   = "1"
	ansiDim    = "2"
	ansiRed    = "31"
	ansiGreen  = "32"
	ansiYellow = "33"
)

func (p *demoPrinter) decision(d audit.Decision) string {
	switch d {
	case audit.Allow:
		return p.paint(ansiGreen, "ALLOW")
	case audit.Deny:
		return p.paint(ansiRed, "DENY ")
	default:
		return p.paint(ansiYellow, strings.ToUpper(string(d)))
	}
}

func (p *demoPrinter) intro(apiURL string) {
	p.printf("%s\n\n", p.paint(ansiBold, "keyhole demo: a scripted agent calls an issue tracker through keyhole"))
	p.printf("  upstream  %s, an issue tracker embedded in this process\n", apiURL)
	p.printf("  vault     %s: a fake GitHub-style token, encrypted; the agent never holds it\n", demoSecret)
	p.printf("  scope     %s: GET  /repos/acme/api/issues, /repos/acme/api/issues/*, /debug/echo\n", demoScope)
	p.printf("                    POST /repos/acme/api/issues/*/comments\n")
	p.printf("                    nothing else (deny by default)\n")
	p.printf("  agent     an MCP client speaking to `keyhole stdio --scope %s` over pipes\n", demoScope)
}

// step makes one call as the agent and prints what was asked, what keyhole
// decided (from the call's audit record) and what the agent got.
func (p *demoPrinter) step(ctx context.Context, n int, st demoStep, c *client.Client, log *audit.Log) error {
	req := mcp.CallToolRequest{}
	req.Params.Name = "github"
	req.Params.Arguments = st.args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return fmt.Errorf("demo: call %d (%s): %w", n, st.title, err)
	}
	p.calls++
	recs, err := log.Query(audit.Filter{Tool: "github"})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if len(recs) != p.calls {
		return fmt.Errorf("demo: the audit log holds %d records after %d calls", len(recs), p.calls)
	}
	rec := recs[len(recs)-1]
	args, _ := json.Marshal(st.args)

	p.printf("\n%s\n", p.paint(ansiBold, fmt.Sprintf("%d. %s", n, st.title)))
	p.printf("   agent asked  github %s\n", args)
	// A reason's clauses ("…; granted: …") go on lines of their own.
	reason := strings.ReplaceAll(why(rec), "; ", "\n                      ")
	p.printf("   keyhole      %s %s\n", p.decision(rec.Decision), reason)
	p.printf("   agent got    %s\n", got(res))
	return nil
}

// why explains an audit record's decision in one line.
func why(r audit.Record) string {
	switch r.Decision {
	case audit.Allow:
		s := "granted by " + r.Grant + "; the key was injected server-side"
		if r.Scrubbed {
			s += "; the key came back in the response: scrubbed"
		}
		return s
	default:
		return r.Code + ": " + r.Reason
	}
}

// gotMax is how much of a result the transcript shows.
const gotMax = 100

// got summarises what the agent received: a denial's text, or the
// upstream status and the start of the body.
func got(res *mcp.CallToolResult) string {
	if res.IsError {
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(mcp.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return "error: " + abbreviate(b.String(), gotMax)
	}
	var r struct {
		Status int             `json:"status"`
		Body   json.RawMessage `json:"body"`
	}
	raw, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(raw, &r); err != nil {
		return abbreviate(string(raw), gotMax)
	}
	body := string(r.Body)
	var s string
	if json.Unmarshal(r.Body, &s) == nil {
		body = s // a body that is not JSON arrives as a string
	}
	return fmt.Sprintf("%d %s", r.Status, abbreviate(body, gotMax))
}

// abbreviate puts s on one line and cuts it to max runes.
func abbreviate(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// upstream lists what the embedded API received.
func (p *demoPrinter) upstream(received []string) {
	p.printf("\n%s\n", p.paint(ansiBold, fmt.Sprintf("The API received %d of the agent's %d calls; the denied ones never left keyhole:", len(received), p.calls)))
	for _, r := range received {
		p.printf("  %s\n", r)
	}
}

// audit prints the session's audit records, as `keyhole audit tail` does,
// and the audit log's verification.
func (p *demoPrinter) audit(log *audit.Log) error {
	recs, err := log.Query(audit.Filter{})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	p.printf("\n%s\n", p.paint(ansiBold, "The audit log (keyhole audit tail):"))
	var b strings.Builder
	if err := audit.WriteTable(&b, recs, "  ", true, p.color); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	p.printf("%s", b.String())

	rep, err := log.Verify()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	p.printf("\n%s\n", p.paint(ansiBold, "keyhole audit verify:"))
	if !rep.OK {
		p.printf("  audit log %s: %d problem(s)\n", p.paint(ansiRed, "TAMPERED"), len(rep.Problems))
		return errors.New("demo: the audit log did not verify")
	}
	p.printf("  audit log %s: %d entries, head %d, chain intact\n", p.paint(ansiGreen, "ok"), rep.Entries, rep.Head)
	return nil
}

func (p *demoPrinter) forReal() {
	p.printf("\n%s\n", p.paint(ansiBold, "Do it for real:"))
	p.printf("  keyhole init\n")
	p.printf("  printf %%s \"$GITHUB_TOKEN\" | keyhole secret set github_token\n")
	p.printf("  claude mcp add keyhole -- keyhole stdio --scope triage\n")
}
