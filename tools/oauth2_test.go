package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

const (
	testClientID     = "keyhole-test-client"
	testClientSecret = "cs_Sup3rS3cretClientValue_0123456789"
)

// fakeSecretStore is a SecretWriter that keeps the secret in memory, as
// the vault would.
type fakeSecretStore struct {
	mu       sync.Mutex
	value    []byte
	status   string
	replaced int
}

func (f *fakeSecretStore) Replace(prev, next []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !bytes.Equal(prev, f.value) {
		return errors.New("changed")
	}
	f.value, f.status = bytes.Clone(next), ""
	f.replaced++
	return nil
}

func (f *fakeSecretStore) SetStatus(s string) error {
	f.mu.Lock()
	f.status = s
	f.mu.Unlock()
	return nil
}

func (f *fakeSecretStore) get() ([]byte, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.value), f.status
}

// oauthUpstream is an API that accepts the authorization server's access
// tokens and echoes the Authorization header it received in its body,
// as a hostile upstream would.
func oauthUpstream(t *testing.T, as *servertest.OAuthServer) *servertest.Upstream {
	return servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := as.Bearer(r); !ok {
			http.Error(w, `{"message":"bad token"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"echo":%q}`, r.Header.Get("Authorization"))
	})
}

func oauthTool(t *testing.T, up, as string, o OAuth2, clock *servertest.Clock) *httpTool {
	t.Helper()
	o.TokenURL = as + "/token"
	if o.Flow == flowAuthorizationCode {
		o.AuthURL = as + "/authorize"
	}
	tool := compileTest(t, Config{BaseURL: up, Credential: Credential{Secret: "api_oauth", Inject: "oauth2", OAuth2: &o}})
	tool.mint.(*oauth2Source).now = clock.Now
	return tool
}

func oauthCall(t *testing.T, tool *httpTool, secret []byte, store SecretWriter) (*Result, error) {
	t.Helper()
	call, err := tool.Prepare(argsJSON(t, map[string]any{"method": "GET", "path": "/v1/things"}))
	if err != nil {
		t.Fatal(err)
	}
	env := execEnv(tool, secret)
	env.Secret = store
	return tool.Execute(context.Background(), call, secret, env)
}

// assertClean fails if text holds any form of any of vals.
func assertClean(t *testing.T, what, text string, vals ...string) {
	t.Helper()
	for _, v := range vals {
		if v != "" {
			servertest.AssertNoSecret(t, what, text, v)
		}
	}
}

func TestOAuth2ClientCredentialsFetchedOnceCachedAndRefreshed(t *testing.T) {
	clock := servertest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	as := servertest.NewOAuthServer(t, testClientID, testClientSecret)
	as.SetClock(clock.Now)
	as.SetExpiresIn(600)
	up := oauthUpstream(t, as)
	tool := oauthTool(t, up.URL, as.URL, OAuth2{Flow: flowClientCredentials, Scopes: []string{"things:read"}, Audience: "https://api.example/"}, clock)
	secret := []byte(`{"client_id":"` + testClientID + `","client_secret":"` + testClientSecret + `"}`)

	// Concurrent calls while the token endpoint holds the first request
	// share that one request.
	release := as.Hold()
	var wg sync.WaitGroup
	results := make([]*Result, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = oauthCall(t, tool, secret, nil)
		}()
	}
	release()
	wg.Wait()
	reqs := as.Requests()
	if len(reqs) != 1 {
		t.Fatalf("the token endpoint got %d requests for 8 concurrent calls, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Grant != "client_credentials" || !r.ClientAuth || r.Form.Get("scope") != "things:read" || r.Form.Get("audience") != "https://api.example/" {
		t.Fatalf("token request = %+v, want client_credentials with Basic client auth, scope things:read and the audience", r)
	}
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if res.Status != http.StatusOK || !res.Scrubbed {
			t.Fatalf("call %d: status %d scrubbed %v, want 200 with the echoed token scrubbed", i, res.Status, res.Scrubbed)
		}
		assertClean(t, "the agent's view", agentView(t, res), append(as.Issued(), testClientSecret)...)
	}
	at := as.Issued()[0]
	for _, got := range up.Requests() {
		if got.Header.Get("Authorization") != "Bearer "+at {
			t.Fatalf("upstream got Authorization of %d bytes, want the access token", len(got.Header.Get("Authorization")))
		}
	}
	info := results[0].Credential
	if info.Kind != CredOAuth2 || info.TokenID != tokenID(at) || !info.Expires.Equal(clock.Now().Add(600*time.Second)) {
		t.Fatalf("Credential = %+v, want oauth2, %s, expiring in 600s", info, tokenID(at))
	}
	if strings.Contains(info.TokenID, at[3:12]) {
		t.Fatalf("TokenID %s holds part of the token", info.TokenID)
	}

	// Cached until shortly before expiry, then fetched again.
	clock.Advance(9 * time.Minute)
	if _, err := oauthCall(t, tool, secret, nil); err != nil || len(as.Requests()) != 1 {
		t.Fatalf("a call 9m into a 10m token: %v, %d token requests; want the cached token", err, len(as.Requests()))
	}
	clock.Advance(40 * time.Second)
	res, err := oauthCall(t, tool, secret, nil)
	if err != nil || len(as.Requests()) != 2 || res.Credential.TokenID == info.TokenID {
		t.Fatalf("a call 20s before expiry: %v, %d token requests, token %s; want a new token", err, len(as.Requests()), res.Credential.TokenID)
	}
	// The scrubber of the next call covers the tokens it holds.
	view, _ := tool.Scrubber(secret).String("x " + at + " " + as.Issued()[1])
	assertClean(t, "Scrubber", view, as.Issued()...)
}

func TestOAuth2TokenEndpointDownBacksOffExponentially(t *testing.T) {
	clock := servertest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	as := servertest.NewOAuthServer(t, testClientID, testClientSecret)
	as.SetClock(clock.Now)
	up := oauthUpstream(t, as)
	tool := oauthTool(t, up.URL, as.URL, OAuth2{Flow: flowClientCredentials}, clock)
	secret := []byte(`{"client_id":"` + testClientID + `","client_secret":"` + testClientSecret + `"}`)
	as.Fail(http.StatusServiceUnavailable)

	steps := []struct {
		advance  time.Duration
		requests int    // token requests after the call
		want     string // in the error
	}{
		{0, 1, "answered 503 Service Unavailable; keyhole tries again in 1s"},
		{0, 1, "tries again in 1s"},
		{time.Second, 2, "tries again in 2s"},
		{time.Second, 2, "tries again in 1s"},
		{time.Second, 3, "tries again in 4s"},
		{3 * time.Second, 3, "tries again in 1s"},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		_, err := oauthCall(t, tool, secret, nil)
		var ee *ExecError
		if !errors.As(err, &ee) || !strings.Contains(ee.Msg, s.want) {
			t.Fatalf("step %d: error %v, want one saying %q", i, err, s.want)
		}
		if n := len(as.Requests()); n != s.requests {
			t.Fatalf("step %d: %d token requests, want %d", i, n, s.requests)
		}
		assertClean(t, "error", ee.Msg+ee.Detail, testClientSecret, string(secret))
	}
	if len(up.Requests()) != 0 {
		t.Fatalf("the upstream got %d requests without a token", len(up.Requests()))
	}
	as.Fail(0)
	clock.Advance(time.Second)
	if _, err := oauthCall(t, tool, secret, nil); err != nil {
		t.Fatalf("after the endpoint recovered and the wait passed: %v", err)
	}
	// A success forgets the failures.
	as.Fail(http.StatusBadGateway)
	clock.Advance(time.Hour)
	_, err := oauthCall(t, tool, secret, nil)
	if err == nil || !strings.Contains(err.Error(), "tries again in 1s") {
		t.Fatalf("first failure after a success: %v, want a 1s wait", err)
	}
}

func TestOAuth2TokenEndpointSlowTimesOut(t *testing.T) {
	clock := servertest.NewClock(time.Now())
	as := servertest.NewOAuthServer(t, testClientID, testClientSecret)
	up := oauthUpstream(t, as)
	o := OAuth2{Flow: flowClientCredentials, TokenURL: as.TokenURL()}
	tool := compileTest(t, Config{BaseURL: up.URL, Timeout: "200ms", Credential: Credential{Secret: "api_oauth", Inject: "oauth2", OAuth2: &o}})
	tool.mint.(*oauth2Source).now = clock.Now
	release := as.Hold()
	defer release()
	_, err := oauthCall(t, tool, []byte(`{"client_id":"`+testClientID+`","client_secret":"`+testClientSecret+`"}`), nil)
	if err == nil || !strings.Contains(err.Error(), "did not answer within 200ms") {
		t.Fatalf("a held token endpoint: %v, want a timeout naming the limit", err)
	}
}

func TestOAuth2TokenEndpointPassesTheEgressGuard(t *testing.T) {
	as := servertest.NewOAuthServer(t, testClientID, testClientSecret)
	o := OAuth2{Flow: flowClientCredentials, TokenURL: as.TokenURL()}
	tool, errs := Compile("api", Config{Kind: "http", BaseURL: "https://api.example.com", AllowInsecureHTTP: true,
		Credential: Credential{Secret: "api_oauth", Inject: "oauth2", OAuth2: &o}}, Env{})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ht := tool.(*httpTool)
	_, err := oauthCall(t, ht, []byte(`{"client_id":"`+testClientID+`","client_secret":"`+testClientSecret+`"}`), nil)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("a token endpoint on loopback without allow_private_network: %v, want it unreachable", err)
	}
	var ee *ExecError
	if errors.As(err, &ee) && !strings.Contains(ee.Detail, "egress") {
		t.Fatalf("detail %q does not say the egress policy refused it", ee.Detail)
	}
	if n := len(as.Requests()); n != 0 {
		t.Fatalf("the token endpoint on loopback got %d requests through a tool without allow_private_network", n)
	}
}

// login drives a login as a browser would: it follows the authorization
// URL to the redirect and returns the code and state it carries.
func login(t *testing.T, l *Login) (code, state string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(l.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorize answered %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

func TestOAuth2AuthorizationCodeLoginRefreshRotationAndRevocation(t *testing.T) {
	clock := servertest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	as := servertest.NewOAuthServer(t, testClientID, testClientSecret)
	as.SetClock(clock.Now)
	as.SetExpiresIn(300)
	up := oauthUpstream(t, as)
	tool := oauthTool(t, up.URL, as.URL, OAuth2{Flow: flowAuthorizationCode, Scopes: []string{"repo", "read:org"}}, clock)
	base := []byte(`{"client_id":"` + testClientID + `","client_secret":"` + testClientSecret + `"}`)
	store := &fakeSecretStore{value: base}

	// Nobody logged in: the call says what the operator must do.
	_, err := oauthCall(t, tool, base, store)
	if err == nil || !strings.Contains(err.Error(), "keyhole secret login api_oauth") {
		t.Fatalf("a call before any login: %v, want one naming `keyhole secret login api_oauth`", err)
	}
	if _, status := store.get(); !strings.HasPrefix(status, StatusNeedsLogin) {
		t.Fatalf("status before login = %q, want %q", status, StatusNeedsLogin)
	}

	if _, err := tool.StartLogin(base, "https://evil.example/cb"); err == nil {
		t.Fatalf("StartLogin accepted a redirect off loopback")
	}
	l, err := tool.StartLogin(base, "http://127.0.0.1:4567/callback")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(l.URL)
	if q := u.Query(); q.Get("code_challenge_method") != "S256" || q.Get("scope") != "repo read:org" || q.Get("state") != l.State || strings.Contains(l.URL, testClientSecret) {
		t.Fatalf("authorization URL %s: want S256 PKCE, the scopes, the state and no client secret", l.URL)
	}
	code, state := login(t, l)
	if _, err := l.Finish(context.Background(), base, "forged-"+state, code); err == nil {
		t.Fatalf("Finish accepted a forged state")
	}
	secret, err := l.Finish(context.Background(), base, state, code)
	if err != nil {
		t.Fatalf("Finish = %v", err)
	}
	reqs := as.Requests()
	if len(reqs) != 1 || reqs[0].Grant != "authorization_code" || reqs[0].Status != http.StatusOK || reqs[0].Form.Get("code_verifier") == "" {
		t.Fatalf("token requests after login = %+v, want one PKCE-verified authorization_code exchange", reqs)
	}
	var sealed oauth2Secret
	if err := json.Unmarshal(secret, &sealed); err != nil || sealed.RefreshToken == "" || sealed.ClientSecret != testClientSecret {
		t.Fatalf("secret after login holds no refresh token: %v", err)
	}
	store.value = secret
	store.status = ""

	// The login's access token serves the first calls.
	res, err := oauthCall(t, tool, secret, store)
	if err != nil || len(as.Requests()) != 1 {
		t.Fatalf("first call after login: %v, %d token requests; want the login's token", err, len(as.Requests()))
	}
	assertClean(t, "the agent's view", agentView(t, res), append(as.Issued(), testClientSecret)...)

	// Past expiry: refreshed server-side, the rotated refresh token stored.
	clock.Advance(5 * time.Minute)
	res, err = oauthCall(t, tool, secret, store)
	if err != nil {
		t.Fatalf("call after expiry: %v", err)
	}
	reqs = as.Requests()
	if len(reqs) != 2 || reqs[1].Grant != "refresh_token" || reqs[1].Form.Get("refresh_token") != sealed.RefreshToken {
		t.Fatalf("token requests = %+v, want a refresh with the sealed refresh token", reqs)
	}
	rotated, status := store.get()
	var now oauth2Secret
	json.Unmarshal(rotated, &now)
	if store.replaced != 1 || now.RefreshToken == "" || now.RefreshToken == sealed.RefreshToken || now.ClientSecret != testClientSecret || status != "" {
		t.Fatalf("after the refresh the store holds replaced=%d, a new refresh token %v; want the rotated one stored once", store.replaced, now.RefreshToken != sealed.RefreshToken)
	}
	assertClean(t, "the agent's view", agentView(t, res), append(as.Issued(), testClientSecret)...)
	// A call that read the secret before the rotation uses the new token.
	if _, err := oauthCall(t, tool, secret, store); err != nil || len(as.Requests()) != 2 {
		t.Fatalf("a call with the pre-rotation secret: %v, %d token requests; want the cached token", err, len(as.Requests()))
	}

	// The user revokes the app: the next refresh is refused, the secret
	// needs a login, and calls fail at once until someone logs in.
	as.RevokeRefreshTokens()
	clock.Advance(5 * time.Minute)
	for i := range 3 {
		_, err = oauthCall(t, tool, rotated, store)
		var ee *ExecError
		if !errors.As(err, &ee) || !strings.Contains(ee.Msg, "refused") || !strings.Contains(ee.Msg, "keyhole secret login api_oauth") {
			t.Fatalf("call %d after revocation: %v, want an operator-facing needs-login error", i, err)
		}
		assertClean(t, "error", ee.Msg+ee.Detail, append(as.Issued(), testClientSecret)...)
	}
	if n := len(as.Requests()); n != 3 {
		t.Fatalf("%d token requests after a refused refresh and two more calls, want 3 (no retries)", n)
	}
	if _, status := store.get(); !strings.HasPrefix(status, StatusNeedsLogin+": ") {
		t.Fatalf("status after a refused refresh = %q, want needs login", status)
	}

	// A new login brings the tool back.
	l, _ = tool.StartLogin(rotated, "http://127.0.0.1:4567/callback")
	code, state = login(t, l)
	again, err := l.Finish(context.Background(), rotated, state, code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oauthCall(t, tool, again, store); err != nil {
		t.Fatalf("a call after a new login: %v", err)
	}
}

func TestOAuth2SecretsAndConfigRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		cred Credential
		want string
	}{
		"no block":             {Credential{Inject: "oauth2"}, "credential.oauth2: is required"},
		"no flow":              {Credential{Inject: "oauth2", OAuth2: &OAuth2{TokenURL: "https://a.example/t"}}, "flow: is required"},
		"bad flow":             {Credential{Inject: "oauth2", OAuth2: &OAuth2{Flow: "password", TokenURL: "https://a.example/t"}}, "flow: must be"},
		"no token_url":         {Credential{Inject: "oauth2", OAuth2: &OAuth2{Flow: "client_credentials"}}, "token_url: is required"},
		"code without auth":    {Credential{Inject: "oauth2", OAuth2: &OAuth2{Flow: "authorization_code", TokenURL: "https://a.example/t"}}, "auth_url: is required"},
		"auth_url for cc":      {Credential{Inject: "oauth2", OAuth2: &OAuth2{Flow: "client_credentials", TokenURL: "https://a.example/t", AuthURL: "https://a.example/a"}}, "auth_url: applies only"},
		"userinfo":             {Credential{Inject: "oauth2", OAuth2: &OAuth2{Flow: "client_credentials", TokenURL: "https://u:p@a.example/t"}}, "must not contain userinfo"},
		"plain http":           {Credential{Inject: "oauth2", OAuth2: &OAuth2{Flow: "client_credentials", TokenURL: "http://a.example/t"}}, "http is allowed only"},
		"scope with space":     {Credential{Inject: "oauth2", OAuth2: &OAuth2{Flow: "client_credentials", TokenURL: "https://a.example/t", Scopes: []string{"a b"}}}, "scope 0"},
		"block on bearer":      {Credential{Inject: "bearer", OAuth2: &OAuth2{Flow: "client_credentials"}}, "applies only to inject: oauth2"},
		"app block on bearer":  {Credential{Inject: "bearer", GitHubApp: &GitHubApp{AppID: 1}}, "applies only to inject: github_app"},
		"app without ids":      {Credential{Inject: "github_app", GitHubApp: &GitHubApp{}}, "app_id: is required"},
		"app without block":    {Credential{Inject: "github_app"}, "credential.github_app: is required"},
		"app api_url userinfo": {Credential{Inject: "github_app", GitHubApp: &GitHubApp{AppID: 1, InstallationID: 2, APIURL: "https://x@api.github.com"}}, "userinfo"},
	} {
		t.Run(name, func(t *testing.T) {
			tc.cred.Secret = "api_oauth"
			_, errs := Compile("api", Config{Kind: "http", BaseURL: "https://api.example.com", Credential: tc.cred}, Env{})
			if !strings.Contains(fmt.Sprint(errs), tc.want) {
				t.Fatalf("Compile = %v, want an error containing %q", errs, tc.want)
			}
		})
	}
	_, errs := Compile("bucket", Config{Kind: "s3", Bucket: "b", Region: "us-east-1",
		Credential: Credential{Secret: "aws", Inject: "aws_sigv4", OAuth2: &OAuth2{Flow: "client_credentials"}}}, Env{})
	if !strings.Contains(fmt.Sprint(errs), "credential.oauth2: applies to http tools only") {
		t.Fatalf("s3 tool with an oauth2 block: %v", errs)
	}

	for name, secret := range map[string]string{
		"not JSON":      "cs_" + testClientSecret,
		"no client_id":  `{"client_secret":"` + testClientSecret + `"}`,
		"unknown field": `{"client_id":"a","client_secret":"` + testClientSecret + `","password":"x"}`,
		"trailing data": `{"client_id":"a","client_secret":"` + testClientSecret + `"} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseOAuth2Secret([]byte(secret))
			if !errors.Is(err, ErrOAuth2Secret) || strings.Contains(err.Error(), testClientSecret) {
				t.Fatalf("parseOAuth2Secret = %v, want ErrOAuth2Secret quoting nothing", err)
			}
		})
	}
}

func TestOAuth2ToolsSharingASecretShareTokens(t *testing.T) {
	clock := servertest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	as := servertest.NewOAuthServer(t, testClientID, testClientSecret)
	as.SetClock(clock.Now)
	up := oauthUpstream(t, as)
	env := Env{Tokens: NewTokens()}
	o := OAuth2{Flow: flowClientCredentials, TokenURL: as.TokenURL()}
	var tools []*httpTool
	for _, name := range []string{"a", "b"} {
		tool, errs := Compile(name, Config{Kind: "http", BaseURL: up.URL, AllowPrivateNetwork: true,
			Credential: Credential{Secret: "api_oauth", Inject: "oauth2", OAuth2: &o}}, env)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		ht := tool.(*httpTool)
		ht.mint.(*oauth2Source).now = clock.Now
		tools = append(tools, ht)
	}
	secret := []byte(`{"client_id":"` + testClientID + `","client_secret":"` + testClientSecret + `"}`)
	for _, tool := range tools {
		if _, err := oauthCall(t, tool, secret, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(as.Requests()); n != 1 {
		t.Fatalf("two tools of one secret and one Env made %d token requests, want 1", n)
	}
}
