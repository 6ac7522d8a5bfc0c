package tools

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"

	"golang.org/x/oauth2"
)

// ErrNoLogin is returned by StartLogin for a tool whose credential is not
// authorized by a person (every tool but oauth2 with flow
// authorization_code).
var ErrNoLogin = errors.New("tools: the tool's credential has no login (only inject: oauth2 with flow: authorization_code has)")

// Loginer is a Tool whose credential a person authorizes in a browser:
// an oauth2 tool with flow authorization_code. `keyhole secret login`
// drives it.
type Loginer interface {
	// StartLogin begins a login for the tool's secret (which holds the
	// client id and secret) that returns the browser to redirectURL, a
	// loopback http URL (RFC 8252). It returns ErrNoLogin for a tool
	// without one.
	StartLogin(secret []byte, redirectURL string) (*Login, error)
	// LoginNeeded reports whether the tool needs a login before its
	// first call: it has one, and secret holds no refresh token yet.
	LoginNeeded(secret []byte) bool
}

var _ Loginer = (*httpTool)(nil)

// Login is one OAuth 2.0 authorization-code login with PKCE (RFC 7636)
// in progress: a person opens URL, the authorization server sends the
// browser back to the redirect URL with a code and State, and Finish
// exchanges the code.
type Login struct {
	// URL is where a person authorizes keyhole.
	URL string
	// State is the state parameter the redirect must carry back.
	State    string
	verifier string
	redirect string
	src      *oauth2Source
}

// StartLogin implements Loginer.
func (t *httpTool) StartLogin(secret []byte, redirectURL string) (*Login, error) {
	src, ok := t.mint.(*oauth2Source)
	if !ok || src.set.flow != flowAuthorizationCode {
		return nil, ErrNoLogin
	}
	if err := checkRedirect(redirectURL); err != nil {
		return nil, err
	}
	creds, err := parseOAuth2Secret(secret)
	if err != nil {
		return nil, err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("tools: login state: %w", err)
	}
	state := base64.RawURLEncoding.EncodeToString(b[:])
	verifier := oauth2.GenerateVerifier()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.AccessTypeOffline}
	if src.set.audience != "" {
		opts = append(opts, oauth2.SetAuthURLParam("audience", src.set.audience))
	}
	u := src.config(creds, redirectURL).AuthCodeURL(state, opts...)
	return &Login{URL: u, State: state, verifier: verifier, redirect: redirectURL, src: src}, nil
}

// LoginNeeded implements Loginer.
func (t *httpTool) LoginNeeded(secret []byte) bool {
	src, ok := t.mint.(*oauth2Source)
	if !ok || src.set.flow != flowAuthorizationCode {
		return false
	}
	s, err := parseOAuth2Secret(secret)
	return err == nil && s.RefreshToken == ""
}

// checkRedirect accepts a loopback http URL: http://127.0.0.1:PORT/…,
// http://[::1]:PORT/… or http://localhost:PORT/….
func checkRedirect(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Port() == "" || u.Fragment != "" {
		return fmt.Errorf("tools: redirect URL %q must be http://127.0.0.1:PORT/PATH", raw)
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); (err != nil || !a.IsLoopback()) && host != "localhost" {
		return fmt.Errorf("tools: redirect URL %q must be on a loopback address", raw)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return fmt.Errorf("tools: redirect URL %q: %v", raw, err)
	}
	return nil
}

// Finish exchanges the authorization code the redirect brought (with its
// state, checked first) for tokens, through the tool's network client and
// egress rules, and returns the value to store as the secret: secret
// with the new refresh token. The access token it got serves the next
// calls. Errors never hold the secret, the code or a token.
func (l *Login) Finish(ctx context.Context, secret []byte, state, code string) ([]byte, error) {
	if subtle.ConstantTimeCompare([]byte(state), []byte(l.State)) != 1 {
		return nil, errors.New("tools: the redirect's state does not match this login's; start the login again")
	}
	if code == "" {
		return nil, errors.New("tools: the redirect carries no authorization code")
	}
	src := l.src
	creds, err := parseOAuth2Secret(secret)
	if err != nil {
		return nil, err
	}
	sc := scrubberOf(secret, []byte(creds.ClientSecret), []byte(creds.RefreshToken), []byte(code), []byte(l.verifier))
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, src.client), src.timeout)
	defer cancel()
	tok, err := src.config(creds, l.redirect).Exchange(ctx, code, oauth2.VerifierOption(l.verifier))
	if err == nil {
		err = checkAccessToken(tok)
	}
	if err == nil && tok.RefreshToken == "" {
		err = errors.New("the authorization server returned no refresh token; keyhole needs one to renew access tokens (ask the provider for offline access)")
	}
	if err != nil {
		if tok != nil {
			sc = scrubberOf(secret, []byte(creds.ClientSecret), []byte(code), []byte(l.verifier), []byte(tok.AccessToken), []byte(tok.RefreshToken))
		}
		msg, _ := sc.String(err.Error())
		return nil, fmt.Errorf("tools: exchanging the authorization code of tool %s failed: %s", src.tool, msg)
	}
	creds.RefreshToken = tok.RefreshToken
	next := creds.encode()

	refreshAt, exp := tokenTimes(tok, src.now())
	st := src.state
	st.mu.Lock()
	st.adopt(next, creds)
	st.derive(tok.AccessToken)
	st.tok, st.expiry, st.tokExp = tok.AccessToken, refreshAt, exp
	st.mu.Unlock()
	return next, nil
}
