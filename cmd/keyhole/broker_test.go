package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// countingUpstream counts the requests it receives.
func countingUpstream(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"number":1,"title":"ok"}]`)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// brokerHome is a home with a config whose tool calls up.
func brokerHome(t *testing.T, upstream string) *home {
	h := newHome(t)
	h.ok("", "init")
	h.ok(cliSecret, "secret", "set", "github_token")
	cfg := fmt.Sprintf(`version: 1
tools:
  tracker:
    kind: http
    base_url: %s
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  triage:
    ttl: 1h
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues, /issues/*]}
`, upstream)
	if err := os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// startStdio launches `keyhole stdio` in h as an MCP client would and
// initializes it. It may run on any goroutine: it reports, never fails t.
func (h *home) startStdio(extra ...string) (*client.Client, error) {
	return servertest.StartCommand(binary, h.dir, h.env, append([]string{"stdio", "--scope", "triage"}, extra...), "editor")
}

// stdioClient is startStdio on the test's goroutine.
func (h *home) stdioClient(t *testing.T, extra ...string) *client.Client {
	t.Helper()
	c, err := h.startStdio(extra...)
	if err != nil {
		t.Fatalf("keyhole stdio: %v", err)
	}
	return c
}

// startStdioClients starts n `keyhole stdio` clients at once and fails t
// (on its own goroutine) unless every one is served.
func (h *home) startStdioClients(t *testing.T, n int) []*client.Client {
	t.Helper()
	clients := make([]*client.Client, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			clients[i], errs[i] = h.startStdio()
		}(i)
	}
	wg.Wait()
	for i, c := range clients {
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
		if errs[i] != nil {
			t.Errorf("client %d of %d started at once: %v", i, n, errs[i])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return clients
}

func call(c *client.Client, path string) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = "tracker"
	req.Params.Arguments = map[string]any{"method": "GET", "path": path}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.CallTool(ctx, req)
}

// brokerPID reads the pid of the process that owns the data dir.
func (h *home) brokerPID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, "data", "keyhole", server.PIDFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("lock file holds %q", b)
	}
	return pid
}

type auditLine struct {
	Seq      uint64 `json:"seq"`
	Tool     string `json:"tool"`
	Client   string `json:"client"`
	Operator string `json:"operator"`
	Source   string `json:"source"`
	Count    int    `json:"count"`
	Code     string `json:"code"`
	Reason   string `json:"reason"`
	Scope    string `json:"scope"`
	Cred     string `json:"credential"`
	Session  string `json:"session"`
	Decision string `json:"decision"`
	Status   int    `json:"status"`
	Path     string `json:"path"`
}

// auditRecords returns the audit records of calls, leaving out those of
// the operator's changes (keyhole.secret.set, keyhole.session.new, …).
func (h *home) auditRecords(t *testing.T) []auditLine {
	t.Helper()
	var calls []auditLine
	for _, a := range h.auditRecordsFull(t) {
		if !strings.HasPrefix(a.Tool, "keyhole.") {
			calls = append(calls, a)
		}
	}
	return calls
}

// auditRecordsFull returns every audit record.
func (h *home) auditRecordsFull(t *testing.T) []auditLine {
	t.Helper()
	r := h.ok("", "audit", "tail", "-n", "100000", "--json")
	var out []auditLine
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if line == "" {
			continue
		}
		var a auditLine
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, a)
	}
	return out
}

func TestThreeEditorsShareOneBroker(t *testing.T) {
	up, hits := countingUpstream(t)
	h := brokerHome(t, up.URL)
	h.killBrokerAtCleanup(t)

	clients := h.startStdioClients(t, 3)
	pid := h.brokerPID(t)
	for i, c := range clients {
		for j := 0; j < 2; j++ {
			res, err := call(c, fmt.Sprintf("/issues/%d", i*10+j))
			if err != nil || res.IsError {
				t.Fatalf("editor %d call %d: %v %+v", i, j, err, res)
			}
		}
	}
	if got := hits.Load(); got != 6 {
		t.Fatalf("upstream received %d requests, want 6", got)
	}
	if h.brokerPID(t) != pid {
		t.Fatal("a second broker took over the data dir")
	}
	recs := h.auditRecords(t)
	sessions := map[string]int{}
	for _, r := range recs {
		sessions[r.Session]++
	}
	if len(recs) != 6 || len(sessions) != 3 {
		t.Fatalf("audit has %d records over %d sessions, want 6 over 3 (one per editor)", len(recs), len(sessions))
	}
	if r := h.ok("", "audit", "verify"); !strings.Contains(r.stdout, "chain intact") {
		t.Fatalf("audit verify: %s", r.stdout)
	}

	// Killing the broker makes the editors fail clearly...
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	res, err := call(clients[0], "/issues/99")
	if err == nil && !res.IsError {
		t.Fatal("a call succeeded after the broker was killed")
	}
	if err != nil && !strings.Contains(err.Error(), "broker") && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("call after broker death failed unclearly: %v", err)
	}
	// ...and the next editor starts a new broker.
	c := h.stdioClient(t)
	if res, err := call(c, "/issues/100"); err != nil || res.IsError {
		t.Fatalf("call through a new broker: %v %+v", err, res)
	}
	if h.brokerPID(t) == pid {
		t.Fatal("no new broker was started")
	}
	for _, c := range append(clients, c) {
		c.Close()
	}
	if r := h.ok("", "audit", "verify"); !strings.Contains(r.stdout, "chain intact") {
		t.Fatalf("audit verify after the broker was replaced: %s", r.stdout)
	}
}

// TestBrokerStartRace_TwentyClientsOnAFreshDataDirAreAllServed: editors
// started together on a fresh data dir race to start the broker; losing
// that race is not a failure, and every one of them is served by the one
// broker that won.
func TestBrokerStartRace_TwentyClientsOnAFreshDataDirAreAllServed(t *testing.T) {
	up, hits := countingUpstream(t)
	h := brokerHome(t, up.URL)
	h.killBrokerAtCleanup(t)
	const n = 20
	clients := h.startStdioClients(t, n)
	for i, c := range clients {
		if res, err := call(c, fmt.Sprintf("/issues/%d", i)); err != nil || res.IsError {
			t.Fatalf("client %d: call = %v %+v", i, err, res)
		}
	}
	if got := hits.Load(); got != n {
		t.Fatalf("upstream received %d requests, want %d", got, n)
	}
	sessions := map[string]bool{}
	for _, r := range h.auditRecords(t) {
		sessions[r.Session] = true
	}
	if len(sessions) != n {
		t.Fatalf("audit names %d sessions, want %d (one per client)", len(sessions), n)
	}
}

// killBrokerAtCleanup kills the background broker, if one runs, when the
// test ends: it outlives the stdio clients that started it.
func (h *home) killBrokerAtCleanup(t *testing.T) {
	t.Cleanup(func() {
		if pid := h.brokerPIDOrZero(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// httpSession starts a session of scope triage with `session new` and
// connects an MCP client named name to url with its token; the client is
// closed when the test ends.
func (h *home) httpSession(t *testing.T, url, name string) (id string, c *client.Client) {
	t.Helper()
	var s struct{ ID, Token string }
	if err := json.Unmarshal([]byte(h.ok("", "session", "new", "--scope", "triage", "--json").stdout), &s); err != nil {
		t.Fatal(err)
	}
	c, err := servertest.ConnectHTTP(url, s.Token, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s.ID, c
}

func (h *home) brokerPIDOrZero() int {
	b, err := os.ReadFile(filepath.Join(h.dir, "data", "keyhole", server.PIDFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d did not exit", pid)
}

func TestServeGracefulShutdownLosesNoRecord(t *testing.T) {
	up, hits := countingUpstream(t)
	h := brokerHome(t, up.URL)
	serve, url := startServe(t, h)

	tok := strings.TrimSpace(h.ok("", "session", "new", "--scope", "triage").stdout)
	var ok atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := servertest.ConnectHTTP(url, tok, "agent")
			if err != nil {
				return
			}
			defer c.Close()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				if res, err := call(c, fmt.Sprintf("/issues/%d", i*1000+j)); err == nil && !res.IsError {
					ok.Add(1)
				} else {
					return
				}
			}
		}(i)
	}
	time.Sleep(300 * time.Millisecond)
	serve.Process.Signal(syscall.SIGTERM)
	serve.Wait()
	close(stop)
	wg.Wait()

	recs := h.auditRecords(t)
	allowed := 0
	for _, r := range recs {
		if r.Decision == "allow" && r.Status == 200 {
			allowed++
		}
		if r.Decision == "interrupted" {
			t.Errorf("record %d is interrupted after a graceful shutdown", r.Seq)
		}
	}
	if ok.Load() == 0 {
		t.Fatal("no call succeeded before shutdown")
	}
	if int64(allowed) < ok.Load() || int64(allowed) != hits.Load() {
		t.Fatalf("clients got %d results, upstream saw %d requests, audit has %d complete records", ok.Load(), hits.Load(), allowed)
	}
	if r := h.ok("", "audit", "verify"); !strings.Contains(r.stdout, "chain intact") {
		t.Fatalf("audit verify: %s", r.stdout)
	}
}

// waitForURL reads the broker's log until it names its MCP URL.
func waitForURL(t *testing.T, stderr io.Reader) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var acc strings.Builder
		for {
			n, err := stderr.Read(buf)
			acc.Write(buf[:n])
			if i := strings.Index(acc.String(), "url=http"); i >= 0 {
				rest := acc.String()[i+4:]
				if j := strings.IndexAny(rest, " \n"); j > 0 {
					found <- rest[:j]
					io.Copy(io.Discard, stderr)
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case u := <-found:
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("broker did not report its URL")
		return ""
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "keyhole test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestServeOverTLSAndRefusesClearTextOnAPublicAddress(t *testing.T) {
	up, hits := countingUpstream(t)
	h := brokerHome(t, up.URL)
	if r := h.run("", "serve", "--http", "0.0.0.0:0"); r.code != 1 || !strings.Contains(r.stderr, "--tls-cert") {
		t.Fatalf("serve on 0.0.0.0 without TLS = exit %d %q, want a refusal naming --tls-cert", r.code, r.stderr)
	}
	certFile, keyFile, pool := selfSigned(t, h.dir)
	_, url := startServe(t, h, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("broker URL %q is not https", url)
	}
	tok := strings.TrimSpace(h.ok("", "session", "new", "--scope", "triage").stdout)
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c, err := servertest.ConnectHTTP(url, tok, "tls-agent", transport.WithHTTPBasicClient(httpc))
	if err != nil {
		t.Fatalf("initialize over TLS: %v", err)
	}
	defer c.Close()
	if res, err := call(c, "/issues/1"); err != nil || res.IsError {
		t.Fatalf("call over TLS: %v %+v", err, res)
	}
	if hits.Load() != 1 {
		t.Fatalf("upstream received %d requests, want 1", hits.Load())
	}
	// A client that does not trust the certificate gets nowhere.
	resp, err := http.Get(strings.Replace(url, "/mcp", "/healthz", 1))
	if err == nil {
		resp.Body.Close()
		t.Fatal("a client without the CA reached the TLS listener")
	}
}

// TestCLIAgainstALiveBroker drives the review and admin commands while a
// broker owns the data dir: they go through its socket, or read the audit
// log beside it.
func TestCLIAgainstALiveBroker(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	_, url := startServe(t, h)

	id, c := h.httpSession(t, url, "admin-test")
	call(c, "/issues/1")
	call(c, "/admin")

	var rec struct {
		Seq      uint64 `json:"seq"`
		Decision string `json:"decision"`
		Path     string `json:"path"`
	}
	first := h.auditRecords(t)[0].Seq
	if err := json.Unmarshal([]byte(h.ok("", "audit", "show", strconv.FormatUint(first, 10)).stdout), &rec); err != nil || rec.Decision != "allow" || rec.Path != "/issues/1" {
		t.Fatalf("audit show %d = %+v (%v)", first, rec, err)
	}
	if r := h.run("", "audit", "show", "999"); r.code != 1 {
		t.Fatalf("audit show of a missing record = exit %d", r.code)
	}
	if lines := strings.Split(strings.TrimSpace(h.ok("", "audit", "export", "--format", "jsonl", "--tool", "tracker").stdout), "\n"); len(lines) != 2 {
		t.Fatalf("export jsonl = %d lines, want 2", len(lines))
	}
	csv := h.ok("", "audit", "export", "--format", "csv", "--tool", "tracker").stdout
	if rows := strings.Split(strings.TrimSpace(csv), "\n"); len(rows) != 3 || !strings.Contains(rows[0], "decision") {
		t.Fatalf("export csv = %q, want a header and 2 rows", csv)
	}
	if r := h.ok("", "audit", "tail", "--decision", "deny"); !strings.Contains(r.stdout, "/admin") || strings.Contains(r.stdout, "/issues/1") {
		t.Fatalf("audit tail --decision deny = %q", r.stdout)
	}
	var info struct {
		Calls int    `json:"calls"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(h.ok("", "session", "show", id, "--json").stdout), &info); err != nil || info.Calls != 2 || info.State != "active" {
		t.Fatalf("session show = %+v (%v), want 2 calls, active", info, err)
	}
	if r := h.ok("", "reload"); !strings.Contains(r.stdout, "reloaded") {
		t.Fatalf("reload = %q", r.stdout)
	}

	// Secrets through the broker, from the environment and from a file.
	h.env = append(h.env, "NEW_TOKEN=from-env-value-123456")
	h.ok("", "secret", "set", "env_token", "--from-env", "NEW_TOKEN")
	file := filepath.Join(h.dir, "tok.txt")
	os.WriteFile(file, []byte("from-file-value-123456\n"), 0o600)
	h.ok("", "secret", "set", "file_token", "--from-file", file)
	list := h.ok("", "secret", "list").stdout
	if !strings.Contains(list, "env_token") || !strings.Contains(list, "file_token") || strings.Contains(list, "from-") {
		t.Fatalf("secret list = %q", list)
	}
	if r := h.run("", "secret", "rekey"); r.code != 1 || !strings.Contains(r.stderr, "stop the broker") {
		t.Fatalf("rekey beside a broker = exit %d %q", r.code, r.stderr)
	}
	if r := h.ok("", "completion", "bash"); !strings.Contains(r.stdout, "bash completion") {
		t.Fatal("completion bash printed no script")
	}
}

// TestCancellationCrossesTheRelay: an editor that gives up on a call sends
// notifications/cancelled; through the stdio relay and the broker it ends
// the upstream request, and the call is recorded as failed, not allowed.
func TestCancellationCrossesTheRelay(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(15 * time.Second):
			io.WriteString(w, "too late")
		}
	}))
	t.Cleanup(slow.Close)
	h := brokerHome(t, slow.URL)
	h.killBrokerAtCleanup(t)
	c := h.stdioClient(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = "tracker"
	req.Params.Arguments = map[string]any{"method": "GET", "path": "/issues/1"}
	if _, err := c.CallTool(ctx, req); err == nil {
		t.Fatal("the call returned before it was cancelled")
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not cancelled")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := h.auditRecords(t)
		if len(recs) == 1 && recs[0].Decision == "error" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit = %+v, want one error record for the cancelled call", recs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStdioReportsABrokerThatCannotStart: a broker that fails for a
// reason of its own (here, a config with a problem) is reported by the
// stdio client that started it, with the broker's own last words.
func TestStdioReportsABrokerThatCannotStart(t *testing.T) {
	h := brokerHome(t, "http://127.0.0.1:1")
	cfg := filepath.Join(h.dir, "keyhole.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, append(b, "  unknown_key: 1\n"...), 0o600)
	r := h.run("", "stdio", "--scope", "triage")
	if r.code != 1 || !strings.Contains(r.stderr, "the broker exited") || !strings.Contains(r.stderr, "unknown_key") {
		t.Fatalf("stdio with a broken config = exit %d, stderr %q; want exit 1 naming the broker's exit and the bad key", r.code, r.stderr)
	}
}
