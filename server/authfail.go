package server

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
)

// authFailWindow is how often one source address and reason may write a
// keyhole.auth.failed record; the requests in between are counted.
const authFailWindow = time.Minute

// maxAuthFailKeys bounds the (source, reason) pairs counted at once; a
// flood from more sources than this is counted under the source "*".
const maxAuthFailKeys = 1024

// authFailures records requests the front door refused for their token
// (missing, unknown, or of a session that is revoked, expired or ended)
// as keyhole.auth.failed, naming the source address and the reason, never
// the token. The first failure of a source and reason is written at once;
// the ones that follow within authFailWindow are counted and written as
// one record (Count) when the window closes, so a flood cannot grow the
// log without bound, and the map is emptied as windows close.
type authFailures struct {
	log AuditLog
	now func() time.Time

	mu   sync.Mutex
	open map[authFailKey]*authFailWindowState
}

type authFailKey struct{ source, reason string }

type authFailWindowState struct {
	start      time.Time
	suppressed int
	desc       string
	session    string
}

// authFailures returns the broker's auth failure recorder.
func (b *Broker) authFailures() *authFailures {
	b.authFailOnce.Do(func() {
		b.authFail = &authFailures{log: b.audit, now: b.now, open: map[authFailKey]*authFailWindowState{}}
	})
	return b.authFail
}

// FlushAuthFailures writes the count of every keyhole.auth.failed window
// that has closed. The broker calls it every second and when it stops.
func (b *Broker) FlushAuthFailures(all bool) { b.authFailures().flush(all) }

// note counts one refused request. session, if known, is the session the
// token belonged to.
func (f *authFailures) note(r *http.Request, reason, desc, session string) {
	k := authFailKey{source: sourceOf(r), reason: reason}
	now := f.now()
	f.mu.Lock()
	w, ok := f.open[k]
	if !ok && len(f.open) >= maxAuthFailKeys {
		k.source = "*"
		w, ok = f.open[k]
	}
	if ok {
		w.suppressed++
		f.mu.Unlock()
		return
	}
	f.open[k] = &authFailWindowState{start: now, desc: desc, session: session}
	f.mu.Unlock()
	f.write(k, now, desc, session, 1)
}

// flush writes the windows that have closed (all of them, if all) and
// forgets them.
func (f *authFailures) flush(all bool) {
	now := f.now()
	type pending struct {
		k authFailKey
		w authFailWindowState
	}
	var out []pending
	f.mu.Lock()
	for k, w := range f.open {
		if all || now.Sub(w.start) >= authFailWindow {
			delete(f.open, k)
			if w.suppressed > 0 {
				out = append(out, pending{k, *w})
			}
		}
	}
	f.mu.Unlock()
	for _, p := range out {
		f.write(p.k, now, p.w.desc+" ("+strconv.Itoa(p.w.suppressed)+" more since "+p.w.start.UTC().Format(time.RFC3339)+")", p.w.session, p.w.suppressed)
	}
}

func (f *authFailures) write(k authFailKey, now time.Time, desc, session string, count int) {
	rec := audit.Record{
		Time: now.UTC(), Session: "-", Scope: "-", Tool: ToolAuthFailed,
		Decision: audit.Deny, Code: k.reason, Reason: desc + " from " + k.source,
		Source: k.source, Count: count,
	}
	if session != "" {
		rec.Session = session
	}
	// A refused request changes nothing; a failed write is the log's
	// problem, which the next call will report.
	_, _ = f.log.Write(context.Background(), rec)
}

// sourceOf names where a request came from: the client's IP address, or
// "unix socket".
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || host == "" {
		if r.RemoteAddr == "" || r.RemoteAddr == "@" {
			return "unix socket"
		}
		return r.RemoteAddr
	}
	return host
}
