package tools

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"

	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// OAuth 2.0 flows an oauth2 credential can use.
const (
	flowClientCredentials = "client_credentials"
	flowAuthorizationCode = "authorization_code"
)

const (
	// oauth2RefreshMargin is how long before its expiry an access token is
	// replaced, so no call leaves with a token about to lapse.
	oauth2RefreshMargin = 30 * time.Second
	// oauth2NoExpiry is how long an access token that came without
	// expires_in is used before keyhole asks for a new one.
	oauth2NoExpiry = time.Hour
	// oauth2MaxSecretBytes caps the secret parsed as OAuth 2.0 client
	// credentials.
	oauth2MaxSecretBytes = 64 << 10
	// oauth2KeepDerived is how many access and refresh tokens of one
	// secret are remembered for scrubbing after they were replaced: a
	// response that echoes the token a call sent is scrubbed even when
	// another call replaced it meanwhile.
	oauth2KeepDerived = 8
)

// ErrOAuth2Secret is returned (wrapped) when an oauth2 secret is not the
// JSON object {"client_id", "client_secret"?, "refresh_token"?}. The
// wrapping error says what is wrong and never quotes the secret.
var ErrOAuth2Secret = errors.New(`tools: oauth2 secret must be JSON {"client_id": ..., "client_secret": ..., "refresh_token"?: ...}`)

// oauth2Secret is the JSON of an oauth2 secret in the vault.
type oauth2Secret struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// parseOAuth2Secret decodes an oauth2 secret. Errors wrap ErrOAuth2Secret
// and never quote the secret (a decoder error would).
func parseOAuth2Secret(secret []byte) (oauth2Secret, error) {
	bad := func(reason string) (oauth2Secret, error) {
		return oauth2Secret{}, fmt.Errorf("%w: %s", ErrOAuth2Secret, reason)
	}
	if len(secret) > oauth2MaxSecretBytes {
		return bad("it is larger than 64 KiB")
	}
	dec := json.NewDecoder(bytes.NewReader(secret))
	dec.DisallowUnknownFields()
	var s oauth2Secret
	if err := dec.Decode(&s); err != nil {
		return bad("it is not a JSON object with only those string fields")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("it has data after the JSON object")
	}
	switch {
	case s.ClientID == "":
		return bad("client_id is missing")
	case httpHasControl(s.ClientID) || httpHasControl(s.ClientSecret) || httpHasControl(s.RefreshToken):
		return bad("a field holds control characters")
	}
	return s, nil
}

// encode returns the secret as stored in the vault.
func (s oauth2Secret) encode() []byte {
	b, _ := json.Marshal(s) // a struct of strings cannot fail
	return b
}

// oauth2Settings is a checked oauth2 block.
type oauth2Settings struct {
	flow     string
	tokenURL string
	authURL  string
	scopes   []string
	audience string
}

// key identifies the token state of secret under these settings.
func (s oauth2Settings) key(secret string) string {
	return strings.Join([]string{secret, s.flow, s.tokenURL, s.authURL, strings.Join(s.scopes, " "), s.audience}, "\x00")
}

// Tokens holds the token state of oauth2 tools, one per secret and
// settings, so every tool compiled with the same Env that shares a
// secret refreshes its token once. Make one with NewTokens; it is safe
// for concurrent use.
type Tokens struct {
	mu sync.Mutex
	m  map[string]*oauth2State
}

// NewTokens returns an empty Tokens.
func NewTokens() *Tokens { return &Tokens{m: map[string]*oauth2State{}} }

func (t *Tokens) state(key string) *oauth2State {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.m[key]
	if !ok {
		st = &oauth2State{}
		t.m[key] = st
	}
	return st
}

// oauth2State is what keyhole knows of one oauth2 secret's tokens. The
// vault holds the secret; this holds what was derived from it. A call
// whose secret this state produced or read ("known") uses the state's
// tokens; any other value of the secret (an operator's set, rotate or
// login) starts the state afresh from it.
type oauth2State struct {
	mu     sync.Mutex
	flight singleflight.Group

	known  [][sha256.Size]byte // fingerprints of the values this state read or wrote, newest last
	stored []byte              // the value the vault holds, as far as this state knows
	creds  oauth2Secret        // client and refresh token to use next
	tok    string              // current access token; "" for none
	expiry time.Time           // when tok must be replaced (its expiry less the margin)
	tokExp time.Time           // tok's own expiry, for the audit; zero if unknown
	login  string              // non-empty: the refresh token was refused (why); an operator must log in
	back   backoff
	// derived are the access and refresh tokens this state held, newest
	// last, scrubbed from every call of the secret.
	derived []string
}

func (st *oauth2State) knows(fp [sha256.Size]byte) bool {
	for _, k := range st.known {
		if k == fp {
			return true
		}
	}
	return false
}

// remember adds a value of the secret this state read or wrote.
func (st *oauth2State) remember(value []byte) {
	st.known = append(st.known, sha256.Sum256(value))
	if len(st.known) > oauth2KeepDerived {
		st.known = st.known[len(st.known)-oauth2KeepDerived:]
	}
	st.stored = bytes.Clone(value)
}

// derive remembers a derived value for scrubbing.
func (st *oauth2State) derive(vals ...string) {
	for _, v := range vals {
		if v != "" && (len(st.derived) == 0 || st.derived[len(st.derived)-1] != v) {
			st.derived = append(st.derived, v)
		}
	}
	if len(st.derived) > oauth2KeepDerived {
		st.derived = st.derived[len(st.derived)-oauth2KeepDerived:]
	}
}

// adopt starts the state afresh from a value of the secret it does not
// know: the operator changed it, so its tokens and failures are gone.
func (st *oauth2State) adopt(secret []byte, creds oauth2Secret) {
	st.known = nil
	st.remember(secret)
	st.creds = creds
	st.tok, st.expiry, st.tokExp, st.login = "", time.Time{}, time.Time{}, ""
	st.back.ok()
	st.derive(creds.RefreshToken)
}

// oauth2Source gets the access tokens of one oauth2 tool.
type oauth2Source struct {
	tool    string // the tool's name, for messages
	secret  string // the vault secret's name, for messages
	set     oauth2Settings
	client  *http.Client
	timeout time.Duration
	now     func() time.Time
	state   *oauth2State
}

var _ minter = (*oauth2Source)(nil)

// scrubValues lists every value of an oauth2 secret whose forms must not
// reach the agent: the secret as stored, the client secret, the refresh
// token, and every access and refresh token this tool's state holds or
// held recently. The client id is public (it is in every authorization
// URL) and is not scrubbed.
func (o *oauth2Source) scrubValues(secret []byte) [][]byte {
	vals := [][]byte{secret}
	if s, err := parseOAuth2Secret(secret); err == nil {
		vals = append(vals, []byte(s.ClientSecret), []byte(s.RefreshToken))
	}
	o.state.mu.Lock()
	defer o.state.mu.Unlock()
	vals = append(vals, []byte(o.state.creds.ClientSecret))
	for _, d := range o.state.derived {
		vals = append(vals, []byte(d))
	}
	return vals
}

// info describes the current token for the audit.
func (o *oauth2Source) info(tok string, exp time.Time) CredentialInfo {
	ci := CredentialInfo{Kind: CredOAuth2, Expires: exp}
	if tok != "" {
		ci.TokenID = tokenID(tok)
	}
	return ci
}

// token returns the access token a call sends: the cached one while it
// is fresh, else one fetched from the token endpoint, by one request
// however many calls wait for it. Failures are *ExecError, scrubbed of
// every value of the secret and its tokens.
func (o *oauth2Source) token(ctx context.Context, secret []byte, env CallEnv) (minted, error) {
	creds, err := parseOAuth2Secret(secret)
	if err != nil {
		return minted{}, &ExecError{
			Msg:        fmt.Sprintf("keyhole cannot use the credential of tool %s; an operator must fix secret %s", o.tool, o.secret),
			Detail:     err.Error(),
			Credential: o.info("", time.Time{}),
		}
	}
	st := o.state
	st.mu.Lock()
	if !st.knows(sha256.Sum256(secret)) {
		st.adopt(secret, creds)
	}
	m, err, done := o.cachedLocked()
	st.mu.Unlock()
	if done {
		return m, err
	}
	// Calls that come while a fetch runs wait for it and share its
	// answer. The fetch belongs to no one call: it has its own deadline,
	// so one caller giving up does not fail the others.
	v, err, _ := st.flight.Do("token", func() (any, error) {
		return o.fetch(env)
	})
	if err != nil {
		return minted{}, err
	}
	return v.(minted), nil
}

// cachedLocked answers a call from the state alone when it can: with the
// fresh token, or with the refusal or backoff that is in force. done is
// false when a fetch is needed. st.mu is held.
func (o *oauth2Source) cachedLocked() (minted, error, bool) {
	st := o.state
	now := o.now()
	if st.tok != "" && now.Before(st.expiry) {
		return minted{token: st.tok, sc: o.scrubberLocked(), info: o.info(st.tok, st.tokExp)}, nil, true
	}
	if st.login != "" {
		return minted{}, o.needsLogin(st.login), true
	}
	if wait, ok := st.back.blocked(now); ok {
		return minted{}, st.back.blockedError("the token endpoint of tool "+o.tool, wait, o.info("", time.Time{})), true
	}
	return minted{}, nil, false
}

// scrubberLocked scrubs every value the state knows. st.mu is held.
func (o *oauth2Source) scrubberLocked() *scrub.Scrubber {
	st := o.state
	vals := [][]byte{st.stored, []byte(st.creds.ClientSecret), []byte(st.creds.RefreshToken)}
	for _, d := range st.derived {
		vals = append(vals, []byte(d))
	}
	return scrubberOf(vals...)
}

// needsLogin is the error of a call whose secret needs an operator's login.
func (o *oauth2Source) needsLogin(why string) *ExecError {
	return &ExecError{
		Msg:        fmt.Sprintf("the OAuth 2.0 authorization of tool %s is missing or was refused (%s); an operator must run `keyhole secret login %s`", o.tool, why, o.secret),
		Detail:     "secret " + o.secret + " needs login: " + why,
		Credential: o.info("", time.Time{}),
	}
}

// fetch gets a new access token from the token endpoint: by client
// credentials, or by the refresh token (storing a rotated one in the
// vault before anyone uses the new access token).
func (o *oauth2Source) fetch(env CallEnv) (minted, error) {
	st := o.state
	st.mu.Lock()
	// A fetch that finished just before this one started answers it.
	if m, err, done := o.cachedLocked(); done {
		st.mu.Unlock()
		return m, err
	}
	creds, stored := st.creds, bytes.Clone(st.stored)
	st.mu.Unlock()

	if o.set.flow == flowAuthorizationCode && creds.RefreshToken == "" {
		return o.refused(env, "nobody has logged in yet")
	}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), oauth2.HTTPClient, o.client), o.timeout)
	defer cancel()
	tok, err := o.request(ctx, creds)
	if err == nil {
		err = checkAccessToken(tok)
	}
	if err != nil {
		return o.failed(ctx, env, creds, err)
	}

	refreshAt, exp := tokenTimes(tok, o.now())

	st.mu.Lock()
	st.derive(tok.AccessToken, tok.RefreshToken)
	st.tok, st.expiry, st.tokExp = tok.AccessToken, refreshAt, exp
	st.back.ok()
	var rotated []byte
	if o.set.flow == flowAuthorizationCode && tok.RefreshToken != "" && tok.RefreshToken != creds.RefreshToken {
		st.creds.RefreshToken = tok.RefreshToken
		next := st.creds
		rotated = next.encode()
		st.remember(rotated)
	}
	m := minted{token: st.tok, sc: o.scrubberLocked(), info: o.info(st.tok, st.tokExp)}
	st.mu.Unlock()
	if rotated != nil && env.Secret != nil {
		// The old refresh token is spent: the new one is stored before
		// any call uses the new access token. A value an operator stored
		// meanwhile wins (Replace refuses), and the next call adopts it.
		_ = env.Secret.Replace(stored, rotated)
	}
	return m, nil
}

// request asks the token endpoint for a token, by the tool's flow. The
// client authenticates with HTTP Basic: x/oauth2's auto-detection would
// send a refused request twice, and a refresh token twice.
func (o *oauth2Source) request(ctx context.Context, creds oauth2Secret) (*oauth2.Token, error) {
	if o.set.flow == flowClientCredentials {
		cc := clientcredentials.Config{
			ClientID:     creds.ClientID,
			ClientSecret: creds.ClientSecret,
			TokenURL:     o.set.tokenURL,
			Scopes:       o.set.scopes,
			AuthStyle:    oauth2.AuthStyleInHeader,
		}
		if o.set.audience != "" {
			cc.EndpointParams = map[string][]string{"audience": {o.set.audience}}
		}
		return cc.Token(ctx)
	}
	return o.config(creds, "").TokenSource(ctx, &oauth2.Token{RefreshToken: creds.RefreshToken}).Token()
}

// config is the x/oauth2 config of an authorization_code tool.
func (o *oauth2Source) config(creds oauth2Secret, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     creds.ClientID,
		ClientSecret: creds.ClientSecret,
		Endpoint:     oauth2.Endpoint{AuthURL: o.set.authURL, TokenURL: o.set.tokenURL, AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL:  redirect,
		Scopes:       o.set.scopes,
	}
}

// tokenTimes returns when tok must be replaced and when it expires (zero:
// unknown), by the tool's clock: x/oauth2 dates Expiry by the system
// clock, so only the lifetime the server gave is taken from it.
func tokenTimes(tok *oauth2.Token, now time.Time) (refreshAt, exp time.Time) {
	lifetime := time.Duration(tok.ExpiresIn) * time.Second
	if lifetime <= 0 && !tok.Expiry.IsZero() {
		lifetime = time.Until(tok.Expiry).Round(time.Second)
	}
	if lifetime <= 0 {
		return now.Add(oauth2NoExpiry), time.Time{}
	}
	exp = now.Add(lifetime)
	return exp.Add(-min(oauth2RefreshMargin, lifetime/2)), exp
}

// checkAccessToken refuses a token keyhole cannot send as a bearer token.
func checkAccessToken(tok *oauth2.Token) error {
	switch {
	case tok == nil || tok.AccessToken == "":
		return errors.New("oauth2: the token endpoint returned no access_token")
	case !strings.EqualFold(tok.Type(), "bearer"):
		return fmt.Errorf("oauth2: the token endpoint returned a token of type %q; keyhole sends bearer tokens only", tok.Type())
	case !httpguts.ValidHeaderFieldValue(tok.AccessToken) || strings.ContainsAny(tok.AccessToken, " \t"):
		return errors.New("oauth2: the access token is not a valid header value")
	case httpHasControl(tok.RefreshToken):
		return errors.New("oauth2: the refresh token holds control characters")
	}
	return nil
}

// failed turns a failed token request into the call's error: a refused
// refresh token makes the secret need a login; anything else starts (or
// lengthens) the endpoint's backoff.
func (o *oauth2Source) failed(ctx context.Context, env CallEnv, creds oauth2Secret, err error) (minted, error) {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && o.set.flow == flowAuthorizationCode && re.ErrorCode == "invalid_grant" {
		return o.refused(env, "the authorization server refused the refresh token (invalid_grant)")
	}
	st := o.state
	st.mu.Lock()
	sc := o.scrubberLocked()
	st.mu.Unlock()
	detail, _ := sc.String(err.Error())
	var msg string
	var ne net.Error
	switch {
	case re != nil && re.Response != nil && re.Response.StatusCode >= 500:
		msg = fmt.Sprintf("the token endpoint of tool %s answered %s", o.tool, re.Response.Status)
	case re != nil && re.ErrorCode != "":
		code, _ := sc.String(re.ErrorCode)
		msg = fmt.Sprintf("the token endpoint of tool %s refused keyhole's request (%.64s); an operator must check secret %s and the tool's oauth2 settings", o.tool, code, o.secret)
	case re != nil && re.Response != nil:
		msg = fmt.Sprintf("the token endpoint of tool %s answered %s", o.tool, re.Response.Status)
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		msg = fmt.Sprintf("the token endpoint of tool %s did not answer within %s", o.tool, o.timeout)
	default:
		msg = fmt.Sprintf("the token endpoint of tool %s is unreachable", o.tool)
	}
	msg, _ = sc.String(msg)
	st.mu.Lock()
	wait := st.back.fail(o.now(), msg, detail)
	st.mu.Unlock()
	return minted{}, &ExecError{
		Msg:        fmt.Sprintf("%s; keyhole tries again in %s", msg, roundWait(wait)),
		Detail:     detail,
		Credential: o.info("", time.Time{}),
	}
}

// refused marks the secret as needing a login, in the state (so calls
// fail at once) and in the vault (so `keyhole secret list` shows it).
func (o *oauth2Source) refused(env CallEnv, why string) (minted, error) {
	st := o.state
	st.mu.Lock()
	st.login = why
	st.tok = ""
	st.mu.Unlock()
	if env.Secret != nil {
		_ = env.Secret.SetStatus(StatusNeedsLogin + ": " + why)
	}
	return minted{}, o.needsLogin(why)
}
