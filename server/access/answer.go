package access

import (
	"context"
	"fmt"
	"time"
)

// Answering a request: a person's side, and the end of a request's life.

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
