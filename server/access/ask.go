package access

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools"
)

// Holding a call: the broker's side of a request.

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
