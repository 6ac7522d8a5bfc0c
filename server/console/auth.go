package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Signing in: one-time login links, console sessions and their cookie,
// and the CSRF token of every state change.

// maxPendingLogins caps the login links waiting to be used; the oldest
// goes first.
const maxPendingLogins = 16

// maxConsoleSessions caps the console sessions signed in at once; the
// one idle longest goes first.
const maxConsoleSessions = 64

// maxFormBytes caps a form a state change posts.
const maxFormBytes = 64 << 10

// logins are the login links issued and not yet used, by the SHA-256 of
// their token: the token itself is kept only by whoever asked for it.
type logins struct {
	now     func() time.Time
	mu      sync.Mutex
	pending map[[32]byte]time.Time // token hash -> expiry
}

func newLogins(now func() time.Time) *logins {
	return &logins{now: now, pending: map[[32]byte]time.Time{}}
}

// issue returns a new login token and when it expires.
func (l *logins) issue() (string, time.Time, error) {
	tok, err := randomToken(32)
	if err != nil {
		return "", time.Time{}, err
	}
	now := l.now()
	expires := now.Add(LoginTTL)
	l.mu.Lock()
	defer l.mu.Unlock()
	for h, exp := range l.pending {
		if !now.Before(exp) {
			delete(l.pending, h)
		}
	}
	for len(l.pending) >= maxPendingLogins {
		var oldest [32]byte
		first := true
		for h, exp := range l.pending {
			if first || exp.Before(l.pending[oldest]) {
				oldest, first = h, false
			}
		}
		delete(l.pending, oldest)
	}
	l.pending[sha256.Sum256([]byte(tok))] = expires
	return tok, expires, nil
}

// redeem uses a login token: true once for a token issued less than
// LoginTTL ago, false ever after.
func (l *logins) redeem(tok string) bool {
	if tok == "" || len(tok) > 128 {
		return false
	}
	h := sha256.Sum256([]byte(tok))
	l.mu.Lock()
	defer l.mu.Unlock()
	exp, ok := l.pending[h]
	delete(l.pending, h)
	return ok && l.now().Before(exp)
}

// consoleSession is one signed-in browser.
type consoleSession struct {
	// ID names the session in the audit ("con_…"); it is not a secret.
	ID string
	// CSRF is the token every state change of the session carries.
	CSRF     string
	Created  time.Time
	LastSeen time.Time
}

// consoleSessions are the signed-in browsers, by the SHA-256 of their
// cookie.
type consoleSessions struct {
	now  func() time.Time
	idle time.Duration
	mu   sync.Mutex
	all  map[[32]byte]*consoleSession
}

func newConsoleSessions(now func() time.Time, idle time.Duration) *consoleSessions {
	return &consoleSessions{now: now, idle: idle, all: map[[32]byte]*consoleSession{}}
}

// create signs a browser in: it returns the cookie value and the session.
func (cs *consoleSessions) create() (string, consoleSession, error) {
	cookie, err := randomToken(32)
	if err != nil {
		return "", consoleSession{}, err
	}
	csrf, err := randomToken(32)
	if err != nil {
		return "", consoleSession{}, err
	}
	var idb [10]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", consoleSession{}, err
	}
	now := cs.now()
	s := &consoleSession{
		ID:   "con_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(idb[:])),
		CSRF: csrf, Created: now, LastSeen: now,
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for h, old := range cs.all {
		if !cs.liveLocked(old, now) {
			delete(cs.all, h)
		}
	}
	for len(cs.all) >= maxConsoleSessions {
		var idlest [32]byte
		var seen *consoleSession
		for h, old := range cs.all {
			if seen == nil || old.LastSeen.Before(seen.LastSeen) {
				idlest, seen = h, old
			}
		}
		delete(cs.all, idlest)
	}
	cs.all[sha256.Sum256([]byte(cookie))] = s
	return cookie, *s, nil
}

func (cs *consoleSessions) liveLocked(s *consoleSession, now time.Time) bool {
	return now.Sub(s.LastSeen) < cs.idle && now.Sub(s.Created) < MaxLifetime
}

// touch returns the live session a cookie names and notes the request; a
// session past its idle timeout or lifetime is ended.
func (cs *consoleSessions) touch(cookie string) (consoleSession, bool) {
	if cookie == "" || len(cookie) > 128 {
		return consoleSession{}, false
	}
	h := sha256.Sum256([]byte(cookie))
	now := cs.now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s, ok := cs.all[h]
	if !ok {
		return consoleSession{}, false
	}
	if !cs.liveLocked(s, now) {
		delete(cs.all, h)
		return consoleSession{}, false
	}
	s.LastSeen = now
	return *s, true
}

// end signs a browser out.
func (cs *consoleSessions) end(cookie string) {
	h := sha256.Sum256([]byte(cookie))
	cs.mu.Lock()
	delete(cs.all, h)
	cs.mu.Unlock()
}

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", errors.New("console: no randomness")
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// cookieName is the session cookie's name: under TLS with the __Host-
// prefix, which the browser keeps to this host, path / and Secure.
func (c *Console) cookieName() string {
	if c.secure {
		return "__Host-keyhole_console"
	}
	return "keyhole_console"
}

func (c *Console) setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: c.cookieName(), Value: value, Path: "/",
		MaxAge: maxAge, HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteStrictMode,
	})
}

// session returns the console session of the request's cookie.
func (c *Console) session(r *http.Request) (consoleSession, string, bool) {
	ck, err := r.Cookie(c.cookieName())
	if err != nil {
		return consoleSession{}, "", false
	}
	s, ok := c.auth.touch(ck.Value)
	return s, ck.Value, ok
}

// handlerFunc is a page or action of a signed-in console session.
type handlerFunc func(w http.ResponseWriter, r *http.Request, s consoleSession)

// signedIn serves h to a signed-in browser only. A POST must also carry
// the session's CSRF token in its form.
func (c *Console) signedIn(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, _, ok := c.session(r)
		if !ok {
			if r.Method != http.MethodGet {
				c.fail(w, r, http.StatusForbidden, "You are not signed in (or your console session ended). Nothing was changed. Run keyhole ui for a sign-in link.")
				return
			}
			c.signedOut(w, r, http.StatusUnauthorized, "You are not signed in, or your console session ended.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				c.fail(w, r, http.StatusBadRequest, "The form could not be read. Nothing was changed.")
				return
			}
			got := r.PostForm.Get("csrf")
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
				c.o.Logger.Warn("console: a state change without its CSRF token was refused", "console_session", s.ID, "path", r.URL.Path)
				c.fail(w, r, http.StatusForbidden, "This form is stale or did not come from this console (its CSRF token is missing or wrong). Nothing was changed; reload the page and try again.")
				return
			}
		}
		h(w, r, s)
	}
}

// login exchanges a login link's token for a console session.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !c.logins.redeem(r.URL.Query().Get("t")) {
		c.o.Logger.Warn("console: a login link was refused (unknown, used or expired)")
		c.signedOut(w, r, http.StatusForbidden, "This sign-in link is not valid: links work once, for two minutes.")
		return
	}
	cookie, s, err := c.auth.create()
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	c.o.Logger.Info("console: signed in", "console_session", s.ID, "operator", c.o.Operator)
	c.setCookie(w, cookie, int(MaxLifetime/time.Second))
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// logout ends the console session.
func (c *Console) logout(w http.ResponseWriter, r *http.Request, s consoleSession) {
	if _, cookie, ok := c.session(r); ok {
		c.auth.end(cookie)
	}
	c.setCookie(w, "", -1)
	c.o.Logger.Info("console: signed out", "console_session", s.ID)
	c.signedOut(w, r, http.StatusOK, "You are signed out.")
}

// decider names who decides in the console: the console session, and
// the person the broker's socket admits.
func (c *Console) decider(s consoleSession) string {
	return "console:" + s.ID + " (" + c.o.Operator + ")"
}
