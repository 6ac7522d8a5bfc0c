package access

import (
	"context"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
)

// restore loads the request file. A record whose MAC fails is dropped and
// the drop audited. A live record the audit chain shows used, denied or
// expired is kept final (a rolled-back file cannot bring an approval
// back); one whose chain cannot be read is expired. Open requests can be
// answered again; approvals can be used within their ttl; calls held
// before the restart are gone.
func (m *Manager) restore() error {
	recs, err := m.store.load()
	if err != nil {
		return err
	}
	ctx := context.Background()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range recs {
		if l.bad {
			m.dropTampered(ctx, l.rec.ID)
			continue
		}
		e := &entry{Request: l.rec.Request, binding: l.rec.Binding, done: make(chan struct{})}
		e.Waiting, e.Request.Notify = 0, l.rec.Notify
		if e.State != StateOpen {
			close(e.done)
		}
		m.reqs[e.ID] = e
		if e.State == StateDenied {
			m.denied[e.Session] = true
		}
		if !e.Live() {
			continue
		}
		m.live[e.liveKey()] = e
		if final, why := m.finalInAudit(e); final != "" {
			m.settleFromAudit(ctx, e, final, why)
		}
	}
	m.sweepTimeLocked()
	return nil
}

// dropTampered forgets a record that failed its MAC check: nothing in it
// is trusted, so its record names no session.
func (m *Manager) dropTampered(ctx context.Context, id string) {
	m.log.Error("access request record failed its MAC check; dropped", "request", id)
	if err := m.store.remove(id); err != nil {
		m.log.Warn("drop access request", "request", id, "error", err)
	}
	if !WellFormedID(id) {
		id = "acr_?"
	}
	rec := audit.Record{Time: m.now().UTC(), Session: "-", Scope: "-", Tool: AuditTool(EventExpire),
		Decision: audit.Deny, Code: "access_tampered",
		Reason: id + ": expired: its stored record failed its MAC check (changed on disk without the master key); dropped"}
	if _, err := m.audit.Write(ctx, rec); err != nil {
		m.log.Error("record a dropped access request", "request", id, "error", err)
	}
}

// finalInAudit returns the final state the audit chain shows for e
// ("" if none), or Expired when the chain cannot be read.
func (m *Manager) finalInAudit(e *entry) (State, string) {
	if m.history == nil {
		return "", ""
	}
	recs, err := m.history.Query(audit.Filter{Session: e.Session, Since: e.Created.Add(-time.Minute)})
	if err != nil {
		return StateExpired, "the audit log could not be read to check it after a restart"
	}
	var final State
	for _, r := range recs {
		if !strings.HasPrefix(r.Reason, e.ID+": ") {
			continue
		}
		switch r.Tool {
		case AuditTool(EventUse):
			final = StateUsed
		case AuditTool(EventDeny):
			final = StateDenied
		case AuditTool(EventExpire):
			final = StateExpired
		}
	}
	return final, "the audit log shows it " + string(final)
}

// settleFromAudit makes e final as the audit shows it, without a new
// record (the chain has it already), unless the chain could not be read.
func (m *Manager) settleFromAudit(ctx context.Context, e *entry, final State, why string) {
	if final == StateExpired && strings.HasPrefix(why, "the audit log could not") {
		m.expireLocked(ctx, e, why)
		return
	}
	m.log.Warn("access request file disagrees with the audit log; the log wins", "request", e.ID, "state", e.State, "audit", final)
	was := e.State
	e.State = final
	if final == StateExpired && e.Ended == "" {
		e.Ended = why
	}
	delete(m.live, e.liveKey())
	if was == StateOpen {
		close(e.done)
	}
	m.persist(e)
}

// sweepTimeLocked expires live requests whose time is over.
func (m *Manager) sweepTimeLocked() {
	now := m.now()
	for _, e := range m.sorted() {
		if !e.Live() || now.Before(e.Expires) {
			continue
		}
		why := "nobody answered within its ttl of " + e.TTL.String()
		if e.State == StateApproved {
			why = "the approval was not used within its ttl of " + e.TTL.String()
		}
		m.expireLocked(context.Background(), e, why)
	}
}
