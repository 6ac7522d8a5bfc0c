package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/keyhole-dev/keyhole/server/sessions"
)

// MaxRequestBytes caps one HTTP request body to /mcp.
const MaxRequestBytes = 4 << 20

// HTTPOptions configures the streamable HTTP front door.
type HTTPOptions struct {
	// Loopback says the listener is on a loopback address: Host and Origin
	// must then name a loopback host too (DNS-rebinding protection).
	Loopback bool
	// AllowedOrigins are extra Origin values accepted on a loopback listener.
	AllowedOrigins []string
}

type authKey struct{}

// auth is what the front door learned about a request.
type auth struct {
	session   *Session
	tokenHash string
}

// HTTPHandler serves MCP over streamable HTTP at /mcp for phantom-token
// sessions, and /healthz. Every /mcp request needs `Authorization: Bearer
// khs_…` of a live session; an Mcp-Session-Id belongs to the token that
// created it.
func (b *Broker) HTTPHandler(m *LiveSessions, o HTTPOptions) http.Handler {
	ids := &boundIDs{owner: map[string]string{}, terminated: map[string]bool{}}
	streamable := mcpserver.NewStreamableHTTPServer(b.mcp(),
		mcpserver.WithEndpointPath("/mcp"),
		mcpserver.WithSessionIdManagerResolver(ids),
		mcpserver.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			if a, ok := r.Context().Value(authKey{}).(auth); ok {
				return WithSession(ctx, a.session)
			}
			return ctx
		}),
		mcpserver.WithStreamableHTTPLogger(b.log),
	)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/mcp", b.guard(m, o, streamable))
	return mux
}

// guard is the front door of /mcp: no token in URLs, Host and Origin on
// loopback, a capped body, and a bearer token of a live session.
func (b *Broker) guard(m *LiveSessions, o HTTPOptions, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tokenInURL(r.URL) {
			http.Error(w, "tokens are not accepted in URLs; send Authorization: Bearer", http.StatusBadRequest)
			return
		}
		if o.Loopback {
			if !loopbackHost(r.Host) {
				http.Error(w, "forbidden: Host is not a loopback name", http.StatusForbidden)
				return
			}
			if origin := r.Header.Get("Origin"); origin != "" && !allowedOrigin(origin, o.AllowedOrigins) {
				http.Error(w, "forbidden: Origin not allowed", http.StatusForbidden)
				return
			}
		}
		if r.ContentLength > MaxRequestBytes {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBytes)

		tok, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyhole"`)
			http.Error(w, "a keyhole session token is required: Authorization: Bearer khs_…", http.StatusUnauthorized)
			return
		}
		s, err := m.Authenticate(tok)
		if err != nil {
			desc := "unknown token"
			if errors.Is(err, ErrSessionDead) {
				desc = err.Error()
			} else if !errors.Is(err, sessions.ErrUnknownToken) {
				b.log.Error("authenticate", LogError, err)
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="keyhole", error="invalid_token", error_description=%q`, desc))
			http.Error(w, "invalid session token: "+desc, http.StatusUnauthorized)
			return
		}
		ctx := context.WithValue(r.Context(), authKey{}, auth{session: s, tokenHash: sessions.Hash(tok)})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// tokenInURL reports a token passed in the query string, which proxies and
// logs would keep.
func tokenInURL(u *url.URL) bool {
	if strings.Contains(u.RawQuery, sessions.TokenPrefix) {
		return true
	}
	q := u.Query()
	return q.Has("access_token") || q.Has("token")
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func allowedOrigin(origin string, extra []string) bool {
	for _, o := range extra {
		if origin == o {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return loopbackHost(u.Host)
}

// boundIDs binds each Mcp-Session-Id to the token that created it: another
// token presenting it gets 404, as if it did not exist.
type boundIDs struct {
	mu         sync.Mutex
	owner      map[string]string // mcp session id -> token hash
	terminated map[string]bool
}

// ResolveSessionIdManager implements mcpserver.SessionIdManagerResolver.
func (b *boundIDs) ResolveSessionIdManager(r *http.Request) mcpserver.SessionIdManager {
	m := &tokenIDs{ids: b}
	if r != nil {
		if a, ok := r.Context().Value(authKey{}).(auth); ok {
			m.tokenHash = a.tokenHash
		}
	}
	return m
}

type tokenIDs struct {
	ids       *boundIDs
	tokenHash string
}

var errForeignSession = errors.New("unknown session id")

func (t *tokenIDs) Generate() string {
	var b [16]byte
	rand.Read(b[:])
	id := "mcp-" + hex.EncodeToString(b[:])
	t.ids.mu.Lock()
	t.ids.owner[id] = t.tokenHash
	t.ids.mu.Unlock()
	return id
}

func (t *tokenIDs) Validate(id string) (bool, error) {
	t.ids.mu.Lock()
	defer t.ids.mu.Unlock()
	owner, ok := t.ids.owner[id]
	if !ok || t.tokenHash == "" || owner != t.tokenHash {
		return false, errForeignSession
	}
	return t.ids.terminated[id], nil
}

func (t *tokenIDs) Terminate(id string) (bool, error) {
	t.ids.mu.Lock()
	defer t.ids.mu.Unlock()
	owner, ok := t.ids.owner[id]
	if !ok || owner != t.tokenHash {
		return false, errForeignSession
	}
	t.ids.terminated[id] = true
	return false, nil
}
