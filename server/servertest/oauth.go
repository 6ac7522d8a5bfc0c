package servertest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// OAuthServer is an OAuth 2.0 authorization server for tests (RFC 6749):
// an authorization endpoint that approves at once and redirects with a
// code, bound to a PKCE S256 challenge (RFC 7636), and a token endpoint
// for the authorization_code, refresh_token (rotating: each refresh token
// works once) and client_credentials grants, with HTTP Basic client
// authentication. Access tokens expire after ExpiresIn by its clock.
// Tests switch it to failing, or revoke every refresh token, and read
// what it received and issued.
type OAuthServer struct {
	*httptest.Server
	ClientID, ClientSecret string

	mu        sync.Mutex
	now       func() time.Time
	expiresIn int
	fail      int           // answer every token request with this status; 0: work
	hold      chan struct{} // if set, token requests wait for it to close
	codes     map[string]oauthCode
	refresh   map[string]bool // refresh token -> still valid
	access    map[string]OAuthGrant
	requests  []OAuthRequest
	issued    []string // every access and refresh token and code it issued
}

type oauthCode struct {
	challenge, redirect, scope string
}

// OAuthGrant is what an access token was issued for.
type OAuthGrant struct {
	Grant    string // grant_type that issued it
	Scope    string
	Audience string
	Expires  time.Time
}

// OAuthRequest is one request the token endpoint received.
type OAuthRequest struct {
	Grant string     // grant_type
	Form  url.Values // the form, client credentials excluded
	// ClientAuth says the request authenticated the client with the
	// right id and secret in an Authorization: Basic header.
	ClientAuth bool
	Status     int // what the server answered
}

// NewOAuthServer starts an OAuthServer for one client, closed when the
// test ends. Access tokens last an hour unless SetExpiresIn says else.
func NewOAuthServer(t testing.TB, clientID, clientSecret string) *OAuthServer {
	t.Helper()
	s := &OAuthServer{ClientID: clientID, ClientSecret: clientSecret, now: time.Now, expiresIn: 3600,
		codes: map[string]oauthCode{}, refresh: map[string]bool{}, access: map[string]OAuthGrant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /token", s.token)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// AuthURL is the authorization endpoint.
func (s *OAuthServer) AuthURL() string { return s.URL + "/authorize" }

// TokenURL is the token endpoint.
func (s *OAuthServer) TokenURL() string { return s.URL + "/token" }

// SetClock makes the server judge expiry by now.
func (s *OAuthServer) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// SetExpiresIn sets the lifetime of the access tokens issued next.
func (s *OAuthServer) SetExpiresIn(seconds int) {
	s.mu.Lock()
	s.expiresIn = seconds
	s.mu.Unlock()
}

// Fail makes the token endpoint answer every request with status (0:
// work again).
func (s *OAuthServer) Fail(status int) {
	s.mu.Lock()
	s.fail = status
	s.mu.Unlock()
}

// Hold makes token requests wait until the returned function is called.
func (s *OAuthServer) Hold() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = nil
			s.mu.Unlock()
			close(ch)
		})
	}
}

// RevokeRefreshTokens makes every refresh token issued so far invalid, as
// a user revoking the app's access does.
func (s *OAuthServer) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for rt := range s.refresh {
		s.refresh[rt] = false
	}
}

// Requests returns what the token endpoint received, oldest first.
func (s *OAuthServer) Requests() []OAuthRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]OAuthRequest(nil), s.requests...)
}

// Issued returns every code, access token and refresh token the server
// issued: the values no agent may ever see.
func (s *OAuthServer) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Check returns the grant of a valid, unexpired access token.
func (s *OAuthServer) Check(token string) (OAuthGrant, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.access[token]
	if !ok || !s.now().Before(g.Expires) {
		return OAuthGrant{}, false
	}
	return g, true
}

// Bearer checks r's Authorization: Bearer token, for an upstream that
// trusts this server's tokens.
func (s *OAuthServer) Bearer(r *http.Request) (OAuthGrant, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return OAuthGrant{}, false
	}
	return s.Check(tok)
}

func randomToken(prefix string) string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// authorize approves at once: it checks the request and redirects to
// redirect_uri with a code bound to the PKCE challenge, and the state.
func (s *OAuthServer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	switch {
	case q.Get("client_id") != s.ClientID:
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	case err != nil || redirect.Scheme != "http" || !strings.HasPrefix(redirect.Host, "127.0.0.1:"):
		http.Error(w, "redirect_uri must be a loopback URL", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code":
		http.Error(w, "response_type must be code", http.StatusBadRequest)
		return
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43:
		http.Error(w, "PKCE with S256 is required", http.StatusBadRequest)
		return
	case q.Get("state") == "":
		http.Error(w, "state is required", http.StatusBadRequest)
		return
	}
	code := randomToken("code_")
	s.mu.Lock()
	s.codes[code] = oauthCode{challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), scope: q.Get("scope")}
	s.issued = append(s.issued, code)
	s.mu.Unlock()
	back := redirect.Query()
	back.Set("code", code)
	back.Set("state", q.Get("state"))
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// token serves the token endpoint.
func (s *OAuthServer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, secret, basic := r.BasicAuth()
	auth := basic && subtle.ConstantTimeCompare([]byte(id), []byte(s.ClientID)) == 1 &&
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.ClientSecret)) == 1
	form := url.Values{}
	for k, v := range r.PostForm {
		if k != "client_id" && k != "client_secret" {
			form[k] = v
		}
	}
	grant := r.PostForm.Get("grant_type")
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status, body := s.grant(grant, r.PostForm, auth)
	s.requests = append(s.requests, OAuthRequest{Grant: grant, Form: form, ClientAuth: auth, Status: status})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// grant answers one token request; s.mu is held.
func (s *OAuthServer) grant(grant string, form url.Values, auth bool) (int, map[string]any) {
	oauthErr := func(status int, code, desc string) (int, map[string]any) {
		return status, map[string]any{"error": code, "error_description": desc}
	}
	if s.fail != 0 {
		return oauthErr(s.fail, "temporarily_unavailable", "the test made the server fail")
	}
	if !auth {
		return oauthErr(http.StatusUnauthorized, "invalid_client", "client authentication failed")
	}
	var scope string
	withRefresh := false
	switch grant {
	case "authorization_code":
		c, ok := s.codes[form.Get("code")]
		delete(s.codes, form.Get("code")) // a code works once
		switch {
		case !ok:
			return oauthErr(http.StatusBadRequest, "invalid_grant", "unknown or used code")
		case form.Get("redirect_uri") != c.redirect:
			return oauthErr(http.StatusBadRequest, "invalid_grant", "redirect_uri does not match")
		case form.Get("code_verifier") == "" || oauth2.S256ChallengeFromVerifier(form.Get("code_verifier")) != c.challenge:
			return oauthErr(http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		}
		scope, withRefresh = c.scope, true
	case "refresh_token":
		rt := form.Get("refresh_token")
		if !s.refresh[rt] {
			return oauthErr(http.StatusBadRequest, "invalid_grant", "refresh token is invalid, used or revoked")
		}
		s.refresh[rt] = false // rotation: each refresh token works once
		withRefresh = true
	case "client_credentials":
		scope = form.Get("scope")
	default:
		return oauthErr(http.StatusBadRequest, "unsupported_grant_type", grant)
	}
	at := randomToken("at_")
	s.access[at] = OAuthGrant{Grant: grant, Scope: scope, Audience: form.Get("audience"), Expires: s.now().Add(time.Duration(s.expiresIn) * time.Second)}
	s.issued = append(s.issued, at)
	body := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": s.expiresIn}
	if scope != "" {
		body["scope"] = scope
	}
	if withRefresh {
		rt := randomToken("rt_")
		s.refresh[rt] = true
		s.issued = append(s.issued, rt)
		body["refresh_token"] = rt
	}
	return http.StatusOK, body
}
