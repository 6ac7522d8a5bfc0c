// Package access holds access requests: calls that wait for a person's
// approval, because a grant says approve: true or because the scope turns
// its denials into requests (on_deny: request). It keeps each request with
// the exact canonical request it would send, holds the agent's call while
// a person decides, binds every approval to that one request, announces
// requests (watchers, a desktop notification, a signed webhook) and
// writes every step to the audit chain. It approves nothing itself: an
// approval comes only from Manager.Approve, which the broker serves on
// its unix socket to the operator (`keyhole access approve`), never from
// anything the agent or its MCP client says.
//
// # Binding
//
// An approval is bound by an HMAC-SHA256, keyed from the vault's root
// key, over the request id, the session, the tool, the SHA-256 of the
// canonical request (method, host, path, every query name and value,
// the headers the agent set, the body's SHA-256; or the S3 action, key
// and list parameters), the digest of the config the session runs, the
// approval's expiry and whether it was given for the session. A call uses
// an approval only when the HMAC computed from the call itself matches:
// another body, path, query, session or config does not. An approval is
// used once; one given for the session also adds an exact grant (that
// method on that path, no pattern) to the session for the rest of its
// life.
//
// # Storage
//
// Requests are kept in memory and in a buntdb file in the data dir
// (access.db, 0600), each record MAC'd, so open requests and unused
// approvals survive a restart of the broker within their ttl. On Open a
// record whose MAC fails is dropped (and the drop audited), and one the
// audit chain already shows as used, denied or expired stays so, however
// the file was rolled back. The held calls themselves end with the
// process that held them.
package access

import (
	"errors"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools"
)

// State is where a request is in its life.
type State string

// Request states. Open and approved requests are live; the rest are final.
const (
	// Open: waiting for a person.
	StateOpen State = "open"
	// Approved: a person approved it; the next identical call of its
	// session uses it, until Expires.
	StateApproved State = "approved"
	// Used: an approved request was used by a call.
	StateUsed State = "used"
	// Denied: a person denied it.
	StateDenied State = "denied"
	// Expired: nobody answered, the approval was not used in time, or
	// the session ended.
	StateExpired State = "expired"
)

// Final reports whether no further step can happen to a request in s.
func (s State) Final() bool { return s == StateUsed || s == StateDenied || s == StateExpired }

// Errors of the operator's commands.
var (
	// ErrNotFound: no request has that id.
	ErrNotFound = errors.New("access: no such access request")
	// ErrNotOpen: the request was already answered, used or expired.
	ErrNotOpen = errors.New("access: the access request is not open")
)

// Request is one access request, as people see it: everything it would
// send and why it waits. Text an agent chose (path, query, headers, body)
// is scrubbed of every form of the tool's secret.
type Request struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// Created is when the first call asked.
	Created time.Time `json:"created"`
	// Expires is when an open request expires unanswered, or when an
	// approval expires unused.
	Expires time.Time `json:"expires"`
	// Session, scope, config, label and client of the call.
	Session      string `json:"session"`
	Scope        string `json:"scope"`
	Config       string `json:"config"`
	ConfigSHA256 string `json:"config_sha256"`
	Label        string `json:"label,omitempty"`
	Client       string `json:"client,omitempty"`
	// Call is the canonical request that would be sent.
	Call Call `json:"call"`
	// SHA256 is the hash of the canonical request (with the body's
	// hash), which an approval is bound to.
	SHA256 string `json:"request_sha256"`
	// Grant is the grant with approve: true that allows the call once a
	// person approves; empty for a call outside the scope.
	Grant string `json:"grant,omitempty"`
	// Denied is why the scope denies the call (on_deny: request).
	Denied string `json:"denied,omitempty"`
	// Risks label what the call would do: write, delete, new path,
	// outside scope.
	Risks []string `json:"risks,omitempty"`
	// TTL is how long an approval stays usable (the scope's approval.ttl).
	TTL time.Duration `json:"ttl_ns"`
	// Asks counts the calls that asked for it (identical calls coalesce);
	// Waiting the calls held on it now (in this broker).
	Asks    int `json:"asks"`
	Waiting int `json:"waiting"`
	// Decision is who approved or denied it, when, and why.
	Decision *Decision `json:"decision,omitempty"`
	// Used is when a call used the approval.
	Used time.Time `json:"used,omitzero"`
	// Ended says why a request expired.
	Ended string `json:"ended,omitempty"`
	// Exact is the grant --for-session adds: exactly this method on this
	// path, or this action on this key.
	Exact policy.ExactGrant `json:"exact"`
	// Notify is where the request is announced (from the scope). It is
	// kept with the request but not shown: a webhook URL may carry a
	// token of its receiver's.
	Notify Notify `json:"-"`
	// Replica is the broker that holds the request, when it is read from
	// a store several brokers share (ReadShared); "" otherwise.
	Replica string `json:"replica,omitempty"`
}

// Call is the canonical request an access request would send, scrubbed.
type Call struct {
	Tool string `json:"tool"`
	Kind string `json:"kind"`
	// Credential names the vault secret the call would use (never its
	// value).
	Credential string        `json:"credential,omitempty"`
	Method     string        `json:"method,omitempty"`
	Host       string        `json:"host,omitempty"`
	Path       string        `json:"path,omitempty"`
	Query      []tools.Param `json:"query,omitempty"`
	Headers    []tools.Param `json:"headers,omitempty"`
	Body       *Body         `json:"body,omitempty"`
	// S3 calls.
	Bucket            string `json:"bucket,omitempty"`
	Action            string `json:"action,omitempty"`
	Key               string `json:"key,omitempty"`
	Delimiter         string `json:"delimiter,omitempty"`
	MaxKeys           int32  `json:"max_keys,omitempty"`
	ContinuationToken string `json:"continuation_token,omitempty"`
}

// Body describes a request body: its size and hash, and a scrubbed
// preview of at most MaxPreview bytes.
type Body struct {
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
	// Preview is the body as text, or base64 when Encoding says so.
	Preview   string `json:"preview"`
	Encoding  string `json:"encoding,omitempty"` // "" (text) or "base64"
	Truncated bool   `json:"truncated,omitempty"`
}

// MaxPreview caps a body's preview.
const MaxPreview = 2048

// Decision is a person's answer to a request.
type Decision struct {
	// By names who decided: "os:alice" for the operator's command line.
	By   string    `json:"by"`
	At   time.Time `json:"at"`
	Note string    `json:"note,omitempty"`
	// ForSession: the approval also added an exact grant to the session.
	ForSession bool `json:"for_session,omitempty"`
	// Approved is true for an approval, false for a denial.
	Approved bool `json:"approved"`
}

// Notify is where a request is announced.
type Notify struct {
	Desktop       bool   `json:"desktop,omitempty"`
	Webhook       string `json:"webhook,omitempty"`
	WebhookSecret string `json:"webhook_secret,omitempty"` // the vault secret's name
}

// Event is one step of a request, as watchers and webhooks receive it.
type Event struct {
	// Type is request, approve, deny, expire or use.
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Request Request   `json:"request"`
}

// Event types, also the suffixes of their audit records'
// tools (keyhole.access.request, …).
const (
	EventRequest = "request"
	EventApprove = "approve"
	EventDeny    = "deny"
	EventExpire  = "expire"
	EventUse     = "use"
)

// AuditTool is the audit record tool of an event type.
func AuditTool(event string) string { return "keyhole.access." + event }

// Live reports whether the request can still be approved or used.
func (r *Request) Live() bool { return !r.State.Final() }
