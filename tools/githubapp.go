package tools

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/sync/singleflight"

	"github.com/keyhole-dev/keyhole/tools/scrub"
)

const (
	// ghRefreshMargin is how long before its expiry an installation
	// token is replaced (GitHub's last an hour).
	ghRefreshMargin = 5 * time.Minute
	// ghJWTLife is how long an App JWT is valid; GitHub accepts at most
	// ten minutes. Its iat is a minute in the past, for clock drift.
	ghJWTLife = 9 * time.Minute
	// ghMaxBody caps a GitHub API answer keyhole reads.
	ghMaxBody = 1 << 20
	// ghKeepJWTs is how many recent App JWTs are scrubbed.
	ghKeepJWTs = 4
	// ghAPIVersion is the REST API version keyhole speaks.
	ghAPIVersion = "2022-11-28"
)

// githubAppSource mints the installation tokens of one github_app tool,
// one per session, limited to what the session's grants reach (see
// githubNeeds), and revokes each when its session ends.
type githubAppSource struct {
	tool         string // the tool's name, for messages
	secret       string // the vault secret's name, for messages
	appID        int64
	installation int64
	api          *url.URL // the API's origin and base path, no trailing slash
	client       *http.Client
	timeout      time.Duration
	now          func() time.Time
	// afterFunc runs f once d has passed (time.AfterFunc); tests inject it.
	afterFunc func(d time.Duration, f func()) (stop func() bool)

	flight singleflight.Group
	mu     sync.Mutex
	tokens map[string]*ghToken // by session id
	back   backoff             // the API's: down, slow, or refusing the App
	jwts   []string            // recent App JWTs, scrubbed
}

var (
	_ minter       = (*githubAppSource)(nil)
	_ SessionEnder = (*httpTool)(nil)
)

// ghToken is one session's installation token.
type ghToken struct {
	fp      [sha256.Size]byte // of the key and the request it was minted with
	token   string
	expires time.Time
	info    CredentialInfo
	back    backoff     // this session's request was refused
	stop    func() bool // the timer that ends the session's tokens at its expiry
}

// scrubValues lists the App's key and every installation token and App
// JWT the tool holds.
func (g *githubAppSource) scrubValues(secret []byte) [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	vals := [][]byte{secret}
	for _, t := range g.tokens {
		vals = append(vals, []byte(t.token))
	}
	for _, j := range g.jwts {
		vals = append(vals, []byte(j))
	}
	return vals
}

func (g *githubAppSource) scrubber(secret []byte) *scrub.Scrubber {
	return scrubberOf(g.scrubValues(secret)...)
}

// token returns the session's installation token, minting one when the
// session has none or its token is about to expire.
func (g *githubAppSource) token(ctx context.Context, secret []byte, env CallEnv) (minted, error) {
	info := CredentialInfo{Kind: CredGitHubApp}
	sess := env.Session
	if sess == nil || sess.ID == "" {
		return minted{}, &ExecError{Msg: fmt.Sprintf("the credential of tool %s is a GitHub App, whose tokens keyhole mints per session; this call has no session", g.tool), Credential: info}
	}
	now := g.now()
	if !now.Before(sess.Expires) {
		return minted{}, &ExecError{Msg: "the session has expired", Credential: info}
	}
	need := githubNeeds(sess.HTTP)
	doc, _ := json.Marshal(need.forPrint())
	h := sha256.New()
	h.Write(secret)
	h.Write([]byte{0})
	h.Write(doc)
	var fp [sha256.Size]byte
	h.Sum(fp[:0])

	g.mu.Lock()
	t := g.tokens[sess.ID]
	if t != nil && t.fp == fp && t.token != "" && now.Before(t.expires.Add(-ghRefreshMargin)) {
		m := minted{token: t.token, info: t.info}
		g.mu.Unlock()
		m.sc = g.scrubber(secret)
		return m, nil
	}
	g.mu.Unlock()
	v, err, _ := g.flight.Do(sess.ID, func() (any, error) {
		return g.mint(secret, sess, need, fp)
	})
	if err != nil {
		return minted{}, err
	}
	return v.(minted), nil
}

// forPrint is the need in a stable JSON form, for fingerprints.
func (n ghNeed) forPrint() any {
	return struct {
		All   bool              `json:"all"`
		Repos []string          `json:"repos"`
		Perms map[string]string `json:"perms"`
		Any   string            `json:"any"`
	}{n.allRepos, n.repos, n.perms, n.anyPerm}
}

// ghError is a failed request to the GitHub API: msg is for the agent,
// detail (scrubbed later) for the audit; global failures (the API down,
// slow, or refusing the App itself) back off for every session.
type ghError struct {
	msg, detail string
	global      bool
}

func (e *ghError) Error() string { return e.msg }

// mint creates the session's token: the App JWT, what the installation
// has, the token limited to the session's need, and a check that GitHub
// gave no more than was asked.
func (g *githubAppSource) mint(secret []byte, sess *CallSession, need ghNeed, fp [sha256.Size]byte) (minted, error) {
	info := CredentialInfo{Kind: CredGitHubApp}
	now := g.now()
	g.mu.Lock()
	old := g.tokens[sess.ID]
	if old != nil && old.fp == fp && old.token != "" && now.Before(old.expires.Add(-ghRefreshMargin)) {
		m := minted{token: old.token, info: old.info}
		g.mu.Unlock()
		m.sc = g.scrubber(secret)
		return m, nil
	}
	if wait, ok := g.back.blocked(now); ok {
		ee := g.back.blockedError("the GitHub App API of tool "+g.tool, wait, info)
		g.mu.Unlock()
		return minted{}, ee
	}
	if old != nil {
		if wait, ok := old.back.blocked(now); ok {
			ee := old.back.blockedError("minting a GitHub App token for this session", wait, info)
			g.mu.Unlock()
			return minted{}, ee
		}
	}
	g.mu.Unlock()

	key, err := jwt.ParseRSAPrivateKeyFromPEM(secret)
	if err != nil {
		return minted{}, &ExecError{
			Msg:        fmt.Sprintf("keyhole cannot use the credential of tool %s; an operator must fix secret %s", g.tool, g.secret),
			Detail:     "secret " + g.secret + " is not a PEM RSA private key (a GitHub App's key)",
			Credential: info,
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	tok, exp, err := g.create(ctx, key, need)
	if err != nil {
		return minted{}, g.failed(ctx, secret, sess.ID, fp, err)
	}
	info.TokenID, info.Expires = tokenID(tok), exp

	g.mu.Lock()
	t := g.tokens[sess.ID]
	if t == nil {
		t = &ghToken{}
		if g.tokens == nil {
			g.tokens = map[string]*ghToken{}
		}
		g.tokens[sess.ID] = t
	}
	if t.stop == nil {
		// The token of a session is revoked when the session expires,
		// even if the broker never says it ended.
		id := sess.ID
		t.stop = g.afterFunc(sess.Expires.Sub(now), func() { _ = g.endSession(context.Background(), id) })
	}
	replaced := t.token
	t.fp, t.token, t.expires, t.info = fp, tok, exp, info
	t.back.ok()
	g.back.ok()
	g.mu.Unlock()
	if replaced != "" {
		g.revoke(ctx, replaced)
	}
	return minted{token: tok, sc: g.scrubber(secret), info: info}, nil
}

// failed records a failed mint and returns the call's error, scrubbed.
func (g *githubAppSource) failed(ctx context.Context, secret []byte, id string, fp [sha256.Size]byte, err error) error {
	var ge *ghError
	if !errors.As(err, &ge) {
		ge = &ghError{msg: fmt.Sprintf("the GitHub App API of tool %s is unreachable", g.tool), detail: err.Error(), global: true}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			ge.msg = fmt.Sprintf("the GitHub App API of tool %s did not answer within %s", g.tool, g.timeout)
		}
	}
	sc := g.scrubber(secret)
	msg, _ := sc.String(ge.msg)
	detail, _ := sc.String(ge.detail)
	now := g.now()
	g.mu.Lock()
	var wait time.Duration
	if ge.global {
		wait = g.back.fail(now, msg, detail)
	} else {
		t := g.tokens[id]
		if t == nil {
			t = &ghToken{fp: fp}
			if g.tokens == nil {
				g.tokens = map[string]*ghToken{}
			}
			g.tokens[id] = t
		}
		wait = t.back.fail(now, msg, detail)
	}
	g.mu.Unlock()
	return &ExecError{Msg: fmt.Sprintf("%s; keyhole tries again in %s", msg, roundWait(wait)), Detail: detail, Credential: CredentialInfo{Kind: CredGitHubApp}}
}

// appJWT signs the App's JWT (RS256): issued a minute ago, for
// ghJWTLife, by the App's id.
func (g *githubAppSource) appJWT(key *rsa.PrivateKey) (string, error) {
	now := g.now()
	claims := jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(g.appID, 10),
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(ghJWTLife)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("tools: signing the GitHub App JWT: %w", err)
	}
	g.mu.Lock()
	g.jwts = append(g.jwts, s)
	if len(g.jwts) > ghKeepJWTs {
		g.jwts = g.jwts[len(g.jwts)-ghKeepJWTs:]
	}
	g.mu.Unlock()
	return s, nil
}

// create asks GitHub for an installation token for need, and checks what
// came back.
func (g *githubAppSource) create(ctx context.Context, key *rsa.PrivateKey, need ghNeed) (string, time.Time, error) {
	appJWT, err := g.appJWT(key)
	if err != nil {
		return "", time.Time{}, err
	}
	var inst ghInstallation
	if err := g.call(ctx, http.MethodGet, fmt.Sprintf("/app/installations/%d", g.installation), appJWT, nil, http.StatusOK, &inst); err != nil {
		return "", time.Time{}, err
	}
	req, foreign := need.request(inst)
	if !need.allRepos && len(need.repos) > 0 && len(req.Repositories) == 0 {
		return "", time.Time{}, &ghError{
			msg: fmt.Sprintf("the scope grants repositories (%s) that installation %d of tool %s cannot reach: it belongs to %s; an operator must fix installation_id or the scope",
				strings.Join(foreign, ", "), g.installation, g.tool, inst.Account.Login),
		}
	}
	var out struct {
		Token        string            `json:"token"`
		ExpiresAt    time.Time         `json:"expires_at"`
		Permissions  map[string]string `json:"permissions"`
		Repositories []struct {
			Name string `json:"name"`
		} `json:"repositories"`
	}
	body, _ := json.Marshal(req)
	if err := g.call(ctx, http.MethodPost, fmt.Sprintf("/app/installations/%d/access_tokens", g.installation), appJWT, body, http.StatusCreated, &out); err != nil {
		return "", time.Time{}, err
	}
	if out.Token == "" || !httpguts.ValidHeaderFieldValue(out.Token) || strings.ContainsAny(out.Token, " \t") || out.ExpiresAt.IsZero() {
		return "", time.Time{}, &ghError{msg: fmt.Sprintf("the GitHub App API of tool %s returned no usable installation token", g.tool), global: true}
	}
	if wider := g.wider(req, out.Permissions, out.Repositories); wider != "" {
		// Never use a token wider than asked for: revoke it at once.
		g.revoke(ctx, out.Token)
		return "", time.Time{}, &ghError{msg: fmt.Sprintf("the GitHub App API of tool %s returned a token wider than keyhole asked for (%s); keyhole revoked it", g.tool, wider)}
	}
	return out.Token, out.ExpiresAt, nil
}

// wider says what of a returned token exceeds the request, or "".
func (g *githubAppSource) wider(req ghRequest, perms map[string]string, repos []struct {
	Name string `json:"name"`
}) string {
	for p, l := range perms {
		if ghRank(l) > ghRank(req.Permissions[p]) {
			return "permission " + p + ": " + l
		}
	}
	if len(req.Repositories) > 0 {
		for _, r := range repos {
			found := false
			for _, want := range req.Repositories {
				found = found || strings.EqualFold(want, r.Name)
			}
			if !found {
				return "repository " + r.Name
			}
		}
	}
	return ""
}

// call makes one GitHub API request with a bearer token and decodes a
// JSON answer of status want into out.
func (g *githubAppSource) call(ctx context.Context, method, path, bearer string, body []byte, want int, out any) error {
	u := *g.api
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", ghAPIVersion)
	req.Header.Set("User-Agent", "keyhole")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, ghMaxBody))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &e)
		ge := &ghError{
			msg:    fmt.Sprintf("the GitHub App API of tool %s answered %s %s with %s", g.tool, method, path, resp.Status),
			detail: fmt.Sprintf("%s %s: %s: %.512s", method, path, resp.Status, e.Message),
			// The API down or refusing the App's JWT affects every
			// session; a refused request (a repository the
			// installation lacks, 422) only this one.
			global: resp.StatusCode >= 500 || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusTooManyRequests,
		}
		if e.Message != "" {
			ge.msg += fmt.Sprintf(" (%.200s)", e.Message)
		}
		return ge
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return &ghError{msg: fmt.Sprintf("the GitHub App API of tool %s answered %s %s with something that is not the expected JSON", g.tool, method, path), global: true}
		}
	}
	return nil
}

// revoke revokes an installation token (DELETE /installation/token);
// a failure leaves it to expire within the hour.
func (g *githubAppSource) revoke(ctx context.Context, tok string) error {
	return g.call(ctx, http.MethodDelete, "/installation/token", tok, nil, http.StatusNoContent, nil)
}

// endSession revokes and forgets the session's token.
func (g *githubAppSource) endSession(ctx context.Context, id string) error {
	g.mu.Lock()
	t := g.tokens[id]
	delete(g.tokens, id)
	g.mu.Unlock()
	if t == nil {
		return nil
	}
	if t.stop != nil {
		t.stop()
	}
	if t.token == "" || !g.now().Before(t.expires) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if err := g.revoke(ctx, t.token); err != nil {
		msg, _ := scrubberOf([]byte(t.token)).String(err.Error())
		return fmt.Errorf("tools: revoking the installation token of tool %s for session %s: %s", g.tool, id, msg)
	}
	return nil
}

// EndSession implements SessionEnder: a github_app tool revokes the
// session's installation token.
func (t *httpTool) EndSession(ctx context.Context, id string) error {
	if g, ok := t.mint.(*githubAppSource); ok {
		return g.endSession(ctx, id)
	}
	return nil
}
