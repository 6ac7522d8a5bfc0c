package tools

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// testToken is the secret the http tests inject; it must never reach the agent.
const testToken = "khtest-S3cr3tT0ken-0123456789abcdef"

// seen is one request an upstream received.
type seen struct {
	Method     string
	RequestURI string
	Header     http.Header
	Body       []byte
}

// upstream is an httptest server that records every request it receives.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone(), Body: body})
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) received() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

// compileTest compiles an http tool named "api" that may reach loopback.
func compileTest(t testing.TB, cfg Config) *httpTool {
	t.Helper()
	cfg.Kind = "http"
	cfg.AllowPrivateNetwork = true
	if cfg.Credential.Secret == "" {
		cfg.Credential.Secret = "api_token"
	}
	if cfg.Credential.Inject == "" {
		cfg.Credential.Inject = "bearer"
	}
	tool, errs := Compile("api", cfg, Env{})
	if len(errs) > 0 {
		t.Fatalf("Compile(%+v) errors: %v", cfg, errs)
	}
	return tool.(*httpTool)
}

// secretForms are encodings of s an independent check looks for.
func secretForms(s string) []string {
	b := []byte(s)
	return []string{
		s,
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		url.QueryEscape(s),
		url.PathEscape(s),
	}
}

// assertNoSecret fails if text holds any form of any of the secrets.
func assertNoSecret(t testing.TB, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, f := range secretForms(s) {
			if strings.Contains(text, f) {
				t.Fatalf("%s contains a form of the secret (%q):\n%s", what, f, text)
			}
		}
	}
}

// agentView is every byte of a result the agent may receive.
func agentView(t testing.TB, res *Result) string {
	t.Helper()
	js, err := json.Marshal(res.Structured)
	if err != nil {
		t.Fatalf("marshal Structured: %v", err)
	}
	return string(js) + "\n" + res.Text
}

// argsJSON marshals arguments for Prepare.
func argsJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal args: %v", err)
	}
	return b
}

// execEnv is the CallEnv a broker passes, with no redirect authorized.
func execEnv(tool Tool, secret []byte) CallEnv {
	return CallEnv{Scrubber: tool.Scrubber(secret)}
}
