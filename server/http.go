package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

// MaxRequestBytes caps one HTTP request body to /mcp: the same limit as
// one message over stdio.
const MaxRequestBytes = MaxMessageBytes

// Defaults of HTTPOptions.
const (
	// DefaultSessionsPerToken is how many MCP sessions (initialize
	// handshakes) one phantom token may hold open at once.
	DefaultSessionsPerToken = 16
	// DefaultSessionIdleTTL is how long an MCP session may go unused
	// before the broker forgets it.
	DefaultSessionIdleTTL = time.Hour
)

// HTTPOptions configures the streamable HTTP front door.
type HTTPOptions struct {
	// Loopback says the listener is on a loopback address: Host and Origin
	// must then name a loopback host too (DNS-rebinding protection).
	Loopback bool
	// AllowedOrigins are extra Origin values accepted on a loopback listener.
	AllowedOrigins []string
	// SessionsPerToken caps the MCP sessions one phantom token holds; an
	// initialize beyond it closes the token's session used least
	// recently. 0 is DefaultSessionsPerToken.
	SessionsPerToken int
	// SessionIdleTTL forgets an MCP session unused this long. 0 is
	// DefaultSessionIdleTTL.
	SessionIdleTTL time.Duration
	// Health, if set, says whether the broker can serve calls: /healthz
	// answers 503 with its error otherwise (a load balancer's readiness).
	Health func() error
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
// created it, and one token holds at most SessionsPerToken of them.
// Requests refused for their token are recorded as keyhole.auth.failed,
// at most once a minute per source address and reason.
func (b *Broker) HTTPHandler(m *LiveSessions, o HTTPOptions) http.Handler {
	if o.SessionsPerToken <= 0 {
		o.SessionsPerToken = DefaultSessionsPerToken
	}
	if o.SessionIdleTTL <= 0 {
		o.SessionIdleTTL = DefaultSessionIdleTTL
	}
	ids := newBoundIDs(o.SessionsPerToken)
	streamable := mcpserver.NewStreamableHTTPServer(b.mcp(),
		mcpserver.WithEndpointPath("/mcp"),
		mcpserver.WithSessionIdManagerResolver(ids),
		mcpserver.WithSessionIdleTTL(o.SessionIdleTTL),
		mcpserver.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			if a, ok := r.Context().Value(authKey{}).(auth); ok {
				return WithSession(ctx, a.session)
			}
			return ctx
		}),
		mcpserver.WithStreamableHTTPLogger(b.log),
	)
	ids.evict = func(id string) { closeMCPSession(streamable, id) }
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if o.Health != nil {
			if err := o.Health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "unavailable:", err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	g := &guard{broker: b, sessions: m, opts: o, ids: ids, failures: b.authFailures(), next: streamable}
	mux.Handle("/mcp", g)
	return mux
}

// guard is the front door of /mcp: no token in URLs, Host and Origin on
// loopback, a bearer token of a live session (checked before any body is
// read), a capped body, and session ids that belong to the token.
type guard struct {
	broker   *Broker
	sessions *LiveSessions
	opts     HTTPOptions
	ids      *boundIDs
	failures *authFailures
	next     http.Handler
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if tokenInURL(r.URL) {
		refuse(w, http.StatusBadRequest, "tokens are not accepted in URLs; send Authorization: Bearer")
		return
	}
	if g.opts.Loopback {
		if !loopbackHost(r.Host) {
			refuse(w, http.StatusForbidden, "forbidden: Host is not a loopback name")
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && !allowedOrigin(origin, g.opts.AllowedOrigins) {
			refuse(w, http.StatusForbidden, "forbidden: Origin not allowed")
			return
		}
	}
	s, tokenHash, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	ctx := context.WithValue(r.Context(), authKey{}, auth{session: s, tokenHash: tokenHash})
	r = r.WithContext(ctx)
	switch r.Method {
	case http.MethodPost:
		if !readBody(w, r) {
			return
		}
	case http.MethodGet, http.MethodDelete:
		// mcp-go opens an event stream for a GET whatever session id it
		// names; the id must be the token's own, as for POST and DELETE.
		if !mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)) && !g.ids.owns(r.Header.Get(mcpserver.HeaderKeySessionID), tokenHash) {
			refuse(w, http.StatusNotFound, "Invalid session ID")
			return
		}
	}
	g.next.ServeHTTP(w, r)
}

// authenticate finds the live session of the request's bearer token, or
// answers 401 and records the failure. The answer closes the connection
// and reads no body: a client without a token cannot hold the broker by
// promising a large one.
func (g *guard) authenticate(w http.ResponseWriter, r *http.Request) (*Session, string, bool) {
	tok, ok := bearer(r)
	if !ok {
		g.failures.note(r, "missing_token", "no session token (Authorization: Bearer khs_…)", "")
		unauthorized(w, "", "a keyhole session token is required: Authorization: Bearer khs_…")
		return nil, "", false
	}
	s, err := g.sessions.Authenticate(tok)
	if err == nil {
		return s, sessions.Hash(tok), true
	}
	var dead *DeadSessionError
	var mismatch *ConfigMismatchError
	switch {
	case errors.As(err, &mismatch):
		// A live session this broker of a shared store cannot serve: it
		// loaded another keyhole.yaml. 421: another broker can.
		g.failures.note(r, "config_mismatch", mismatch.Error(), mismatch.Session)
		refuse(w, http.StatusMisdirectedRequest, mismatch.Error())
	case errors.As(err, &dead):
		code := "session_" + string(dead.Info.State)
		g.failures.note(r, code, "token of session "+dead.Info.ID+", which is "+string(dead.Info.State), dead.Info.ID)
		unauthorized(w, dead.Error(), "invalid session token: "+dead.Error())
	case errors.Is(err, ErrSessionDead):
		g.failures.note(r, "session_ended", err.Error(), "")
		unauthorized(w, err.Error(), "invalid session token: "+err.Error())
	default:
		if !errors.Is(err, sessions.ErrUnknownToken) {
			g.broker.log.Error("authenticate", LogError, err)
		}
		g.failures.note(r, "unknown_token", "a token no session has", "")
		unauthorized(w, "unknown token", "invalid session token: unknown token")
	}
	return nil, "", false
}

// DeadSessionError is a phantom token whose session is no longer active:
// it says why, in words the agent's user can act on.
type DeadSessionError struct {
	Info policy.SessionInfo
}

func (e *DeadSessionError) Error() string { return e.Info.DeadReason() }

// Unwrap makes a DeadSessionError an ErrSessionDead.
func (e *DeadSessionError) Unwrap() error { return ErrSessionDead }

func unauthorized(w http.ResponseWriter, desc, msg string) {
	if desc == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyhole"`)
	} else {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="keyhole", error="invalid_token", error_description=%q`, headerSafe(desc)))
	}
	refuse(w, http.StatusUnauthorized, msg)
}

// refuse answers a request the front door turns away, and closes the
// connection: what is left of the request's body is never read.
func refuse(w http.ResponseWriter, status int, msg string) {
	dropBody(w)
	http.Error(w, msg, status)
}

// dropBody makes the connection close after the answer without reading
// what is left of the request's body. net/http would otherwise read up
// to 256 KiB of it after the handler, waiting on a client that promised a
// body and never sends it; a read deadline in the past ends that wait.
func dropBody(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// headerSafe keeps a text printable ASCII, for a header's quoted string.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, s)
}

// readBody reads a POST's body whole, up to MaxRequestBytes. A larger one
// gets 413 with a JSON-RPC error naming the limit, and the connection is
// closed without reading the rest; the client's MCP session goes on.
func readBody(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength > MaxRequestBytes {
		tooLarge(w, r.ContentLength)
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	if err != nil {
		refuse(w, http.StatusBadRequest, "could not read the request body")
		return false
	}
	if len(body) > MaxRequestBytes {
		tooLarge(w, -1)
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return true
}

func tooLarge(w http.ResponseWriter, size int64) {
	dropBody(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	json.NewEncoder(w).Encode(mcp.NewJSONRPCError(mcp.NewRequestId(nil), mcp.INVALID_REQUEST, TooLargeMessage(size), map[string]int{"limit": MaxMessageBytes}))
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
