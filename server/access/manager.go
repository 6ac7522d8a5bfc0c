package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// AuditLog is where the manager records every step; *audit.Log is one.
type AuditLog interface {
	Write(ctx context.Context, rec audit.Record) (uint64, error)
}

// History reads the audit log back; *audit.Log is one.
type History interface {
	Query(f audit.Filter) ([]audit.Record, error)
}

// Sessions is what the manager asks of the sessions whose requests it
// holds. The broker's live sessions are one.
type Sessions interface {
	// Live returns nil for an active session, else why it is not.
	Live(id string) error
	// AddGrant adds an exact grant to an active session.
	AddGrant(id string, g policy.ExactGrant) error
	// NoteDenial counts a denial toward the session's tripwire.
	NoteDenial(id string)
}

// Options configures a Manager.
type Options struct {
	// Path is the request file (access.db); "" keeps requests in memory.
	Path string
	// Postgres, if set, keeps the requests in a store shared by several
	// brokers instead, under Replica (this broker's name). Path is then
	// ignored.
	Postgres *pgxpool.Pool
	Replica  string
	// Key is 32 bytes derived from the vault's root key; the MACs of
	// approvals and records are keyed from it.
	Key []byte
	// Audit records every step: a step whose record cannot be written
	// does not happen.
	Audit AuditLog
	// History, if set, is read on Open (to keep final what the audit
	// shows final) and for the "new path" risk.
	History History
	// Now is the clock requests expire by; nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger

	// NotifySend is the notify-send program for desktop notifications;
	// "" looks it up on PATH.
	NotifySend string
	// WebhookKey returns the value of the vault secret that signs
	// webhook posts.
	WebhookKey func(name string) ([]byte, error)
	// HTTPClient posts to webhooks; nil is a client with a 10s timeout
	// that follows no redirect and uses no proxy.
	HTTPClient *http.Client
	// Backoff is the pause before webhook attempt n (1, 2, …); nil is
	// 1s, 2s, 4s, 8s.
	Backoff func(attempt int) time.Duration
}

// keepFinal is how long a used, denied or expired request stays listed.
const keepFinal = 24 * time.Hour

// Manager holds the access requests of one broker. Its methods are safe
// for concurrent use.
type Manager struct {
	keys    keys
	store   *store
	audit   AuditLog
	history History
	now     func() time.Time
	log     *slog.Logger
	notify  *notifier
	closing chan struct{}

	mu   sync.Mutex
	reqs map[string]*entry // by id
	// live are the open and approved requests by session and request
	// hash: identical calls coalesce on one, and an approval is found by
	// the call that repeats it.
	live map[string]*entry
	// denied are the sessions a person denied a request of: each new
	// request they make counts toward their tripwire.
	denied   map[string]bool
	watchers map[chan Event]struct{}
	closed   bool // released: no new requests
	shut     bool // closed
}

// entry is a request with what only the manager sees.
type entry struct {
	Request
	binding string        // HMAC of the approval, once approved
	done    chan struct{} // closed when the request leaves Open
}

func (e *entry) liveKey() string { return e.Session + "\x00" + e.SHA256 }

// Open opens the request file, restores its requests and checks them
// against the audit log.
func Open(o Options) (*Manager, error) {
	k, err := deriveKeys(o.Key)
	if err != nil {
		return nil, err
	}
	if o.Audit == nil {
		return nil, errors.New("access: an audit log is required")
	}
	m := &Manager{
		keys: k, audit: o.Audit, history: o.History, now: o.Now, log: o.Logger,
		closing: make(chan struct{}),
		reqs:    map[string]*entry{}, live: map[string]*entry{}, denied: map[string]bool{}, watchers: map[chan Event]struct{}{},
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Postgres != nil:
		if m.store, err = openPGStore(o.Postgres, o.Replica, k); err != nil {
			return nil, err
		}
	case o.Path != "":
		if m.store, err = openStore(o.Path, k); err != nil {
			return nil, err
		}
	}
	m.notify = newNotifier(o, m.log)
	if err := m.restore(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Release answers every held call (their requests stay open, so a
// repeat after a restart finds them), refuses new ones and ends the
// watchers: a broker that stops calls it before it waits for its
// in-flight calls.
func (m *Manager) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	close(m.closing)
	for w := range m.watchers {
		close(w)
	}
	m.watchers = nil
}

// Close releases held calls, stops notifications and closes the request
// file.
func (m *Manager) Close() error {
	m.Release()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shut {
		return nil
	}
	m.shut = true
	m.notify.close()
	err := m.store.close()
	m.store = nil // later steps of held calls are kept in memory and the audit only
	return err
}

// List returns the live requests, or with all every request still kept,
// oldest first.
func (m *Manager) List(all bool) []Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Request
	for _, e := range m.sorted() {
		if all || e.Live() {
			out = append(out, e.Request)
		}
	}
	return out
}

// Show returns one request.
func (m *Manager) Show(id string) (Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.reqs[id]
	if e == nil {
		return Request{}, fmt.Errorf("%w: %s (see keyhole access list --all)", ErrNotFound, id)
	}
	return e.Request, nil
}

// Watch returns a channel of every step of every request from now on,
// and a function that stops it. The channel is closed when the watcher
// falls too far behind or the manager closes.
func (m *Manager) Watch() (<-chan Event, func()) {
	ch := make(chan Event, 64)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		close(ch)
		return ch, func() {}
	}
	m.watchers[ch] = struct{}{}
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.watchers[ch]; ok {
			delete(m.watchers, ch)
			close(ch)
		}
	}
}

// publish tells watchers and notifications about a step of e.
func (m *Manager) publish(event string, e *entry) {
	ev := Event{Type: event, Time: m.now(), Request: e.Request}
	ev.Request.Risks = slices.Clone(e.Risks)
	for w := range m.watchers {
		select {
		case w <- ev:
		default:
			delete(m.watchers, w)
			close(w)
		}
	}
	m.notify.announce(ev)
}

// persist writes e to the request file; a failure is logged (the request
// lives on in memory, and the audit chain has its steps).
func (m *Manager) persist(e *entry) {
	if err := m.store.put(e.Request, e.binding); err != nil {
		m.log.Error("store access request", "request", e.ID, "error", err)
	}
}

// sorted returns every entry, oldest first.
func (m *Manager) sorted() []*entry {
	out := make([]*entry, 0, len(m.reqs))
	for _, e := range m.reqs {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *entry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// checkNote refuses a note a person could not read in one line.
func checkNote(note string) error {
	if len(note) > 500 {
		return errors.New("access: --note is longer than 500 bytes")
	}
	for _, r := range note {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0xfffd {
			return errors.New("access: --note holds a control character or invalid UTF-8; write one line of text")
		}
		if r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 {
			return errors.New("access: --note holds a bidirectional override; write plain text")
		}
	}
	return nil
}

func noteSuffix(note string) string {
	if note == "" {
		return ""
	}
	return "; note: " + note
}
