// Package servertest holds what the tests of several keyhole packages
// share, as net/http/httptest does for net/http: an upstream that records
// every request, a fake clock, MCP clients over stdio and streamable
// HTTP, tool calls and their text, and checks that no form of a secret
// leaked. It imports no keyhole package, so any package's tests may use
// it, internal tests of tools and server included.
package servertest

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Upstream is an httptest server that records every request it receives
// before its handler answers.
type Upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []Request
}

// Request is one request an Upstream received, as it arrived.
type Request struct {
	Method     string
	Path       string // decoded
	RawPath    string // as escaped on the wire
	Query      string // raw
	RequestURI string
	Header     http.Header
	Body       []byte
}

// NewUpstream starts an Upstream serving h (nil answers "ok"), closed when
// the test ends.
func NewUpstream(t testing.TB, h http.HandlerFunc) *Upstream {
	t.Helper()
	u := &Upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, Request{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			RequestURI: r.RequestURI, Header: r.Header.Clone(), Body: body,
		})
		u.mu.Unlock()
		if h == nil {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "ok")
			return
		}
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// Requests returns every request received so far, oldest first.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Request(nil), u.reqs...)
}

// Clock is a clock that moves only when told to.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// SecretForms are the encodings of s a leak could take: raw, base64
// (standard and URL, padded or not), hex (either case), URL-escaped, and
// the middle of s, in case it was cut.
func SecretForms(s string) []string {
	b := []byte(s)
	forms := []string{
		s,
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		url.QueryEscape(s),
		url.PathEscape(s),
	}
	if len(s) > 16 {
		forms = append(forms, s[4:len(s)-4])
	}
	return forms
}

// AssertNoSecret fails t if text holds any form of any of secrets.
func AssertNoSecret(t testing.TB, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, f := range SecretForms(s) {
			if strings.Contains(text, f) {
				t.Fatalf("%s contains a form of a secret (%.6q…):\n%s", what, f, text)
			}
		}
	}
}

// SyncBuffer is a strings.Builder safe for concurrent writers, such as a
// logger under test.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ReadLines sends each line read from r to out, and closes out at the end
// of r.
func ReadLines(r io.Reader, out chan<- string) {
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			out <- line
		}
		if err != nil {
			close(out)
			return
		}
	}
}

// RaceChildEnv is the environment entry a test gives every child process
// it runs from a binary built with -race: without it each exit sleeps a
// second.
const RaceChildEnv = "GORACE=atexit_sleep_ms=0"
