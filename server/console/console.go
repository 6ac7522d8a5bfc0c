// Package console is keyhole's browser console: the broker's sessions,
// its audit log, the access requests waiting for a person, post-mortems,
// blast radius, secrets (never a value) and the config in plain words,
// served by the broker on `keyhole serve --ui ADDR`.
//
// It shows what other packages compute: the audit (server/audit), access
// requests (server/access, whose Manager alone approves and denies), the
// post-mortem and the blast radius (server/report, from the same sources
// as `keyhole report`), the sessions and the vault's metadata through the
// small interfaces below, which the broker satisfies. It computes no
// decision of its own.
//
// # Signing in
//
// A person runs `keyhole ui` (only the broker's own OS user can reach its
// socket), which asks the broker for a login link: a random token, valid
// for LoginTTL and usable once. The console exchanges it for a cookie
// (HttpOnly, SameSite=Strict, Secure under TLS) naming a console session
// that ends after IdleTimeout without a request, after MaxLifetime, or at
// logout. Every state change is a POST carrying the session's CSRF token,
// with no foreign Origin and no cross-site fetch metadata. On a loopback
// listener Host must be a loopback name (DNS rebinding). Every answer
// carries a strict Content-Security-Policy (no inline script or style),
// X-Frame-Options: DENY and Referrer-Policy: no-referrer.
//
// # What it shows
//
// Pages are html/template over embedded assets and work without
// JavaScript; a small script (static/console.js) adds the live audit tail
// and live access requests over server-sent events. Every string an agent
// chose (paths, arguments, tool and client names, labels, reasons) goes
// through html/template's escaping, with control, bidirectional and
// invisible characters shown as escapes, so it renders as inert text.
// Audit pages read by seq (keyset paging), never counting the table.
package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/vault"
)

// Defaults of Options.
const (
	// LoginTTL is how long a login link stays usable.
	LoginTTL = 2 * time.Minute
	// DefaultIdleTimeout ends a console session after this long without a
	// request.
	DefaultIdleTimeout = 30 * time.Minute
	// MaxLifetime ends a console session this long after it signed in,
	// however busy.
	MaxLifetime = 12 * time.Hour
)

// Sessions is what the console asks of the broker's agent sessions.
type Sessions interface {
	// List returns the active sessions, or with all every stored one,
	// oldest first.
	List(all bool) ([]policy.SessionInfo, error)
	// Show returns one session, or an error wrapping
	// sessions.ErrNotFound.
	Show(id string) (policy.SessionInfo, error)
	// Revoke revokes one session, as `keyhole session revoke ID` does,
	// naming by as who revoked it; its next call is refused and its
	// access requests end.
	Revoke(id, by string) error
}

// Access is the broker's access requests: an access.Manager bound to the
// broker's sessions. Approve and Deny are the Manager's own, so an answer
// given in the console is recorded and bound exactly as one given with
// `keyhole access approve`.
type Access interface {
	List(all bool) []access.Request
	Show(id string) (access.Request, error)
	Approve(id, by, note string, forSession bool) (access.Request, error)
	Deny(id, by, note string) (access.Request, error)
	// Watch returns every step from now on, until stop is called or the
	// broker stops (then the channel closes).
	Watch() (events <-chan access.Event, stop func())
}

// Options configures a Console.
type Options struct {
	// Audit is the broker's audit log.
	Audit *audit.Log
	// Sessions are the broker's agent sessions.
	Sessions Sessions
	// Access holds the access requests; nil when the broker holds none.
	Access Access
	// Secrets lists the vault's secrets: names and metadata, never a
	// value.
	Secrets func() ([]vault.Meta, error)
	// Config returns the config new sessions start with.
	Config func() *config.Loaded
	// BaseURL is the console's own origin as people open it
	// (http://127.0.0.1:7778): login links start with it, and a state
	// change must come from it.
	BaseURL string
	// Loopback says the listener is on a loopback address: Host must then
	// name a loopback host.
	Loopback bool
	// Operator names the person behind the broker's socket ("os:alice"):
	// decisions made in the console name the console session and them.
	Operator string
	// IdleTimeout ends a console session without a request; 0 is
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Now is the console's clock; nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Console serves the browser console. Its methods are safe for concurrent
// use.
type Console struct {
	o       Options
	origin  *url.URL
	secure  bool // served over TLS: cookies are Secure
	logins  *logins
	auth    *consoleSessions
	pages   *pages
	verify  *verifier
	started time.Time
	// window is how many seqs a page of an unindexed filter looks
	// through (scanWindow).
	window uint64

	// done ends the event streams when the broker stops.
	done      chan struct{}
	closeOnce sync.Once
	streams   chan struct{} // a slot per open event stream
}

// maxStreams caps the event streams open at once, over every console
// session.
const maxStreams = 32

// New returns a console over o.
func New(o Options) (*Console, error) {
	if o.Audit == nil || o.Sessions == nil || o.Secrets == nil || o.Config == nil {
		return nil, errors.New("console: the audit log, sessions, secrets and config are required")
	}
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("console: base URL %q: want http(s)://host:port", o.BaseURL)
	}
	u.Path = ""
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Operator == "" {
		o.Operator = "os:unknown"
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{
		o: o, origin: u, secure: u.Scheme == "https",
		logins:  newLogins(o.Now),
		auth:    newConsoleSessions(o.Now, o.IdleTimeout),
		pages:   p,
		verify:  &verifier{},
		started: o.Now(),
		window:  scanWindow,
		done:    make(chan struct{}),
		streams: make(chan struct{}, maxStreams),
	}
	return c, nil
}

// LoginURL issues a one-time login link, valid for LoginTTL.
func (c *Console) LoginURL() (string, time.Time, error) {
	tok, expires, err := c.logins.issue()
	if err != nil {
		return "", time.Time{}, err
	}
	u := *c.origin
	u.Path = "/ui/login"
	u.RawQuery = url.Values{"t": {tok}}.Encode()
	c.o.Logger.Info("console login link issued", "expires", expires)
	return u.String(), expires, nil
}

// Close ends the console's event streams and a verification in
// progress: a stopping broker calls it so that its HTTP server can shut
// down without waiting for them.
func (c *Console) Close() {
	c.closeOnce.Do(func() { close(c.done) })
	c.verify.wg.Wait()
}

// Handler serves the console: /ui/ and its pages, actions and event
// streams, and the embedded static files.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	mux.Handle("GET /ui/static/", staticHandler())
	mux.HandleFunc("GET /ui/login", c.login)
	mux.HandleFunc("POST /ui/logout", c.signedIn(c.logout))

	mux.HandleFunc("GET /ui/{$}", c.signedIn(c.overview))
	mux.HandleFunc("POST /ui/verify", c.signedIn(c.startVerify))
	mux.HandleFunc("GET /ui/sessions", c.signedIn(c.sessionList))
	mux.HandleFunc("GET /ui/sessions/{id}", c.signedIn(c.sessionPage))
	mux.HandleFunc("POST /ui/sessions/{id}/revoke", c.signedIn(c.revoke))
	mux.HandleFunc("GET /ui/audit", c.signedIn(c.auditList))
	mux.HandleFunc("GET /ui/audit/events", c.signedIn(c.auditEvents))
	mux.HandleFunc("GET /ui/audit/{seq}", c.signedIn(c.auditRecord))
	mux.HandleFunc("GET /ui/access", c.signedIn(c.accessList))
	mux.HandleFunc("GET /ui/access/events", c.signedIn(c.accessEvents))
	mux.HandleFunc("GET /ui/access/{id}", c.signedIn(c.accessPage))
	mux.HandleFunc("POST /ui/access/{id}/approve", c.signedIn(c.approve))
	mux.HandleFunc("POST /ui/access/{id}/deny", c.signedIn(c.deny))
	mux.HandleFunc("GET /ui/blast-radius", c.signedIn(c.blastRadius))
	mux.HandleFunc("GET /ui/secrets", c.signedIn(c.secrets))
	mux.HandleFunc("GET /ui/config", c.signedIn(c.configPage))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "There is no such page in the console.")
	})
	return c.guard(mux)
}

// streamSlot takes a slot for an event stream, or reports that every
// slot is taken.
func (c *Console) streamSlot() (release func(), ok bool) {
	select {
	case c.streams <- struct{}{}:
		return func() { <-c.streams }, true
	default:
		return nil, false
	}
}

// streamContext ends with the request or when the console closes.
func (c *Console) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
