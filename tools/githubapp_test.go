package tools

import (
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// grantsOf compiles one scope's grants on a generic http tool "gh" and
// returns what a tool sees of them.
func grantsOf(t *testing.T, grants ...policy.GrantConfig) []policy.HTTPGrant {
	t.Helper()
	for i := range grants {
		grants[i].Tool = "gh"
		grants[i].AllowBroad = true
	}
	p, errs := policy.Compile(map[string]policy.ScopeConfig{"s": {Grants: grants}}, map[string]policy.ToolInfo{"gh": {Kind: "http"}})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	sc, _ := p.Scope("s")
	return sc.HTTPGrants("gh")
}

func g(methods string, paths ...string) policy.GrantConfig {
	return policy.GrantConfig{Methods: strings.Split(methods, ","), Paths: paths}
}

func TestGitHubNeedsFromGrants(t *testing.T) {
	inst := ghInstallation{Permissions: map[string]string{
		"metadata": "read", "issues": "write", "pull_requests": "write", "contents": "write",
		"administration": "write", "secrets": "write", "members": "read", "checks": "read",
	}}
	inst.Account.Login = "acme"
	for name, tc := range map[string]struct {
		grants    []policy.GrantConfig
		repos     []string // nil: every repository
		perms     map[string]string
		anyRepo   bool
		dropped   []string
		wantPerms map[string]string // of the request, after cutting to the installation
	}{
		"triage": {
			grants:    []policy.GrantConfig{g("GET", "/repos/acme/api/issues", "/repos/acme/api/issues/*"), g("POST", "/repos/acme/api/issues/*/comments")},
			repos:     []string{"api"},
			wantPerms: map[string]string{"metadata": "read", "issues": "write"},
		},
		"read only, two repos": {
			grants:    []policy.GrantConfig{g("GET,HEAD", "/repos/acme/api/pulls/**", "/repos/Acme/web/contents/**")},
			repos:     []string{"api", "web"},
			wantPerms: map[string]string{"metadata": "read", "pull_requests": "read", "contents": "read"},
		},
		"repository wildcard reaches every repository": {
			grants:    []policy.GrantConfig{g("GET", "/repos/acme/*/issues")},
			anyRepo:   true,
			wantPerms: map[string]string{"metadata": "read", "issues": "read"},
		},
		"resource wildcard needs every permission at the level": {
			grants:    []policy.GrantConfig{g("GET", "/repos/acme/api/*")},
			repos:     []string{"api"},
			wantPerms: map[string]string{"metadata": "read", "issues": "read", "pull_requests": "read", "contents": "read", "administration": "read", "secrets": "read", "members": "read", "checks": "read"},
		},
		"everything": {
			grants:    []policy.GrantConfig{g("GET,POST", "/**")},
			anyRepo:   true,
			wantPerms: map[string]string{"metadata": "read", "issues": "write", "pull_requests": "write", "contents": "write", "administration": "write", "secrets": "write", "members": "read", "checks": "read"},
		},
		"repository settings are administration": {
			grants:    []policy.GrantConfig{g("GET", "/repos/acme/api"), g("PATCH", "/repos/acme/api")},
			repos:     []string{"api"},
			wantPerms: map[string]string{"metadata": "read", "administration": "write"},
		},
		"branch protection is administration": {
			grants:    []policy.GrantConfig{g("GET", "/repos/acme/api/branches/*/protection"), g("GET", "/repos/acme/api/branches")},
			repos:     []string{"api"},
			wantPerms: map[string]string{"metadata": "read", "administration": "read", "contents": "read"},
		},
		"actions secrets": {
			grants:    []policy.GrantConfig{g("PUT", "/repos/acme/api/actions/secrets/*")},
			repos:     []string{"api"},
			wantPerms: map[string]string{"metadata": "read", "secrets": "write"},
		},
		"org members, no repository named": {
			grants:    []policy.GrantConfig{g("GET", "/orgs/acme/members")},
			repos:     []string{},
			wantPerms: map[string]string{"metadata": "read", "members": "read"},
		},
		"a permission the installation lacks is left out": {
			grants:    []policy.GrantConfig{g("POST", "/repos/acme/api/check-runs"), g("POST", "/repos/acme/api/hooks")},
			repos:     []string{"api"},
			wantPerms: map[string]string{"metadata": "read", "checks": "read"},
		},
		"another account's repository": {
			grants:    []policy.GrantConfig{g("GET", "/repos/acme/api/issues"), g("GET", "/repos/evil/api/issues")},
			repos:     []string{"api"},
			dropped:   []string{"evil/api"},
			wantPerms: map[string]string{"metadata": "read", "issues": "read"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			need := githubNeeds(grantsOf(t, tc.grants...))
			if need.allRepos != tc.anyRepo {
				t.Fatalf("githubNeeds(%v).allRepos = %v, want %v", tc.grants, need.allRepos, tc.anyRepo)
			}
			req, dropped := need.request(inst)
			if !tc.anyRepo && !slices.Equal(req.Repositories, tc.repos) {
				t.Fatalf("request(%v).Repositories = %q, want %q", tc.grants, req.Repositories, tc.repos)
			}
			if tc.anyRepo && req.Repositories != nil {
				t.Fatalf("request(%v).Repositories = %q, want every repository (nil)", tc.grants, req.Repositories)
			}
			if !maps.Equal(req.Permissions, tc.wantPerms) {
				t.Fatalf("request(%v).Permissions = %v, want %v", tc.grants, req.Permissions, tc.wantPerms)
			}
			if !slices.Equal(dropped, tc.dropped) {
				t.Fatalf("request(%v) dropped %q, want %q", tc.grants, dropped, tc.dropped)
			}
		})
	}
}

// timers records the session-expiry timers a github_app tool sets.
type timers struct {
	mu sync.Mutex
	d  []time.Duration
	f  []func()
}

func (tm *timers) afterFunc(d time.Duration, f func()) func() bool {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.d = append(tm.d, d)
	tm.f = append(tm.f, f)
	return func() bool { return true }
}

func ghTool(t *testing.T, api *servertest.GitHubAPI, clock *servertest.Clock, tm *timers) *httpTool {
	t.Helper()
	tool := compileTest(t, Config{BaseURL: api.URL, Credential: Credential{Secret: "gh_app_key", Inject: "github_app",
		GitHubApp: &GitHubApp{AppID: api.AppID, InstallationID: api.InstallationID, APIURL: api.URL}}})
	src := tool.mint.(*githubAppSource)
	src.now, src.afterFunc = clock.Now, tm.afterFunc
	return tool
}

func ghCall(t *testing.T, tool *httpTool, key []byte, sess *CallSession, method, path string) (*Result, error) {
	t.Helper()
	args := map[string]any{"method": method, "path": path}
	if method == http.MethodPost {
		args["body"] = map[string]any{"body": "hi"}
	}
	call, err := tool.Prepare(argsJSON(t, args))
	if err != nil {
		t.Fatal(err)
	}
	env := execEnv(tool, key)
	env.Session = sess
	return tool.Execute(context.Background(), call, key, env)
}

func TestGitHubAppTokenPerSessionLimitedToItsGrants(t *testing.T) {
	clock := servertest.NewClock(time.Now().Truncate(time.Second))
	api := servertest.NewGitHubAPI(t, 123, 456, "acme", []string{"api", "billing", "web"},
		map[string]string{"metadata": "read", "issues": "write", "contents": "write", "administration": "write"})
	api.SetClock(clock.Now)
	tm := &timers{}
	tool := ghTool(t, api, clock, tm)
	key := []byte(api.PrivateKeyPEM())

	triage := &CallSession{ID: "ses_triage", Expires: clock.Now().Add(2 * time.Hour), HTTP: grantsOf(t,
		g("GET", "/repos/acme/api/issues"), g("POST", "/repos/acme/api/issues"))}
	res, err := ghCall(t, tool, key, triage, "GET", "/repos/acme/api/issues")
	if err != nil || res.Status != http.StatusOK {
		t.Fatalf("GET issues: %v, %+v", err, res)
	}
	toks := api.Tokens()
	if len(toks) != 1 {
		t.Fatalf("%d tokens minted, want 1", len(toks))
	}
	if tok := toks[0]; !slices.Equal(tok.Repositories, []string{"api"}) || !maps.Equal(tok.Permissions, map[string]string{"metadata": "read", "issues": "write"}) {
		t.Fatalf("minted token reaches %v with %v; want [api] with issues:write and metadata:read", tok.Repositories, tok.Permissions)
	}
	if !res.Scrubbed {
		t.Fatalf("the upstream echoed the installation token and the result is not marked scrubbed")
	}
	assertClean(t, "the agent's view", agentView(t, res), append(api.Issued(), string(key))...)
	if info := res.Credential; info.Kind != CredGitHubApp || info.TokenID != tokenID(toks[0].Token) || !info.Expires.Equal(toks[0].Expires) {
		t.Fatalf("Credential = %+v, want github_app with the token's id and expiry", info)
	}

	// The same session reuses its token; what the token cannot reach,
	// GitHub refuses, whatever keyhole would allow.
	if _, err := ghCall(t, tool, key, triage, "POST", "/repos/acme/api/issues"); err != nil {
		t.Fatal(err)
	}
	res, err = ghCall(t, tool, key, triage, "GET", "/repos/acme/billing/issues")
	if err != nil || res.Status != http.StatusNotFound || len(api.Tokens()) != 1 {
		t.Fatalf("another repository with the session's token: %v, status %d, %d tokens; want GitHub's 404 and no new token", err, res.Status, len(api.Tokens()))
	}

	// Another session, read only, gets its own, narrower token.
	reader := &CallSession{ID: "ses_reader", Expires: clock.Now().Add(30 * time.Minute), HTTP: grantsOf(t, g("GET", "/repos/acme/*/issues"))}
	if _, err := ghCall(t, tool, key, reader, "GET", "/repos/acme/web/issues"); err != nil {
		t.Fatal(err)
	}
	toks = api.Tokens()
	if len(toks) != 2 || toks[1].Repositories != nil || !maps.Equal(toks[1].Permissions, map[string]string{"metadata": "read", "issues": "read"}) {
		t.Fatalf("the reader's token = %+v; want every repository, issues:read", toks[len(toks)-1])
	}
	res, _ = ghCall(t, tool, key, reader, "POST", "/repos/acme/web/issues")
	if res.Status != http.StatusForbidden {
		t.Fatalf("POST with the read-only session's token: status %d, want GitHub's 403", res.Status)
	}

	// Each session's token is revoked when the session would expire.
	tm.mu.Lock()
	if len(tm.d) != 2 || tm.d[0] != 2*time.Hour || tm.d[1] != 30*time.Minute {
		t.Fatalf("session timers %v, want 2h and 30m", tm.d)
	}
	expire := tm.f[1]
	tm.mu.Unlock()
	expire()
	if toks = api.Tokens(); !toks[1].Revoked || toks[0].Revoked {
		t.Fatalf("after the reader's session expired: revoked %v, %v; want only the reader's", toks[0].Revoked, toks[1].Revoked)
	}

	// A session longer than an hour gets a new token before the old
	// one expires, and the old one is revoked.
	clock.Advance(56 * time.Minute)
	if _, err := ghCall(t, tool, key, triage, "GET", "/repos/acme/api/issues"); err != nil {
		t.Fatal(err)
	}
	toks = api.Tokens()
	if len(toks) != 3 || !toks[0].Revoked || toks[2].Revoked {
		t.Fatalf("after 56 minutes: %d tokens, first revoked %v; want a third, the first revoked", len(toks), toks[0].Revoked)
	}

	// The session ends: its token is revoked at once.
	if err := tool.EndSession(context.Background(), "ses_triage"); err != nil {
		t.Fatal(err)
	}
	if toks = api.Tokens(); !toks[2].Revoked {
		t.Fatalf("the ended session's token was not revoked")
	}
	if err := tool.EndSession(context.Background(), "ses_triage"); err != nil {
		t.Fatalf("ending a session twice: %v", err)
	}
	deletes := 0
	for _, l := range api.Log() {
		if l == "DELETE /installation/token" {
			deletes++
		}
	}
	if deletes != 3 {
		t.Fatalf("%d DELETE /installation/token, want 3: %v", deletes, api.Log())
	}
}

func TestGitHubAppFailures(t *testing.T) {
	clock := servertest.NewClock(time.Now().Truncate(time.Second))
	api := servertest.NewGitHubAPI(t, 123, 456, "acme", []string{"api"}, map[string]string{"metadata": "read", "issues": "write"})
	api.SetClock(clock.Now)
	sess := &CallSession{ID: "ses_1", Expires: clock.Now().Add(time.Hour), HTTP: grantsOf(t, g("GET", "/repos/acme/api/issues"))}

	t.Run("API down backs off", func(t *testing.T) {
		tool := ghTool(t, api, clock, &timers{})
		key := []byte(api.PrivateKeyPEM())
		api.Fail(http.StatusBadGateway)
		defer api.Fail(0)
		before := len(api.Log())
		for i, want := range []string{"answered GET /app/installations/456 with 502 Bad Gateway", "tries again in 1s"} {
			_, err := ghCall(t, tool, key, sess, "GET", "/repos/acme/api/issues")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("call %d with the API down: %v, want %q", i, err, want)
			}
		}
		if n := len(api.Log()) - before; n != 1 {
			t.Fatalf("%d requests for two calls with the API down, want 1", n)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other := servertest.NewGitHubAPI(t, 1, 1, "x", nil, nil)
		tool := ghTool(t, api, clock, &timers{})
		_, err := ghCall(t, tool, []byte(other.PrivateKeyPEM()), sess, "GET", "/repos/acme/api/issues")
		var ee *ExecError
		if !errors.As(err, &ee) || !strings.Contains(ee.Msg, "401") {
			t.Fatalf("a JWT signed by another key: %v, want GitHub's 401", err)
		}
		assertClean(t, "error", ee.Msg+ee.Detail, append(api.Issued(), other.PrivateKeyPEM())...)
	})
	t.Run("not a key", func(t *testing.T) {
		tool := ghTool(t, api, clock, &timers{})
		_, err := ghCall(t, tool, []byte("ghp_notAKeyAtAll0123456789"), sess, "GET", "/repos/acme/api/issues")
		if err == nil || !strings.Contains(err.Error(), "an operator must fix secret gh_app_key") || strings.Contains(err.Error(), "ghp_") {
			t.Fatalf("a secret that is no PEM key: %v", err)
		}
	})
	t.Run("repository of another account", func(t *testing.T) {
		tool := ghTool(t, api, clock, &timers{})
		other := &CallSession{ID: "ses_2", Expires: clock.Now().Add(time.Hour), HTTP: grantsOf(t, g("GET", "/repos/evil/api/issues"))}
		_, err := ghCall(t, tool, []byte(api.PrivateKeyPEM()), other, "GET", "/repos/evil/api/issues")
		if err == nil || !strings.Contains(err.Error(), "evil/api") || !strings.Contains(err.Error(), "belongs to acme") {
			t.Fatalf("a scope naming only another account's repository: %v", err)
		}
	})
	t.Run("no session", func(t *testing.T) {
		tool := ghTool(t, api, clock, &timers{})
		if _, err := ghCall(t, tool, []byte(api.PrivateKeyPEM()), nil, "GET", "/repos/acme/api/issues"); err == nil || !strings.Contains(err.Error(), "per session") {
			t.Fatalf("a call without a session: %v", err)
		}
	})
}

func TestGitHubAppRevokesATokenWiderThanAsked(t *testing.T) {
	clock := servertest.NewClock(time.Now().Truncate(time.Second))
	api := servertest.NewGitHubAPI(t, 123, 456, "acme", []string{"api"}, map[string]string{"metadata": "read", "issues": "write"})
	api.SetClock(clock.Now)
	// A proxy in front of the API that asks for no permissions at all,
	// which GitHub reads as every permission: a careless or hostile API.
	target, _ := url.Parse(api.URL)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		if strings.HasSuffix(r.Out.URL.Path, "/access_tokens") {
			r.Out.Body, r.Out.ContentLength = io.NopCloser(strings.NewReader(`{}`)), 2
		}
	}}
	proxy := httptest.NewServer(rp)
	defer proxy.Close()
	tool := compileTest(t, Config{BaseURL: api.URL, Credential: Credential{Secret: "gh_app_key", Inject: "github_app",
		GitHubApp: &GitHubApp{AppID: 123, InstallationID: 456, APIURL: proxy.URL}}})
	src := tool.mint.(*githubAppSource)
	src.now, src.afterFunc = clock.Now, (&timers{}).afterFunc
	sess := &CallSession{ID: "ses_1", Expires: clock.Now().Add(time.Hour), HTTP: grantsOf(t, g("GET", "/repos/acme/api/issues"))}
	_, err := ghCall(t, tool, []byte(api.PrivateKeyPEM()), sess, "GET", "/repos/acme/api/issues")
	if err == nil || !strings.Contains(err.Error(), "wider than keyhole asked for") {
		t.Fatalf("a token wider than asked: %v", err)
	}
	toks := api.Tokens()
	if len(toks) != 1 || !toks[0].Revoked || !slices.Contains(api.Log(), "DELETE /installation/token") {
		t.Fatalf("the wider token was not revoked: %+v", toks)
	}
}
