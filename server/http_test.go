package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

// httpEnv is a broker serving streamable HTTP for phantom tokens.
type httpEnv struct {
	*env
	sessions *LiveSessions
	srv      *httptest.Server
}

func newHTTPEnv(t testing.TB) *httpEnv {
	e := newEnv(t, baseConfig)
	store, err := sessions.Open(e.dataDir.File(SessionsFile), e.vault.DeriveKey(sessions.KeyLabel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &httpEnv{env: e, sessions: NewLiveSessions(store, LiveSessionsOptions{Configs: e.broker.Configs(), Now: e.clock.Now})}
	h.srv = httptest.NewServer(e.broker.HTTPHandler(h.sessions, HTTPOptions{Loopback: true}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *httpEnv) token(scope string) string {
	h.t.Helper()
	_, tok, err := h.sessions.Create(admin.SessionRequest{Scope: scope, Label: "test"})
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// client returns an initialized mcp-go streamable HTTP client for token.
func (h *httpEnv) client(tok string) (*client.Client, error) {
	c, err := client.NewStreamableHttpClient(h.srv.URL+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}))
	if err != nil {
		return nil, err
	}
	if err := c.Start(context.Background()); err != nil {
		return nil, err
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "http-test", Version: "1"}
	if _, err := c.Initialize(context.Background(), init); err != nil {
		c.Close()
		return nil, err
	}
	h.t.Cleanup(func() { c.Close() })
	return c, nil
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`

// post sends one raw JSON-RPC POST to /mcp.
func (h *httpEnv) post(t *testing.T, target string, header map[string]string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestBrokerFrontDoorRefusals(t *testing.T) {
	h := newHTTPEnv(t)
	tok := h.token("triage")
	forged, _ := sessions.NewToken()
	cases := []struct {
		name   string
		target string
		header map[string]string
		body   string
		status int
	}{
		{"no token", "/mcp", nil, initBody, http.StatusUnauthorized},
		{"basic auth", "/mcp", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, initBody, http.StatusUnauthorized},
		{"forged well-formed token", "/mcp", map[string]string{"Authorization": "Bearer " + forged}, initBody, http.StatusUnauthorized},
		{"malformed token", "/mcp", map[string]string{"Authorization": "Bearer khs_nope"}, initBody, http.StatusUnauthorized},
		{"token with a flipped checksum", "/mcp", map[string]string{"Authorization": "Bearer " + tok[:len(tok)-1] + flip(tok[len(tok)-1])}, initBody, http.StatusUnauthorized},
		{"token in query", "/mcp?access_token=" + tok, nil, initBody, http.StatusBadRequest},
		{"token in query under another name", "/mcp?t=" + tok, nil, initBody, http.StatusBadRequest},
		{"evil origin", "/mcp", map[string]string{"Authorization": "Bearer " + tok, "Origin": "https://evil.example"}, initBody, http.StatusForbidden},
		{"rebinding host", "/mcp", map[string]string{"Authorization": "Bearer " + tok, "Host": "localhost.evil.example"}, initBody, http.StatusForbidden},
		{"session id with bytes outside 0x21-0x7E", "/mcp", map[string]string{"Authorization": "Bearer " + tok, "Mcp-Session-Id": "mcp-é x"}, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, http.StatusNotFound},
		{"5 MiB post", "/mcp", map[string]string{"Authorization": "Bearer " + tok}, `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"` + strings.Repeat("A", 5<<20) + `"}}`, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.post(t, tc.target, tc.header, strings.NewReader(tc.body))
			if resp.StatusCode != tc.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.status)
			}
			if tc.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer WWW-Authenticate header: %q", resp.Header.Get("WWW-Authenticate"))
			}
			body, _ := io.ReadAll(resp.Body)
			if bytes.Contains(body, []byte(tok)) {
				t.Fatalf("response echoes the token: %s", body)
			}
		})
	}
	if n := len(h.up.Requests()); n != 0 {
		t.Fatalf("upstream received %d requests", n)
	}
	if recs := h.records(); len(recs) != 0 {
		t.Fatalf("refused requests made %d audit records; they never reached a session", len(recs))
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestBrokerSessionIDIsBoundToItsToken(t *testing.T) {
	h := newHTTPEnv(t)
	tokA, tokB := h.token("triage"), h.token("triage")
	respA := h.post(t, "/mcp", map[string]string{"Authorization": "Bearer " + tokA}, strings.NewReader(initBody))
	idA := respA.Header.Get("Mcp-Session-Id")
	if respA.StatusCode != http.StatusOK || idA == "" {
		t.Fatalf("initialize with token A = %d, session id %q", respA.StatusCode, idA)
	}
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"github","arguments":{"method":"GET","path":"/repos/acme/api/issues"}}}`
	resp := h.post(t, "/mcp", map[string]string{"Authorization": "Bearer " + tokB, "Mcp-Session-Id": idA}, strings.NewReader(call))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("token B with token A's session id = %d, want 404", resp.StatusCode)
	}
	if n := len(h.up.Requests()); n != 0 {
		t.Fatalf("upstream received %d requests", n)
	}
	resp = h.post(t, "/mcp", map[string]string{"Authorization": "Bearer " + tokA, "Mcp-Session-Id": idA}, strings.NewReader(call))
	if resp.StatusCode != http.StatusOK || len(h.up.Requests()) != 1 {
		t.Fatalf("token A with its own session id = %d, upstream got %d; want 200 and 1", resp.StatusCode, len(h.up.Requests()))
	}
}

func TestInvariant5_RevokedAndExpiredTokensGetNothing(t *testing.T) {
	h := newHTTPEnv(t)
	tok := h.token("triage")
	c, err := h.client(tok)
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	if res := servertest.CallTool(t, c, "github", args); res.IsError {
		t.Fatalf("call before revocation failed: %s", servertest.ResultText(res))
	}
	info, _ := h.sessions.List(false)
	if _, err := h.sessions.Revoke(info[0].ID, "", false, "test"); err != nil {
		t.Fatal(err)
	}
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = "github", args
	if res, err := c.CallTool(context.Background(), req); err == nil && !res.IsError {
		t.Fatalf("call on an open connection after revocation succeeded: %s", servertest.ResultText(res))
	}
	if n := len(h.up.Requests()); n != 1 {
		t.Fatalf("upstream received %d requests, want only the one before revocation", n)
	}

	tok2 := h.token("triage")
	c2, err := h.client(tok2)
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(2 * time.Hour)
	if res, err := c2.CallTool(context.Background(), req); err == nil && !res.IsError {
		t.Fatalf("call after the ttl succeeded: %s", servertest.ResultText(res))
	}
	if _, err := h.client(tok2); err == nil {
		t.Fatal("a new connection with an expired token was accepted")
	}
	if n := len(h.up.Requests()); n != 1 {
		t.Fatalf("upstream received %d requests after expiry", n)
	}
}

func TestBrokerMaxCallsHoldAcrossReconnects(t *testing.T) {
	h := newHTTPEnv(t)
	tok := h.token("tiny") // max_calls: 3
	args := map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	allowed := 0
	for conn := 0; conn < 3; conn++ {
		c, err := h.client(tok)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if res := servertest.CallTool(t, c, "github", args); !res.IsError {
				allowed++
			}
		}
		c.Close()
	}
	if allowed != 3 || len(h.up.Requests()) != 3 {
		t.Fatalf("allowed %d calls (upstream got %d) over 3 connections, want exactly max_calls = 3", allowed, len(h.up.Requests()))
	}
}

func TestBroker100ConcurrentSessions(t *testing.T) {
	h := newHTTPEnv(t)
	const n = 100
	toks := make([]string, n)
	for i := range toks {
		toks[i] = h.token("triage")
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := h.client(toks[i])
			if err != nil {
				errs <- err
				return
			}
			req := mcp.CallToolRequest{}
			req.Params.Name = "github"
			req.Params.Arguments = map[string]any{"method": "GET", "path": fmt.Sprintf("/repos/acme/api/issues/%d", i)}
			res, err := c.CallTool(context.Background(), req)
			if err != nil || res.IsError {
				errs <- fmt.Errorf("session %d: %v %v", i, err, res)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(h.up.Requests()); got != n {
		t.Fatalf("upstream received %d requests, want %d", got, n)
	}
	recs := h.records()
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Session] = true
	}
	if len(recs) != n || len(seen) != n {
		t.Fatalf("%d records over %d sessions, want %d each", len(recs), len(seen), n)
	}
	if rep, err := h.audit.Verify(); err != nil || !rep.OK {
		t.Fatalf("verify after concurrent sessions: %+v %v", rep, err)
	}
}

func TestMetricsCountCallsAndSessions(t *testing.T) {
	e := newEnv(t, baseConfig)
	metrics := NewMetrics()
	e.broker.metrics = metrics
	store, err := sessions.Open(e.dataDir.File(SessionsFile), e.vault.DeriveKey(sessions.KeyLabel))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := NewLiveSessions(store, LiveSessionsOptions{Configs: e.broker.Configs(), Now: e.clock.Now})
	metrics.CountSessions(m.ActiveCount)
	ops := &adminOps{vault: e.vault, sessions: func() (*LiveSessions, error) { return m, nil }}
	srv := httptest.NewServer(e.broker.SocketHandler(m, ops, metrics))
	t.Cleanup(srv.Close)
	h := &httpEnv{env: e, sessions: m, srv: srv}
	c, err := h.client(h.token("triage"))
	if err != nil {
		t.Fatal(err)
	}
	servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	servertest.CallTool(t, c, "github", map[string]any{"method": "DELETE", "path": "/repos/acme/api/issues/1"})
	unknown := mcp.CallToolRequest{}
	unknown.Params.Name = "nonsense"
	if _, err := c.CallTool(context.Background(), unknown); err == nil {
		t.Fatal("a call to a tool that does not exist succeeded")
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`keyhole_calls_total{decision="allow",tool="github"} 1`,
		`keyhole_calls_total{decision="deny",tool="github"} 1`,
		`keyhole_calls_total{decision="deny",tool="(unknown)"} 1`,
		`keyhole_call_duration_seconds_count{decision="allow"} 1`,
		`keyhole_active_sessions 1`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
