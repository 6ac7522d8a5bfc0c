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

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
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
	if o.Path != "" {
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

// Ask is a call that needs a person's approval, as the broker describes
// it.
type Ask struct {
	Session, Scope, Label, Client string
	// Config is the path of the session's config; ConfigSHA256 its
	// digest, which an approval is bound to.
	Config, ConfigSHA256 string
	Tool                 string
	// Credential is the name of the secret the tool uses.
	Credential string
	Call       tools.Canonical
	// Request is what policy decided on.
	Request policy.Request
	// Decision is policy's: CodeApprovalRequired with the grant, or
	// CodeNotGranted with the reason (on_deny: request).
	Decision policy.Decision
	Approval policy.Approval
	// Scrub removes every form of the tool's secret from text the agent
	// chose, before it is kept or shown.
	Scrub func(string) string
}

// Answer is what became of an Ask.
type Answer struct {
	// Approved: the call proceeds, exactly as asked, now.
	Approved bool
	// ID is the request's id ("" if none was made).
	ID string
	// Code and Reason are for the call's audit record; Grant, when
	// approved, says which approval allowed it.
	Code, Reason, Grant string
	// Message is what the agent is told when the call does not proceed.
	Message string
	// CountDenial: the caller counts a denial toward the session's
	// tripwire (a session that keeps asking after a person denied it).
	CountDenial bool
}

// Codes of the audit records of calls that did not proceed.
const (
	CodePending = "approval_pending"
	CodeDenied  = "approval_denied"
	CodeExpired = "approval_expired"
	CodeUsed    = "approval_used"
	CodeMaxOpen = "approval_max_open"
	CodeError   = "approval_error"
)

// Ask holds a call that needs a person's approval: it uses an approval
// of the same request if the session has one, joins an identical open
// request, or opens a new one, then waits up to the scope's approval.wait
// for an answer (or until ctx ends).
func (m *Manager) Ask(ctx context.Context, a Ask) Answer {
	hash := RequestHash(a.Tool, a.Call)
	risks := m.risks(a)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Answer{Code: CodeError, Reason: "the broker is stopping", Message: "keyhole is stopping; repeat the call later"}
	}
	if e := m.live[a.Session+"\x00"+hash]; e != nil {
		switch e.State {
		case StateApproved:
			if ans, ok := m.useLocked(ctx, e, a); ok {
				m.mu.Unlock()
				return ans
			}
		case StateOpen:
			if !m.now().Before(e.Expires) {
				m.expireLocked(ctx, e, "nobody answered within its ttl of "+e.TTL.String())
				break
			}
			e.Asks++
			e.Waiting++
			m.mu.Unlock()
			return m.wait(ctx, e, a)
		}
	}
	count := m.denied[a.Session]
	var open []string
	for _, e := range m.reqs {
		if e.Session == a.Session && e.State == StateOpen {
			open = append(open, e.ID)
		}
	}
	if len(open) >= a.Approval.MaxOpen {
		m.mu.Unlock()
		slices.Sort(open)
		return Answer{Code: CodeMaxOpen, CountDenial: count,
			Reason:  fmt.Sprintf("session has %d open access requests, max_open %d of scope %s", len(open), a.Approval.MaxOpen, a.Scope),
			Message: maxOpenMessage(a, open)}
	}
	e := m.newEntry(a, hash, risks)
	if err := m.record(ctx, EventRequest, &e.Request, requestReason(&e.Request), nil); err != nil {
		m.mu.Unlock()
		return Answer{Code: CodeError, Reason: "audit: " + err.Error(), Message: "keyhole could not record the access request in its audit log, so the call was not made"}
	}
	m.reqs[e.ID] = e
	m.live[e.liveKey()] = e
	m.persist(e)
	m.publish(EventRequest, e)
	e.Waiting++
	m.mu.Unlock()
	ans := m.wait(ctx, e, a)
	ans.CountDenial = ans.CountDenial || count
	return ans
}

// newEntry builds a request of a, open until the scope's approval.ttl.
func (m *Manager) newEntry(a Ask, hash string, risks []string) *entry {
	now := m.now()
	r := Request{
		ID: newID(), State: StateOpen, Created: now, Expires: now.Add(a.Approval.TTL),
		Session: a.Session, Scope: a.Scope, Config: a.Config, ConfigSHA256: a.ConfigSHA256,
		Label: a.Label, Client: a.Client, Call: view(a), SHA256: hash, Risks: risks,
		TTL: a.Approval.TTL, Asks: 1, Exact: policy.ExactGrantOf(a.Request, ""),
		Notify: Notify{Desktop: a.Approval.Notify, Webhook: a.Approval.Webhook, WebhookSecret: a.Approval.WebhookSecret},
	}
	r.Exact.Request = r.ID
	if a.Decision.Code == policy.CodeApprovalRequired {
		r.Grant = a.Decision.Grant
	} else {
		r.Denied = scrubbed(a.Scrub, a.Decision.Reason)
	}
	return &entry{Request: r, done: make(chan struct{})}
}

// wait holds a call on e until a person answers, wait passes, ctx ends
// or the manager closes, and answers it.
func (m *Manager) wait(ctx context.Context, e *entry, a Ask) Answer {
	if a.Approval.Wait > 0 {
		t := time.NewTimer(a.Approval.Wait)
		select {
		case <-e.done:
		case <-t.C:
		case <-ctx.Done():
		case <-m.closing:
		}
		t.Stop()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e.Waiting--
	switch e.State {
	case StateApproved:
		if ctx.Err() != nil {
			// The caller is gone: leave the approval for its repeat.
			return Answer{ID: e.ID, Code: CodePending, Reason: e.ID + ": approved after the call was cancelled", Message: approvedMessage(&e.Request)}
		}
		if ans, ok := m.useLocked(ctx, e, a); ok {
			return ans
		}
		return Answer{ID: e.ID, Code: CodeExpired, Reason: e.ID + ": " + e.Ended, Message: expiredMessage(&e.Request)}
	case StateUsed:
		if e.Decision != nil && e.Decision.ForSession {
			// Held with the call that used it: the session grant
			// covers this identical call too.
			return Answer{Approved: true, ID: e.ID, Grant: e.Exact.String() + " (for this session, by access request " + e.ID + ")",
				Reason: e.ID + ": approved for the session by " + e.Decision.By}
		}
		return Answer{ID: e.ID, Code: CodeUsed, Reason: e.ID + ": its single-use approval was used by an identical call", Message: usedMessage(&e.Request)}
	case StateDenied:
		return Answer{ID: e.ID, Code: CodeDenied, Reason: e.ID + ": denied by " + e.Decision.By + noteSuffix(e.Decision.Note), Message: deniedMessage(&e.Request)}
	case StateExpired:
		return Answer{ID: e.ID, Code: CodeExpired, Reason: e.ID + ": " + e.Ended, Message: expiredMessage(&e.Request)}
	}
	return Answer{ID: e.ID, Code: CodePending, Reason: e.ID + ": waiting for a person's approval", Message: pendingMessage(&e.Request, a.Approval.Wait)}
}

// useLocked uses the approval of e for the call a, if it binds a: the
// use is recorded first, then the call proceeds. ok false means the
// approval could not be used and e has expired.
func (m *Manager) useLocked(ctx context.Context, e *entry, a Ask) (Answer, bool) {
	now := m.now()
	if !now.Before(e.Expires) {
		m.expireLocked(ctx, e, "the approval was not used within its ttl of "+e.TTL.String())
		return Answer{}, false
	}
	b := binding{ID: e.ID, Session: a.Session, Tool: a.Tool, SHA256: RequestHash(a.Tool, a.Call),
		ConfigSHA256: a.ConfigSHA256, Expires: e.Expires, ForSession: e.Decision != nil && e.Decision.ForSession}
	if !m.keys.verify(b, e.binding) {
		m.expireLocked(ctx, e, "its approval does not bind this call (another session, tool, request or config)")
		return Answer{}, false
	}
	reason := "approval by " + e.Decision.By + " used by this session's identical call"
	if err := m.record(ctx, EventUse, &e.Request, reason, nil); err != nil {
		return Answer{ID: e.ID, Code: CodeError, Reason: "audit: " + err.Error(), Message: "keyhole could not record the use of the approval in its audit log, so the call was not made"}, true
	}
	e.State, e.Used = StateUsed, now
	delete(m.live, e.liveKey())
	m.persist(e)
	m.publish(EventUse, e)
	how := "once"
	if e.Decision.ForSession {
		how = "for the session"
	}
	return Answer{Approved: true, ID: e.ID,
		Grant:  "access request " + e.ID + " approved " + how + " by " + e.Decision.By,
		Reason: e.ID + ": approved " + how + " by " + e.Decision.By + noteSuffix(e.Decision.Note)}, true
}

// Approve approves an open request: the next identical call of its
// session (the one held now, or a repeat within the request's ttl) uses
// it once. With forSession it also adds an exact grant for the request's
// method and path to the session.
func (m *Manager) Approve(id string, by, note string, forSession bool, ss Sessions) (Request, error) {
	if err := checkNote(note); err != nil {
		return Request{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.openLocked(id, ss)
	if err != nil {
		return Request{}, err
	}
	now := m.now()
	dec := &Decision{By: by, At: now, Note: note, ForSession: forSession, Approved: true}
	next := e.Request
	next.State, next.Decision, next.Expires = StateApproved, dec, now.Add(e.TTL)
	how := "once"
	if forSession {
		how = "for the session (" + e.Exact.String() + ")"
	}
	reason := fmt.Sprintf("approved %s by %s, usable until %s%s", how, by, next.Expires.UTC().Format(time.RFC3339), noteSuffix(note))
	if err := m.record(context.Background(), EventApprove, &next, reason, dec); err != nil {
		return Request{}, fmt.Errorf("access: record the approval: %w", err)
	}
	if forSession {
		if err := ss.AddGrant(e.Session, e.Exact); err != nil {
			m.expireLocked(context.Background(), e, "the session could not take the grant: "+err.Error())
			return Request{}, fmt.Errorf("access: %s approved, but session %s could not take the grant: %w", id, e.Session, err)
		}
	}
	e.Request = next
	e.binding = m.keys.sum(binding{ID: e.ID, Session: e.Session, Tool: e.Call.Tool, SHA256: e.SHA256,
		ConfigSHA256: e.ConfigSHA256, Expires: e.Expires, ForSession: forSession})
	close(e.done)
	m.persist(e)
	m.publish(EventApprove, e)
	return e.Request, nil
}

// Deny denies an open request: the calls held on it are told so, and
// the denial, and every request the session makes after it, count
// toward the session's tripwire.
func (m *Manager) Deny(id string, by, note string, ss Sessions) (Request, error) {
	if err := checkNote(note); err != nil {
		return Request{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.openLocked(id, ss)
	if err != nil {
		return Request{}, err
	}
	dec := &Decision{By: by, At: m.now(), Note: note}
	next := e.Request
	next.State, next.Decision = StateDenied, dec
	if err := m.record(context.Background(), EventDeny, &next, "denied by "+by+noteSuffix(note), dec); err != nil {
		return Request{}, fmt.Errorf("access: record the denial: %w", err)
	}
	e.Request = next
	delete(m.live, e.liveKey())
	close(e.done)
	m.denied[e.Session] = true
	m.persist(e)
	m.publish(EventDeny, e)
	ss.NoteDenial(e.Session)
	return e.Request, nil
}

// openLocked returns the open request id, expiring it first if its time
// or its session is over.
func (m *Manager) openLocked(id string, ss Sessions) (*entry, error) {
	e := m.reqs[id]
	if e == nil {
		return nil, fmt.Errorf("%w: %s (see keyhole access list --all)", ErrNotFound, id)
	}
	if e.State == StateOpen && !m.now().Before(e.Expires) {
		m.expireLocked(context.Background(), e, "nobody answered within its ttl of "+e.TTL.String())
	}
	if e.State == StateOpen {
		if err := ss.Live(e.Session); err != nil {
			m.expireLocked(context.Background(), e, "its session is no longer active: "+err.Error())
		}
	}
	if e.State != StateOpen {
		msg := string(e.State)
		if e.Ended != "" {
			msg += ": " + e.Ended
		} else if e.Decision != nil {
			msg += " by " + e.Decision.By
		}
		return nil, fmt.Errorf("%w: %s is %s", ErrNotOpen, id, msg)
	}
	return e, nil
}

// expireLocked ends a live request, records why, and releases its calls.
// An expiry that cannot be recorded is logged: the request ends anyway.
func (m *Manager) expireLocked(ctx context.Context, e *entry, why string) {
	if e.State.Final() {
		return
	}
	was := e.State
	e.State, e.Ended = StateExpired, why
	if err := m.record(ctx, EventExpire, &e.Request, "expired: "+why, nil); err != nil {
		m.log.Error("record access request expiry", "request", e.ID, "error", err)
	}
	delete(m.live, e.liveKey())
	if was == StateOpen {
		close(e.done)
	}
	m.persist(e)
	m.publish(EventExpire, e)
}

// EndSession expires every live request of a session that was revoked
// or ended: they die with it.
func (m *Manager) EndSession(session, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.sorted() {
		if e.Session == session && e.Live() {
			m.expireLocked(context.Background(), e, "its session "+why)
		}
	}
}

// Sweep expires requests whose time is over or whose session is no
// longer active (ss may be nil), and forgets final requests after a day.
// The broker sweeps every second.
func (m *Manager) Sweep(ss Sessions) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, e := range m.sorted() {
		switch {
		case e.State.Final():
			if now.Sub(e.finalAt()) > keepFinal {
				delete(m.reqs, e.ID)
				if err := m.store.remove(e.ID); err != nil {
					m.log.Warn("forget access request", "request", e.ID, "error", err)
				}
			}
		case !now.Before(e.Expires) && e.State == StateOpen:
			m.expireLocked(context.Background(), e, "nobody answered within its ttl of "+e.TTL.String())
		case !now.Before(e.Expires):
			m.expireLocked(context.Background(), e, "the approval was not used within its ttl of "+e.TTL.String())
		case ss != nil:
			if err := ss.Live(e.Session); err != nil {
				m.expireLocked(context.Background(), e, "its session is no longer active: "+err.Error())
			}
		}
	}
}

// finalAt is about when a final request ended.
func (e *entry) finalAt() time.Time {
	switch {
	case !e.Used.IsZero():
		return e.Used
	case e.Decision != nil && !e.Decision.Approved:
		return e.Decision.At
	}
	return e.Expires
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
