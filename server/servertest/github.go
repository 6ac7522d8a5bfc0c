package servertest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// GitHubAPI is a fake GitHub REST API for one GitHub App installation:
// the App endpoints keyhole uses (GET /app/installations/{id}, POST
// /app/installations/{id}/access_tokens, both verifying the App JWT's
// RS256 signature and claims; DELETE /installation/token), and a small
// repository API (GET and POST under /repos/{owner}/{repo}/issues) that
// checks an installation token's repositories and permissions as GitHub
// does. It records what it received.
type GitHubAPI struct {
	*httptest.Server
	AppID, InstallationID int64
	// Account owns the installation.
	Account string
	// Repos are the installation's repositories (names, without owner).
	Repos []string
	// Permissions are the installation's permissions.
	Permissions map[string]string
	key         *rsa.PrivateKey

	mu     sync.Mutex
	now    func() time.Time
	fail   int
	tokens map[string]*InstallationToken
	issued []*InstallationToken // in the order issued
	log    []string             // "METHOD path" of every request
	jwts   []string
}

// InstallationToken is an installation token the fake API issued.
type InstallationToken struct {
	Token        string
	Repositories []string          // names asked for; nil: all of the installation's
	Permissions  map[string]string // as granted
	Expires      time.Time
	Revoked      bool
}

// NewGitHubAPI starts a GitHubAPI with a fresh 2048-bit App key, closed
// when the test ends.
func NewGitHubAPI(t testing.TB, appID, installationID int64, account string, repos []string, perms map[string]string) *GitHubAPI {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	g := &GitHubAPI{AppID: appID, InstallationID: installationID, Account: account, Repos: repos,
		Permissions: perms, key: key, now: time.Now, tokens: map[string]*InstallationToken{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /app/installations/{id}", g.installation)
	mux.HandleFunc("POST /app/installations/{id}/access_tokens", g.accessTokens)
	mux.HandleFunc("DELETE /installation/token", g.revoke)
	mux.HandleFunc("/repos/{owner}/{repo}/issues", g.issues)
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.log = append(g.log, r.Method+" "+r.URL.Path)
		fail := g.fail
		g.mu.Unlock()
		if fail != 0 && strings.HasPrefix(r.URL.Path, "/app/") {
			ghJSON(w, fail, map[string]string{"message": "the test made the server fail"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(g.Close)
	return g
}

// PrivateKeyPEM is the App's private key, as GitHub lets one download it.
func (g *GitHubAPI) PrivateKeyPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(g.key)}))
}

// SetClock makes the server judge JWTs and token expiry by now.
func (g *GitHubAPI) SetClock(now func() time.Time) {
	g.mu.Lock()
	g.now = now
	g.mu.Unlock()
}

// Fail makes the App endpoints answer status (0: work again).
func (g *GitHubAPI) Fail(status int) {
	g.mu.Lock()
	g.fail = status
	g.mu.Unlock()
}

// Log returns "METHOD path" of every request received, oldest first.
func (g *GitHubAPI) Log() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.log)
}

// Tokens returns every installation token issued, oldest first.
func (g *GitHubAPI) Tokens() []InstallationToken {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []InstallationToken
	for _, t := range g.issued {
		out = append(out, *t)
	}
	return out
}

// Issued returns every installation token and App JWT seen or issued:
// the values no agent may ever see.
func (g *GitHubAPI) Issued() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Clone(g.jwts)
	for t := range g.tokens {
		out = append(out, t)
	}
	return out
}

func ghJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// appAuth verifies the App JWT as GitHub does: RS256 by the App's key,
// iss the App id, iat and exp present, exp at most ten minutes after iat,
// and valid now.
func (g *GitHubAPI) appAuth(w http.ResponseWriter, r *http.Request) bool {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	g.mu.Lock()
	now := g.now
	g.jwts = append(g.jwts, raw)
	g.mu.Unlock()
	if !ok {
		ghJSON(w, http.StatusUnauthorized, map[string]string{"message": "A JSON web token could not be decoded"})
		return false
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return &g.key.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(strconv.FormatInt(g.AppID, 10)),
		jwt.WithIssuedAt(), jwt.WithExpirationRequired(), jwt.WithTimeFunc(now))
	if err == nil && (claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 10*time.Minute) {
		err = fmt.Errorf("exp is more than ten minutes after iat")
	}
	if err != nil {
		ghJSON(w, http.StatusUnauthorized, map[string]string{"message": "'Expiration time' claim ('exp') or signature is invalid: " + err.Error()})
		return false
	}
	if r.PathValue("id") != "" && r.PathValue("id") != strconv.FormatInt(g.InstallationID, 10) {
		ghJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return false
	}
	return true
}

func (g *GitHubAPI) installation(w http.ResponseWriter, r *http.Request) {
	if !g.appAuth(w, r) {
		return
	}
	ghJSON(w, http.StatusOK, map[string]any{
		"id": g.InstallationID, "app_id": g.AppID,
		"account":              map[string]any{"login": g.Account, "type": "Organization"},
		"repository_selection": "selected",
		"permissions":          g.Permissions,
	})
}

func (g *GitHubAPI) accessTokens(w http.ResponseWriter, r *http.Request) {
	if !g.appAuth(w, r) {
		return
	}
	var req struct {
		Repositories []string          `json:"repositories"`
		Permissions  map[string]string `json:"permissions"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		ghJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Invalid request"})
		return
	}
	for _, name := range req.Repositories {
		if !slices.Contains(g.Repos, name) {
			ghJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "There is at least one repository that does not exist or is not accessible to the parent installation."})
			return
		}
	}
	perms := req.Permissions
	if len(perms) == 0 {
		perms = g.Permissions // GitHub: no permissions asked is every permission
	}
	rank := map[string]int{"read": 1, "write": 2, "admin": 3}
	for p, l := range perms {
		if rank[l] == 0 || rank[l] > rank[g.Permissions[p]] {
			ghJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "The permissions requested are not granted to this installation."})
			return
		}
	}
	g.mu.Lock()
	tok := &InstallationToken{Token: randomToken("ghs_"), Repositories: req.Repositories, Permissions: perms, Expires: g.now().Add(time.Hour).Truncate(time.Second)}
	g.tokens[tok.Token] = tok
	g.issued = append(g.issued, tok)
	g.mu.Unlock()
	var repos []map[string]string
	names := tok.Repositories
	if names == nil {
		names = g.Repos
	}
	for _, n := range names {
		repos = append(repos, map[string]string{"name": n, "full_name": g.Account + "/" + n})
	}
	ghJSON(w, http.StatusCreated, map[string]any{
		"token": tok.Token, "expires_at": tok.Expires.UTC().Format(time.RFC3339),
		"permissions": perms, "repositories": repos,
	})
}

// tokenOf returns the live installation token r carries.
func (g *GitHubAPI) tokenOf(r *http.Request) (*InstallationToken, bool) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		raw, ok = strings.CutPrefix(r.Header.Get("Authorization"), "token ")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.tokens[raw]
	if !ok || t == nil || t.Revoked || !g.now().Before(t.Expires) {
		return nil, false
	}
	return t, true
}

func (g *GitHubAPI) revoke(w http.ResponseWriter, r *http.Request) {
	t, ok := g.tokenOf(r)
	if !ok {
		ghJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	g.mu.Lock()
	t.Revoked = true
	g.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// issues lists (GET) or opens (POST) issues, if the token reaches the
// repository with the issues permission at the level the method needs.
// The answer echoes the request's Authorization header, as a hostile or
// debugging upstream might.
func (g *GitHubAPI) issues(w http.ResponseWriter, r *http.Request) {
	t, ok := g.tokenOf(r)
	if !ok {
		ghJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	owner, repo := r.PathValue("owner"), r.PathValue("repo")
	reach := strings.EqualFold(owner, g.Account) && slices.Contains(g.Repos, repo) &&
		(t.Repositories == nil || slices.Contains(t.Repositories, repo))
	need := "read"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		need = "write"
	}
	rank := map[string]int{"read": 1, "write": 2, "admin": 3}
	switch {
	case !reach:
		ghJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
	case rank[t.Permissions["issues"]] < rank[need]:
		ghJSON(w, http.StatusForbidden, map[string]string{"message": "Resource not accessible by integration"})
	default:
		ghJSON(w, http.StatusOK, []map[string]any{{"number": 7, "title": "crash on start", "debug_authorization": r.Header.Get("Authorization")}})
	}
}
