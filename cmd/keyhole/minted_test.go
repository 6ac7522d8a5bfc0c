package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

const (
	e2eClientID     = "keyhole-e2e-client"
	e2eClientSecret = "cs_E2eClientS3cretValue_0123456789ab"
)

// assertNoneAnywhere fails if any form of any of vals is in outputs or in
// any file under the home dir (the vault holds them sealed only).
func (h *home) assertNoneAnywhere(vals []string, outputs ...string) {
	h.t.Helper()
	for _, v := range vals {
		for _, o := range outputs {
			servertest.AssertNoSecret(h.t, "output", o, v)
		}
	}
	filepath.WalkDir(h.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, v := range vals {
			for _, f := range servertest.SecretForms(v) {
				if bytes.Contains(b, []byte(f)) {
					h.t.Fatalf("file %s holds a derived credential in plaintext", p)
				}
			}
		}
		return nil
	})
}

// loginWithoutBrowser runs `keyhole secret login NAME` and plays the
// browser: it reads the authorization URL the command prints, follows it
// (the test authorization server approves and redirects to the command's
// loopback listener) and returns what the command printed.
func (h *home) loginWithoutBrowser(name string) (string, int) {
	h.t.Helper()
	cmd := exec.Command(binary, "secret", "login", name, "--timeout", "2m")
	cmd.Dir, cmd.Env = h.dir, h.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	var printed strings.Builder
	br := bufio.NewReader(out)
	for {
		line, err := br.ReadString('\n')
		printed.WriteString(line)
		if u := strings.TrimSpace(line); strings.HasPrefix(u, "http://") && strings.Contains(u, "/authorize?") {
			resp, gerr := http.Get(u) // follows the redirect to the command
			if gerr != nil {
				h.t.Errorf("following the authorization URL: %v", gerr)
			} else {
				resp.Body.Close()
			}
		}
		if err != nil {
			break
		}
	}
	rest, _ := io.ReadAll(br)
	printed.Write(rest)
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return printed.String() + stderr.String(), code
}

func TestOAuth2LoginRefreshAndNeedsLoginThroughTheBinary(t *testing.T) {
	as := servertest.NewOAuthServer(t, e2eClientID, e2eClientSecret)
	up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := as.Bearer(r); !ok {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"things":[1,2],"echo":%q}`, r.Header.Get("Authorization"))
	})
	h := newHome(t)
	h.ok("", "init")
	h.killBrokerAtCleanup(t)
	h.ok(`{"client_id":"`+e2eClientID+`","client_secret":"`+e2eClientSecret+`"}`, "secret", "set", "api_oauth")
	cfg := fmt.Sprintf(`version: 1
tools:
  api:
    kind: http
    base_url: %s
    allow_private_network: true
    credential:
      secret: api_oauth
      inject: oauth2
      oauth2: {flow: authorization_code, auth_url: %s, token_url: %s, scopes: [things.read]}
scopes:
  triage:
    ttl: 1h
    grants:
      - {tool: api, methods: [GET], paths: [/things]}
`, up.URL, as.AuthURL(), as.TokenURL())
	if err := os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var outs []string
	r := h.ok("", "secret", "list")
	if !strings.Contains(r.stdout, "needs login") {
		t.Fatalf("secret list before login = %q, want api_oauth to need a login", r.stdout)
	}

	// Access tokens live a second, so every call below that comes after a
	// pause refreshes.
	as.SetExpiresIn(1)
	printed, code := h.loginWithoutBrowser("api_oauth")
	outs = append(outs, printed)
	if code != 0 || !strings.Contains(printed, "logged in: secret api_oauth holds a refresh token (version 2)") {
		t.Fatalf("secret login = exit %d:\n%s", code, printed)
	}
	if reqs := as.Requests(); len(reqs) != 1 || reqs[0].Grant != "authorization_code" || reqs[0].Status != http.StatusOK {
		t.Fatalf("token endpoint after login: %+v, want one PKCE-verified code exchange", reqs)
	}
	r = h.ok("", "secret", "list")
	if strings.Contains(r.stdout, "needs login") {
		t.Fatalf("secret list after login = %q", r.stdout)
	}

	c := h.stdioClient(t)
	defer c.Close()
	res := servertest.CallTool(t, c, "api", map[string]any{"method": "GET", "path": "/things"})
	text := servertest.ResultText(res)
	if res.IsError || !strings.Contains(text, `"things"`) {
		t.Fatalf("call after login = %s", text)
	}
	outs = append(outs, text)
	if got := up.Requests(); len(got) != 1 || !strings.HasPrefix(got[0].Header.Get("Authorization"), "Bearer at_") {
		t.Fatalf("the upstream did not get an access token")
	}
	// The broker refreshed (its process never saw the login's token) and
	// stored the rotated refresh token.
	if reqs := as.Requests(); len(reqs) != 2 || reqs[1].Grant != "refresh_token" {
		t.Fatalf("token endpoint: %+v, want a refresh by the broker", reqs)
	}
	var meta struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
		Status  string `json:"status"`
	}
	json.Unmarshal([]byte(h.ok("", "secret", "list", "--json").stdout), &meta)
	if meta.Version != 3 || meta.Status != "" {
		t.Fatalf("secret after the broker's refresh: %+v, want version 3 (the rotated refresh token)", meta)
	}

	// The user revokes keyhole's access; the next refresh is refused.
	time.Sleep(1100 * time.Millisecond) // the access token is stale
	as.RevokeRefreshTokens()
	res = servertest.CallTool(t, c, "api", map[string]any{"method": "GET", "path": "/things"})
	text = servertest.ResultText(res)
	if !res.IsError || !strings.Contains(text, "keyhole secret login api_oauth") {
		t.Fatalf("call after revocation = %s, want an operator-facing needs-login error", text)
	}
	outs = append(outs, text)
	r = h.ok("", "secret", "list")
	if !strings.Contains(r.stdout, "needs login: the authorization server refused the refresh token") {
		t.Fatalf("secret list after revocation = %q", r.stdout)
	}
	outs = append(outs, r.stdout)

	// The audit records the kind and the token's id, never a value.
	r = h.ok("", "audit", "tail", "-n", "100", "--json", "--tool", "api")
	outs = append(outs, r.stdout)
	var rec struct {
		CredentialKind string `json:"credential_kind"`
		TokenID        string `json:"token_id"`
		TokenExpires   string `json:"token_expires"`
		Version        int    `json:"credential_version"`
	}
	json.Unmarshal([]byte(strings.Split(strings.TrimSpace(r.stdout), "\n")[0]), &rec)
	if rec.CredentialKind != "oauth2" || !strings.HasPrefix(rec.TokenID, "sha256:") || rec.TokenExpires == "" || rec.Version != 2 {
		t.Fatalf("first audit record: %+v, want oauth2 with a token id and expiry, credential version 2", rec)
	}
	h.assertNoneAnywhere(append(as.Issued(), e2eClientSecret), outs...)
}

// githubAppHome is a home whose config has one github_app tool, github,
// against api (the App's key in the vault as gh_app_key), and a scope
// triage that may GET /repos/acme/api/issues.
func githubAppHome(t *testing.T, api *servertest.GitHubAPI) *home {
	t.Helper()
	h := newHome(t)
	h.ok("", "init")
	pemFile := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(pemFile, []byte(api.PrivateKeyPEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ok("", "secret", "set", "gh_app_key", "--from-file", pemFile)
	h.writeConfig(`version: 1
tools:
  github:
    kind: http
    base_url: %[1]s
    allow_private_network: true
    credential:
      secret: gh_app_key
      inject: github_app
      github_app: {app_id: 123, installation_id: 456, api_url: %[1]s}
scopes:
  triage:
    ttl: 1h
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues]}
`, api.URL)
	return h
}

func TestGitHubAppTokenPerSessionThroughTheBinary(t *testing.T) {
	api := servertest.NewGitHubAPI(t, 123, 456, "acme", []string{"api", "billing"},
		map[string]string{"metadata": "read", "issues": "write", "contents": "write"})
	h := githubAppHome(t, api)
	h.killBrokerAtCleanup(t)
	c := h.stdioClient(t)
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	text := servertest.ResultText(res)
	if res.IsError || !strings.Contains(text, "crash on start") || !strings.Contains(text, "[REDACTED]") {
		t.Fatalf("GET issues = %s, want the issues with the echoed token redacted", text)
	}
	toks := api.Tokens()
	if len(toks) != 1 || strings.Join(toks[0].Repositories, ",") != "api" || len(toks[0].Permissions) != 2 || toks[0].Permissions["issues"] != "read" {
		t.Fatalf("minted tokens: %+v, want one for [api] with issues:read and metadata:read", toks)
	}
	res = servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/billing/issues"})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "not granted") {
		t.Fatalf("another repository = %s, want a denial", servertest.ResultText(res))
	}

	// The client goes away: the session ends and its token is revoked.
	c.Close()
	for i := 0; !api.Tokens()[0].Revoked; i++ {
		if i == 600 {
			t.Fatalf("the session ended and its token was not revoked: %v", api.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := h.ok("", "audit", "tail", "-n", "100", "--json")
	if !strings.Contains(r.stdout, `"credential_kind":"github_app"`) || !strings.Contains(r.stdout, `"token_id":"sha256:`) {
		t.Fatalf("audit = %s, want the credential kind and the token id", r.stdout)
	}
	h.assertNoneAnywhere(api.Issued(), text, r.stdout)
}

// A broker that stops revokes the installation tokens it minted: its
// sessions go on under the next broker, which mints its own, so the old
// tokens would otherwise stay valid for up to an hour with no broker
// using them.
func TestGitHubAppTokensAreRevokedWhenTheBrokerStops(t *testing.T) {
	api := servertest.NewGitHubAPI(t, 123, 456, "acme", []string{"api"},
		map[string]string{"metadata": "read", "issues": "write"})
	h := githubAppHome(t, api)
	serve, url := startServe(t, h)
	id, tok := h.newToken("triage")
	get := map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	var outs []string
	text, isErr := callTool(t, connect(t, url, tok), "github", get)
	if isErr || !strings.Contains(text, "crash on start") {
		t.Fatalf("GET issues = %q, want the issues", text)
	}
	outs = append(outs, text)
	if toks := api.Tokens(); len(toks) != 1 || toks[0].Revoked {
		t.Fatalf("minted tokens: %+v, want one, live", toks)
	}

	h.ok("", "stop")
	serve.Wait()
	if toks := api.Tokens(); len(toks) != 1 || !toks[0].Revoked {
		t.Fatalf("after the broker stopped, minted tokens: %+v, want the one revoked", toks)
	}

	// The session goes on under the next broker, with a token of its own.
	_, url = startServe(t, h)
	text, isErr = callTool(t, connect(t, url, tok), "github", get)
	if isErr || !strings.Contains(text, "crash on start") {
		t.Fatalf("GET issues after the restart = %q, want the issues", text)
	}
	outs = append(outs, text)
	if toks := api.Tokens(); len(toks) != 2 || !toks[0].Revoked || toks[1].Revoked {
		t.Fatalf("after the restart, minted tokens: %+v, want the first revoked and a second live", toks)
	}
	if s := h.session(id); s.State != "active" {
		t.Fatalf("the session after the restart = %+v, want active", s)
	}
	h.assertNoneAnywhere(api.Issued(), outs...)
}
