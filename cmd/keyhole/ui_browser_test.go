//go:build browser

// The console end to end in headless Chromium (make test-ui): the real
// binary serves it, a real MCP client is the agent, and the browser signs
// in, reads a post-mortem, approves a held call, filters the audit,
// follows it live and revokes the session.

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// browserConfig: labels need a person's approval, held for up to ten
// minutes, so the browser answers them, never the clock.
const browserConfig = `version: 1
tools:
  tracker:
    kind: http
    description: The issue tracker.
    base_url: %s
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  triage:
    description: Triage the tracker's issues; a label needs a person's approval.
    ttl: 1h
    approval: {wait: 10m, ttl: 10m}
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues, /issues/*]}
      - {tool: tracker, methods: [POST], paths: [/issues/*/labels], approve: true}
`

// chromiumFlags are the launch flags that work on this project's
// machines (no sandbox as root; no network of Chromium's own).
var chromiumFlags = []string{"headless", "no-sandbox", "disable-gpu", "disable-quic", "no-first-run",
	"disable-background-networking", "disable-component-update", "disable-sync"}

// findChromium returns the browser to drive: $KEYHOLE_CHROMIUM, or
// chromium on PATH.
func findChromium() (string, error) {
	if p := os.Getenv("KEYHOLE_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("Chromium is not installed: apt-get install -y chromium (or set KEYHOLE_CHROMIUM)")
}

// repoDir is a directory at the root of the repository (the test runs in
// cmd/keyhole).
func repoDir(name string) string { return filepath.Join("..", "..", name) }

// tab is the browser tab a test drives, and what it saw go wrong.
type tab struct {
	t   *testing.T
	ctx context.Context
	// log is the broker's log, shown when a step fails.
	log  *servertest.SyncBuffer
	mu   sync.Mutex
	errs []string // uncaught exceptions and error-level log entries (CSP violations among them)
}

func newTab(t *testing.T) *tab {
	t.Helper()
	chromium, err := findChromium()
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(chromium), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1180, 820)}
	for _, f := range chromiumFlags {
		opts = append(opts, chromedp.Flag(f, true))
	}
	// A hang guard for the whole run, not a timing assertion: every step
	// waits on a condition in the page.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	tb := &tab{t: t, ctx: bctx}
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	exceptions := chromedp.Events(bctx, runtime.ExceptionThrown)
	entries := chromedp.Events(bctx, cdplog.EntryAdded)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			tb.note("exception: " + ev.ExceptionDetails.Text)
		}
	}()
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			if ev.Entry.Level == cdplog.EntryLevelError {
				tb.note(fmt.Sprintf("%s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}()
	if _, err := chromedp.Call(bctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	return tb
}

func (tb *tab) note(s string) {
	tb.mu.Lock()
	tb.errs = append(tb.errs, s)
	tb.mu.Unlock()
}

// step runs one step of the story; on failure it saves a screenshot under
// bin/ui-shots/ and fails the test.
func (tb *tab) step(name string, fn func() error) {
	tb.t.Helper()
	if err := fn(); err != nil {
		dir := repoDir(filepath.Join("bin", "ui-shots"))
		shot := ""
		if buf, serr := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot()); serr == nil {
			os.MkdirAll(dir, 0o755)
			shot = filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".png")
			os.WriteFile(shot, buf, 0o644)
		}
		url, _ := chromedp.Run(tb.ctx, chromedp.Location())
		if tb.log != nil {
			tb.t.Logf("the broker's log:\n%s", tb.log.String())
		}
		tb.t.Fatalf("step %q at %s: %v (screenshot: %s)", name, url, err, shot)
	}
}

// do runs actions in the tab.
func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) error {
	return chromedp.Do(tb.ctx, actions...)
}

// follow clicks what sel matches and waits for the page it leads to.
func (tb *tab) follow(sel string) error {
	_, err := chromedp.Run(tb.ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel))))
	if err != nil {
		return fmt.Errorf("follow %s: %w", sel, err)
	}
	return nil
}

// until waits for a JavaScript condition in the page to hold.
func (tb *tab) until(expr string) error {
	_, err := chromedp.Run(tb.ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(0)))
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", expr, err)
	}
	return nil
}

// text is the text of the first element sel matches.
func (tb *tab) text(sel string) (string, error) {
	return chromedp.Run(tb.ctx, chromedp.Text(chromedp.CSS(sel)))
}

// docShot saves a screenshot for the README when KEYHOLE_UI_DOCS names a
// directory (make ui-screenshots).
func (tb *tab) docShot(name string) error {
	dir := os.Getenv("KEYHOLE_UI_DOCS")
	if dir == "" {
		return nil
	}
	buf, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), buf, 0o644)
}

func trackerUpstream(t *testing.T) *servertest.Upstream {
	return servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"labels":["bug"]}`)
			return
		}
		io.WriteString(w, `[{"number":7,"title":"Crash on start"}]`)
	})
}

func agentCall(c *client.Client, method, path string, body any) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = "tracker"
	args := map[string]any{"method": method, "path": path}
	if body != nil {
		args["body"] = body
	}
	req.Params.Arguments = args
	return c.CallTool(context.Background(), req)
}

func TestConsoleInChromium(t *testing.T) {
	tb := newTab(t)
	up := trackerUpstream(t)
	h := newHome(t)
	h.ok("", "init")
	h.ok(cliSecret, "secret", "set", "github_token", "--description", "the tracker's token")
	if err := os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), []byte(fmt.Sprintf(browserConfig, up.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startConsole(t, h)
	tb.log = &b.log

	var s struct{ ID, Token string }
	if err := json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "triage", "--label", "nightly-triage", "--json").stdout), &s); err != nil {
		t.Fatal(err)
	}
	agent, err := servertest.ConnectHTTP(b.mcpURL, s.Token, "nightly-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Close() })
	for _, c := range []struct{ method, path string }{{"GET", "/issues"}, {"GET", "/issues/7"}, {"DELETE", "/issues/7"}} {
		if _, err := agentCall(agent, c.method, c.path, nil); err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
	}
	link := strings.TrimSpace(h.ok("", "ui").stdout)
	base := b.console

	tb.step("login link to overview", func() error {
		if err := tb.do(chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("h1"))); err != nil {
			return err
		}
		if h1, err := tb.text("h1"); err != nil || h1 != "Overview" {
			return fmt.Errorf("the page after the login link is %q (%v), want the overview", h1, err)
		}
		main, err := tb.text("main")
		if err != nil {
			return err
		}
		for _, want := range []string{"Live sessions", s.ID, "Calls per minute", "The audit chain"} {
			if !strings.Contains(main, want) {
				return fmt.Errorf("the overview lacks %q", want)
			}
		}
		return tb.docShot("console-overview.png")
	})

	tb.step("a session's post-mortem", func() error {
		if err := tb.follow(`nav a[href="/ui/sessions"]`); err != nil {
			return err
		}
		if err := tb.follow(`main a[href="/ui/sessions/` + s.ID + `"]`); err != nil {
			return err
		}
		if err := tb.do(chromedp.WaitVisible(chromedp.ID("revoke"))); err != nil {
			return err
		}
		main, err := tb.text("main")
		if err != nil {
			return err
		}
		for _, want := range []string{"nightly-triage", "Post-mortem", "What credentials did the agent hold at the time of the incident?",
			"How many other agents share the same credentials?", "github_token", "Timeline", "GET /issues/7", "DELETE /issues/7", "the incident"} {
			if !strings.Contains(main, want) {
				return fmt.Errorf("the session's post-mortem lacks %q:\n%s", want, main)
			}
		}
		return nil
	})

	tb.step("blast radius", func() error {
		if err := tb.follow(`nav a[href="/ui/blast-radius"]`); err != nil {
			return err
		}
		// The graph is drawn on the server: a box per scope, tool, secret
		// and upstream, the secret flagged for its write reach.
		return tb.until(`document.querySelectorAll('figure.graph svg g.node').length === 4 && document.querySelector('g.node.secret.flagged title').textContent.includes('write reach')`)
	})

	type result struct {
		res *mcp.CallToolResult
		err error
	}
	held := make(chan result, 1)
	tb.step("approve a held call", func() error {
		if err := tb.do(chromedp.Navigate(base + "/ui/access")); err != nil {
			return err
		}
		// The live view is open before the agent asks, so the request
		// arrives without a reload.
		if err := tb.until(`document.getElementById('access-status').getAttribute('data-live') === 'open'`); err != nil {
			return err
		}
		go func() {
			res, err := agentCall(agent, "POST", "/issues/7/labels", map[string]any{"labels": []string{"bug"}})
			held <- result{res, err}
		}()
		card := `#requests article[data-request^="acr_"]`
		if err := tb.do(chromedp.WaitVisible(chromedp.CSS(card + ` button[value="once"]`))); err != nil {
			return err
		}
		summary, err := tb.text(card + ` [data-field="summary"]`)
		if err != nil || !strings.Contains(summary, "POST") || !strings.Contains(summary, "/issues/7/labels") {
			return fmt.Errorf("the live request shows %q (%v), want the exact call", summary, err)
		}
		select {
		case r := <-held:
			return fmt.Errorf("the agent's call returned before anyone answered: %v %+v", r.err, r.res)
		default:
		}
		if err := tb.docShot("console-access.png"); err != nil {
			return err
		}
		if err := tb.do(chromedp.SendKeys(chromedp.CSS(card+` form.approve input[name="note"]`), "bug label is right")); err != nil {
			return err
		}
		if err := tb.follow(card + ` button[value="once"]`); err != nil {
			return err
		}
		var r result
		select {
		case r = <-held:
		case <-time.After(90 * time.Second): // a hang guard, leaving time for the screenshot
			return errors.New("the agent's call did not return after the approval")
		}
		if r.err != nil || r.res.IsError || !strings.HasPrefix(servertest.ResultText(r.res), "HTTP 201") {
			return fmt.Errorf("the held call after the approval = %v %+v, want the upstream's 201", r.err, r.res)
		}
		return tb.until(`location.pathname === '/ui/access'`)
	})

	tb.step("audit filter", func() error {
		if err := tb.follow(`nav a[href="/ui/audit"]`); err != nil {
			return err
		}
		if err := tb.do(chromedp.SetValue(chromedp.ID("f-decision"), "deny"), chromedp.SendKeys(chromedp.ID("f-session"), s.ID)); err != nil {
			return err
		}
		if err := tb.follow("#apply"); err != nil {
			return err
		}
		if err := tb.until(`location.search.includes('decision=deny') && document.querySelectorAll('#audit-rows tr').length > 0`); err != nil {
			return err
		}
		var rows []string
		raw, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]byte](`[...document.querySelectorAll('#audit-rows tr')].map(tr => tr.innerText)`))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &rows); err != nil {
			return err
		}
		sawDelete := false
		for _, r := range rows {
			if !strings.Contains(r, "deny") {
				return fmt.Errorf("the deny filter shows %q", r)
			}
			sawDelete = sawDelete || strings.Contains(r, "DELETE /issues/7")
		}
		if !sawDelete {
			return fmt.Errorf("the deny filter does not show the denied DELETE: %q", rows)
		}
		return nil
	})

	tb.step("follow the audit live", func() error {
		if err := tb.do(chromedp.Navigate(base+"/ui/audit?session="+s.ID), chromedp.WaitVisible(chromedp.ID("live")), chromedp.Click(chromedp.ID("live"))); err != nil {
			return err
		}
		if err := tb.until(`document.getElementById('live').getAttribute('data-live') === 'open'`); err != nil {
			return err
		}
		if _, err := agentCall(agent, "GET", "/issues/42", nil); err != nil {
			return err
		}
		return tb.until(`[...document.querySelectorAll('#audit-rows tr')].some(tr => tr.innerText.includes('GET /issues/42') && tr.innerText.includes('allow'))`)
	})

	tb.step("revoke the session", func() error {
		if err := tb.do(chromedp.Navigate(base+"/ui/sessions/"+s.ID), chromedp.WaitVisible(chromedp.ID("revoke"))); err != nil {
			return err
		}
		if err := tb.follow("#revoke"); err != nil {
			return err
		}
		if err := tb.until(`document.getElementById('session-state') && document.getElementById('session-state').textContent === 'revoked' && !document.getElementById('revoke')`); err != nil {
			return err
		}
		res, err := agentCall(agent, "GET", "/issues/7", nil)
		if err == nil && !res.IsError {
			return fmt.Errorf("the revoked session's next call = %q, want it refused", servertest.ResultText(res))
		}
		return nil
	})

	tb.step("no script error or CSP violation", func() error {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		if len(tb.errs) > 0 {
			return fmt.Errorf("the browser reported:\n%s", strings.Join(tb.errs, "\n"))
		}
		return nil
	})

	approvals := h.ok("", "audit", "tail", "--tool", "keyhole.access.approve", "--json").stdout
	if !strings.Contains(approvals, "approved once by console:con_") || !strings.Contains(approvals, "bug label is right") {
		t.Fatalf("the approval's audit record does not name the console session and the note:\n%s", approvals)
	}
	recs := h.auditRecords(t)
	for _, r := range recs {
		if r.Session == s.ID && r.Decision == "allow" && r.Status == 201 {
			return
		}
	}
	t.Fatalf("the audit has no allowed 201 call of %s after the approval: %+v", s.ID, recs)
}
