package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"

	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// metric reads one value of the broker's /metrics over its unix socket.
func (h *home) metric(t *testing.T, name string) float64 {
	t.Helper()
	c := admin.SocketClient(filepath.Join(h.dir, "data", "keyhole"))
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://keyhole/metrics")
	if err != nil {
		t.Fatalf("metrics over the unix socket: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

func waitMetric(t *testing.T, h *home, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for got := h.metric(t, name); got != want; got = h.metric(t, name) {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialFrom dials addr from a local IP of the loopback network.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	return c
}

// TestOneClientWithoutATokenCannotWedgeTheBroker: a flood of slow
// connections without a token (more than the broker holds from one
// address) and of requests that promise a large body and never send it
// cannot keep an authenticated client from being served, nor local
// clients on the unix socket. The cap is set low so that the flood is
// larger than it; the test counts connections, not time.
func TestOneClientWithoutATokenCannotWedgeTheBroker(t *testing.T) {
	up, hits := countingUpstream(t)
	h := brokerHome(t, up.URL)
	_, url := startServe(t, h, "--max-connections", "8", "--max-connections-per-source", "4")
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/mcp")

	// 12 connections from one address that never finish their headers.
	for i := 0; i < 12; i++ {
		c := dialFrom(t, "127.0.0.1", addr)
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Length: 200000\r\n", addr)
	}
	waitMetric(t, h, "keyhole_http_connections_refused_total", 8)
	if got := h.metric(t, "keyhole_http_connections"); got != 4 {
		t.Fatalf("the broker holds %v connections of the flood, want 4 (its cap per address)", got)
	}

	// Requests without a token that promise 200000 bytes and send one are
	// answered 401 at once, and their connection closed unread.
	for i := 0; i < 20; i++ {
		c := dialFrom(t, "127.0.0.3", addr)
		fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{", addr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("request %d promising a body: no answer: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("request %d promising a body = %d, want 401", i, resp.StatusCode)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("request %d: the connection stayed open after the 401 (%v)", i, err)
		}
		c.Close()
	}

	// An authenticated client from another address is served.
	tok := strings.TrimSpace(h.ok("", "session", "new", "--scope", "triage").stdout)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	c, err := servertest.ConnectHTTP(url, tok, "served-agent", transport.WithHTTPBasicClient(hc))
	if err != nil {
		t.Fatalf("an authenticated client during the flood: %v", err)
	}
	defer c.Close()
	if res, err := call(c, "/issues/1"); err != nil || res.IsError || hits.Load() != 1 {
		t.Fatalf("call during the flood = %v %+v (upstream got %d)", err, res, hits.Load())
	}
	// Local clients and admin commands use the unix socket, which the
	// flood does not reach.
	if r := h.ok("", "session", "list"); !strings.Contains(r.stdout, "triage") {
		t.Fatalf("session list during the flood = %q", r.stdout)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestOneTokenCannotGrowTheBroker_ThroughTheBinary: 40 initialize
// handshakes with one token leave the broker holding 16 MCP sessions.
func TestOneTokenCannotGrowTheBroker_ThroughTheBinary(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	_, url := startServe(t, h)
	tok := strings.TrimSpace(h.ok("", "session", "new", "--scope", "triage").stdout)
	for i := 0; i < 40; i++ {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"flood","version":"0"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("initialize %d = %d", i, resp.StatusCode)
		}
	}
	if got := h.metric(t, "keyhole_mcp_sessions"); got != 16 {
		t.Fatalf("keyhole_mcp_sessions = %v after 40 initializes with one token, want 16", got)
	}
}
