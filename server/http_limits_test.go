package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

// get sends one raw GET to /mcp.
func (h *httpEnv) get(t *testing.T, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.srv.URL+"/mcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// initialize starts an MCP session with tok and returns its id.
func (h *httpEnv) initialize(t *testing.T, tok string) string {
	t.Helper()
	resp := h.post(t, "/mcp", map[string]string{"Authorization": "Bearer " + tok}, strings.NewReader(initBody))
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	id := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("initialize = %d, session id %q", resp.StatusCode, id)
	}
	return id
}

func (h *httpEnv) ping(t *testing.T, tok, id string) int {
	t.Helper()
	resp := h.post(t, "/mcp", map[string]string{"Authorization": "Bearer " + tok, "Mcp-Session-Id": id}, strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"ping"}`))
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestOneTokenCannotGrowTheBrokerWithoutBound: 40 initialize handshakes
// with one token leave the broker holding 16 MCP sessions, the ones used
// most recently; the others are closed (404) and forgotten. Another
// token's sessions are not touched.
func TestOneTokenCannotGrowTheBrokerWithoutBound(t *testing.T) {
	h := newHTTPEnv(t)
	tok, other := h.token("triage"), h.token("triage")
	otherID := h.initialize(t, other)
	base := h.broker.MCPSessions()
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, h.initialize(t, tok))
		if i == 5 {
			// Using the first session makes it the most recently used.
			if st := h.ping(t, tok, ids[0]); st != http.StatusOK {
				t.Fatalf("ping on a fresh session = %d", st)
			}
		}
	}
	if got := h.broker.MCPSessions() - base; got != DefaultSessionsPerToken {
		t.Fatalf("the broker holds %d MCP sessions of one token after 40 initializes, want %d", got, DefaultSessionsPerToken)
	}
	open := 0
	for _, id := range ids {
		if h.ping(t, tok, id) == http.StatusOK {
			open++
		}
	}
	if open != DefaultSessionsPerToken {
		t.Fatalf("%d of the token's 40 sessions answer, want %d", open, DefaultSessionsPerToken)
	}
	if st := h.ping(t, other, otherID); st != http.StatusOK {
		t.Fatalf("another token's session = %d after the flood, want 200", st)
	}
	// Closing sessions shrinks what the broker holds.
	for _, id := range ids {
		req, _ := http.NewRequest(http.MethodDelete, h.srv.URL+"/mcp", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Mcp-Session-Id", id)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	if got := h.broker.MCPSessions() - base; got != 0 {
		t.Fatalf("the broker holds %d MCP sessions of the token after it closed them all, want 0", got)
	}
}

func TestBoundIDsShrink(t *testing.T) {
	b := newBoundIDs(2)
	var evicted []string
	b.evict = func(id string) { evicted = append(evicted, id) }
	a := &tokenIDs{ids: b, tokenHash: "A"}
	ids := []string{a.Generate(), a.Generate(), a.Generate()}
	if len(evicted) != 1 || evicted[0] != ids[0] {
		t.Fatalf("evicted %v, want the oldest %s", evicted, ids[0])
	}
	if all, mine := b.count("A"); all != 2 || mine != 2 {
		t.Fatalf("count = %d, %d; want 2, 2", all, mine)
	}
	// mcp-go's idle sweeper resolves a manager without a request.
	sweeper := b.ResolveSessionIdManager(nil)
	sweeper.Terminate(ids[1])
	if _, err := a.Validate(ids[1]); err == nil {
		t.Fatal("a swept session still validates")
	}
	other := &tokenIDs{ids: b, tokenHash: "B"}
	if _, err := other.Terminate(ids[2]); err == nil {
		t.Fatal("token B ended token A's session")
	}
	a.Terminate(ids[2])
	if all, mine := b.count("A"); all != 0 || mine != 0 || len(b.byToken) != 0 {
		t.Fatalf("count = %d, %d, %d tokens; want every map empty", all, mine, len(b.byToken))
	}
}

// TestGETWithAnotherTokensSessionIDIsRefused: GET /mcp opens an event
// stream only on the token's own session, like POST.
func TestGETWithAnotherTokensSessionIDIsRefused(t *testing.T) {
	h := newHTTPEnv(t)
	tokA, tokB := h.token("triage"), h.token("triage")
	idA := h.initialize(t, tokA)
	for name, tc := range map[string]struct {
		header map[string]string
		status int
	}{
		"another token's id": {map[string]string{"Authorization": "Bearer " + tokB, "Mcp-Session-Id": idA}, http.StatusNotFound},
		"a made-up id":       {map[string]string{"Authorization": "Bearer " + tokA, "Mcp-Session-Id": "mcp-00000000000000000000000000000000"}, http.StatusNotFound},
		"no id":              {map[string]string{"Authorization": "Bearer " + tokA}, http.StatusNotFound},
		"no token":           {map[string]string{"Mcp-Session-Id": idA}, http.StatusUnauthorized},
		"its own id":         {map[string]string{"Authorization": "Bearer " + tokA, "Mcp-Session-Id": idA}, http.StatusOK},
	} {
		t.Run(name, func(t *testing.T) {
			resp := h.get(t, tc.header)
			if resp.StatusCode != tc.status {
				t.Fatalf("GET /mcp = %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == http.StatusOK && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("GET /mcp with its own id = %q, want an event stream", resp.Header.Get("Content-Type"))
			}
		})
	}
	req, _ := http.NewRequest(http.MethodDelete, h.srv.URL+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+tokB)
	req.Header.Set("Mcp-Session-Id", idA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || h.ping(t, tokA, idA) != http.StatusOK {
		t.Fatalf("DELETE with another token's id = %d, then its owner's ping = %d; want 404 and 200", resp.StatusCode, h.ping(t, tokA, idA))
	}
}

// TestAuthFailuresAreAuditedOncePerMinutePerSource: requests refused for
// their token are recorded as keyhole.auth.failed with the source and the
// reason, never the token; a flood makes one record when it starts and
// one with the count when its minute is over.
func TestAuthFailuresAreAuditedOncePerMinutePerSource(t *testing.T) {
	h := newHTTPEnv(t)
	forged, _ := sessions.NewToken()
	for i := 0; i < 5; i++ {
		h.post(t, "/mcp", nil, strings.NewReader(initBody))
	}
	for i := 0; i < 3; i++ {
		h.post(t, "/mcp", map[string]string{"Authorization": "Bearer " + forged}, strings.NewReader(initBody))
	}
	h.broker.FlushAuthFailures(false) // the minute is not over: nothing more
	failed := func() []audit.Record {
		var out []audit.Record
		for _, r := range h.allRecords() {
			if r.Tool == ToolAuthFailed {
				out = append(out, r)
			}
		}
		return out
	}
	recs := failed()
	if len(recs) != 2 {
		t.Fatalf("%d keyhole.auth.failed records during the first minute, want 2 (one per reason): %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.Source != "127.0.0.1" || r.Count != 1 || r.Decision != audit.Deny || (r.Code != "missing_token" && r.Code != "unknown_token") {
			t.Fatalf("record = %+v, want source 127.0.0.1, count 1, a reason code", r)
		}
	}
	h.clock.Advance(61 * time.Second)
	h.broker.FlushAuthFailures(false)
	recs = failed()
	counts := map[string]int{}
	for _, r := range recs {
		counts[r.Code] += max(r.Count, 1)
	}
	if len(recs) != 4 || counts["missing_token"] != 5 || counts["unknown_token"] != 3 {
		t.Fatalf("after the minute: %d records counting %v, want 4 records counting 5 missing and 3 unknown tokens", len(recs), counts)
	}
	raw := fmt.Sprintf("%+v", recs)
	if strings.Contains(raw, forged) || strings.Contains(raw, forged[len(forged)-12:]) {
		t.Fatalf("an auth failure record holds the token: %s", raw)
	}
	// The window is over and forgotten: the next failure is recorded at once.
	h.post(t, "/mcp", nil, strings.NewReader(initBody))
	if n := len(failed()); n != 5 {
		t.Fatalf("%d records after a failure in a new minute, want 5", n)
	}
	if n := len(h.broker.authFailures().open); n != 1 {
		t.Fatalf("%d open windows, want 1", n)
	}
}

// TestConnectionCapsPerSourceAndInTotal: connections over the cap from
// one address are closed unread, and another address is still served.
func TestConnectionCapsPerSourceAndInTotal(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitConns(tcp, 5, 3)
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	var held []net.Conn
	for i := 0; i < 7; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n") // headers never finished
		held = append(held, c)
	}
	waitFor(t, "7 connections accepted or refused", func() bool { return l.Open()+int(l.Refused()) == 7 })
	if l.Open() != 3 || l.Refused() != 4 {
		t.Fatalf("from one address: %d held, %d refused; want 3 and 4", l.Open(), l.Refused())
	}
	// The refused ones were closed without an answer (the held ones
	// are still waiting for their headers: a read on them times out).
	refusedSeen := 0
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(make([]byte, 1))
		var ne net.Error
		if n == 0 && err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			refusedSeen++
		}
	}
	if refusedSeen != 4 {
		t.Fatalf("%d connections were closed unanswered, want the 4 refused", refusedSeen)
	}
	// Another address gets in, up to the total cap.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	resp, err := other.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatalf("a client from another address was not served: %v", err)
	}
	resp.Body.Close()
	for _, c := range held {
		c.Close()
	}
	other.CloseIdleConnections()
	waitFor(t, "every slot given back", func() bool { return l.Open() == 0 })
}

// waitFor waits until cond holds; what it waits for is an event, not a
// duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEarly401ReadsNoBody: a request without a token that promises a
// large body gets 401 at once, and the connection is closed without the
// body being read.
func TestEarly401ReadsNoBody(t *testing.T) {
	h := newHTTPEnv(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Fatalf("answer = %d (close %v), want 401 and the connection closed", resp.StatusCode, resp.Close)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the 401 = %v, want EOF: the server must not wait for the body", err)
	}
}
