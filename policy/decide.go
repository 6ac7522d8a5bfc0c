package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Decision is the outcome of one call's check. The zero Decision denies;
// every Decision a function of this package returns has a Reason.
type Decision struct {
	Allow bool
	// Code is "" when allowed, else one of the Code constants.
	Code string
	// Reason is for the person reading the audit and for the agent: what
	// was denied and what the scope grants instead, or what allowed it.
	Reason string
	// Grant is the grant that matched, as text ("github: GET
	// /repos/acme/api/issues/*"), when allowed, or when a grant with
	// approve: true matched (Code CodeApprovalRequired).
	Grant string
	// Ask says a person may approve the call through an access request:
	// a grant with approve: true matched (Code CodeApprovalRequired), or
	// the scope turns denials into requests (on_deny: request; Code
	// CodeNotGranted). Allow is false: until a person approves, the call
	// is denied.
	Ask bool
}

// Denial codes of a Decision.
const (
	CodeNotGranted     = "not_granted"
	CodeUnknownTool    = "unknown_tool"
	CodeSessionExpired = "session_expired"
	CodeSessionRevoked = "session_revoked"
	CodeSessionEnded   = "session_ended"
	CodeMaxCalls       = "max_calls"
	CodeRateLimited    = "rate_limited"
	CodeTripwire       = "too_many_denials"
	// CodeSecretInArguments is a call whose arguments carried a
	// credential, or a long part of one: the session ends at once.
	CodeSecretInArguments = "secret_in_arguments"
)

// ErrTTLTooLong is returned by Scope.SessionTTL for a session ttl longer
// than its scope allows.
var ErrTTLTooLong = errors.New("policy: session ttl exceeds the scope's ttl")

// Name returns the scope's name in keyhole.yaml.
func (s *Scope) Name() string { return s.name }

// Description returns the scope's configured description.
func (s *Scope) Description() string { return s.description }

// TTL returns the longest a session of this scope may live.
func (s *Scope) TTL() time.Duration { return s.ttl }

// MaxCalls returns the most calls a session may make; 0 is unlimited.
func (s *Scope) MaxCalls() int { return s.maxCalls }

// MaxDenials returns the denials after which a session ends; 0 is never.
func (s *Scope) MaxDenials() int { return s.maxDenials }

// SessionTTL returns the ttl of a new session that asked for requested: 0
// means the scope's ttl; a shorter positive ttl is kept; a longer one is
// ErrTTLTooLong.
func (s *Scope) SessionTTL(requested time.Duration) (time.Duration, error) {
	switch {
	case requested == 0:
		return s.ttl, nil
	case requested < 0:
		return 0, fmt.Errorf("policy: session ttl %s must be positive", requested)
	case requested > s.ttl:
		return 0, fmt.Errorf("%w: %s asked, scope %s allows at most %s", ErrTTLTooLong, requested, s.name, s.ttl)
	}
	return requested, nil
}

// Tools returns the names of the tools the scope grants, sorted.
func (s *Scope) Tools() []string { return slices.Clone(s.toolNames) }

// HasTool reports whether the scope grants anything on tool.
func (s *Scope) HasTool(tool string) bool {
	_, ok := s.tools[tool]
	return ok
}

// Summary returns what the scope allows on tool, one line per method and
// path ("GET /repos/acme/api/issues/*") or action and prefix ("list
// reports/2026/"), in config order. It is nil for a tool the scope does
// not grant.
func (s *Scope) Summary(tool string) []string {
	if tg, ok := s.tools[tool]; ok {
		return slices.Clone(tg.summary)
	}
	return nil
}

// S3Grant is what one or more s3 grants of a scope allow on a tool: the
// actions (list, get, head) on the keys each prefix grants (see S3Prefix).
type S3Grant struct {
	Actions  []string
	Prefixes []S3Prefix
}

// S3Grants returns what the scope grants on the s3 tool called tool, one
// S3Grant per distinct set of actions, in config order. It is nil for a
// tool the scope does not grant or that is not an s3 tool.
func (s *Scope) S3Grants(tool string) []S3Grant {
	tg, ok := s.tools[tool]
	if !ok || tg.kind != "s3" {
		return nil
	}
	var out []S3Grant
	at := map[uint8]int{}
	for _, r := range tg.s3 {
		i, seen := at[r.actions]
		if !seen {
			var actions []string
			for j, a := range s3Actions {
				if r.actions&(1<<j) != 0 {
					actions = append(actions, a)
				}
			}
			i = len(out)
			at[r.actions] = i
			out = append(out, S3Grant{Actions: actions})
		}
		if !slices.Contains(out[i].Prefixes, r.prefix) {
			out[i].Prefixes = append(out[i].Prefixes, r.prefix)
		}
	}
	return out
}

// Decide matches req against the scope's grants. It is pure: no counters,
// no clock (Session.Decide adds those). An allowed call does not allocate;
// a denied one allocates its Reason, from strings built at Compile.
func (s *Scope) Decide(req Request) Decision {
	tg, ok := s.tools[req.Tool]
	if !ok {
		return Decision{Code: CodeUnknownTool, Reason: "tool " + strconv.Quote(req.Tool) + s.unknownSuffix}
	}
	if tg.kind == "s3" {
		return tg.decideS3(s.name, req)
	}
	return tg.decideHTTP(s.name, req)
}

func (tg *toolGrants) decideHTTP(scope string, req Request) Decision {
	if req.Action != "" {
		return Decision{Code: CodeNotGranted, Reason: "s3 action " + strconv.Quote(req.Action) + tg.deniedSuffix}
	}
	mi := methodIndex(req.Method)
	if mi < 0 {
		return Decision{Code: CodeNotGranted, Reason: "method " + strconv.Quote(req.Method) + tg.deniedSuffix}
	}
	if !canonicalSegments(req.Segments) {
		// Never echo a path that broke the request contract.
		return Decision{Code: CodeNotGranted, Reason: req.Method + " request refused by scope " + scope + ": its path has an empty, \".\", \"..\" or unsafe segment"}
	}
	plain, approve := tg.first(uint8(1)<<mi, req.Segments)
	if plain >= 0 {
		r := &tg.http[plain]
		return Decision{Allow: true, Reason: r.reason[mi], Grant: r.text[mi]}
	}
	if approve >= 0 {
		r := &tg.http[approve]
		return Decision{Code: CodeApprovalRequired, Ask: true, Reason: r.reason[mi], Grant: r.text[mi]}
	}
	return Decision{Code: CodeNotGranted, Reason: httpReason(req.Method, req.Segments, tg.deniedSuffix)}
}

func (tg *toolGrants) decideS3(scope string, req Request) Decision {
	ai := actionIndex(req.Action)
	if ai < 0 {
		return Decision{Code: CodeNotGranted, Reason: "action " + strconv.Quote(req.Action) + tg.deniedSuffix}
	}
	if !canonicalKey(req.Key) {
		return Decision{Code: CodeNotGranted, Reason: req.Action + " request refused by scope " + scope + ": its key has a \".\" or \"..\" segment, a backslash or a control character"}
	}
	bit := uint8(1) << ai
	list := req.Action == "list"
	hint := ""
	var approve *s3Rule
	for i := range tg.s3 {
		r := &tg.s3[i]
		if r.actions&bit == 0 {
			continue
		}
		if list && r.prefix.GrantsList(req.Key) || !list && r.prefix.GrantsKey(req.Key) {
			if r.approve {
				if approve == nil {
					approve = r
				}
				continue
			}
			return Decision{Allow: true, Reason: r.reason[ai], Grant: r.text[ai]}
		}
		if list && hint == "" && r.prefix.Key != "" && req.Key == r.prefix.Key {
			// A list prefix is a plain string prefix: "reports/2026" would
			// list reports/2026-secret/… too.
			hint = "; a list of " + strconv.Quote(req.Key) + " would also reach keys beside " + r.prefix.Under + ": list " + strconv.Quote(r.prefix.Under)
		}
	}
	if approve != nil {
		return Decision{Code: CodeApprovalRequired, Ask: true, Reason: approve.reason[ai], Grant: approve.text[ai]}
	}
	return Decision{Code: CodeNotGranted, Reason: req.Action + " " + describeKey(req.Key) + tg.deniedSuffix + hint}
}

// httpReason builds "METHOD /seg/seg" + suffix with one allocation.
func httpReason(method string, segs []string, suffix string) string {
	n := len(method) + 2 + len(suffix)
	for _, s := range segs {
		n += len(s) + 1
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(method)
	b.WriteByte(' ')
	if len(segs) == 0 {
		b.WriteByte('/')
	}
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	b.WriteString(suffix)
	return b.String()
}

// canonicalKey reports whether an S3 key is one a tool may send: no
// control bytes, no backslash (which some S3-compatible stores read as
// "/") and no "." or ".." segment, which S3-compatible stores may
// normalize away.
func canonicalKey(key string) bool {
	start := 0
	for i := 0; i <= len(key); i++ {
		if i < len(key) {
			c := key[i]
			if c < 0x20 || c == 0x7f || c == '\\' {
				return false
			}
			if c != '/' {
				continue
			}
		}
		if seg := key[start:i]; seg == "." || seg == ".." {
			return false
		}
		start = i + 1
	}
	return true
}
