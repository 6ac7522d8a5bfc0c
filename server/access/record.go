package access

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
)

// eventDetail is the arguments of an access record: the request and, for
// a decision, who took it.
type eventDetail struct {
	Request      string    `json:"request"`
	SHA256       string    `json:"request_sha256"`
	ConfigSHA256 string    `json:"config_sha256"`
	Expires      time.Time `json:"expires"`
	Risks        []string  `json:"risks,omitempty"`
	Asks         int       `json:"asks,omitempty"`
	By           string    `json:"by,omitempty"`
	Note         string    `json:"note,omitempty"`
	ForSession   bool      `json:"for_session,omitempty"`
}

// record writes one step of r to the audit chain: tool
// keyhole.access.<event>, the request's session, scope, client and
// canonical request, and a reason that starts with the request's id.
func (m *Manager) record(ctx context.Context, event string, r *Request, reason string, dec *Decision) error {
	detail := eventDetail{Request: r.ID, SHA256: r.SHA256, ConfigSHA256: r.ConfigSHA256, Expires: r.Expires.UTC(), Risks: r.Risks, Asks: r.Asks}
	if dec != nil {
		detail.By, detail.Note, detail.ForSession = dec.By, dec.Note, dec.ForSession
	}
	args, err := json.Marshal(detail)
	if err != nil {
		return err
	}
	rec := audit.Record{
		Time: m.now().UTC(), Session: r.Session, Scope: r.Scope, Client: r.Client,
		Tool: AuditTool(event), Kind: r.Call.Kind,
		Method: r.Call.Method, Host: r.Call.Host, Path: r.Call.Path, QueryNames: queryNames(r.Call.Query),
		Bucket: r.Call.Bucket, Action: r.Call.Action, Key: r.Call.Key,
		Credential: r.Call.Credential, Grant: r.Grant,
		Reason: r.ID + ": " + reason, Args: args,
	}
	if dec != nil {
		rec.Operator = dec.By // who answered: a change of who may do what
	}
	switch event {
	case EventApprove, EventUse:
		rec.Decision = audit.Allow
	case EventRequest:
		rec.Decision, rec.Code = audit.Deny, policy.CodeNotGranted
		if r.Grant != "" {
			rec.Code = policy.CodeApprovalRequired
		}
	case EventDeny:
		rec.Decision, rec.Code = audit.Deny, "access_denied"
	case EventExpire:
		rec.Decision, rec.Code = audit.Deny, "access_expired"
	}
	_, err = m.audit.Write(context.WithoutCancel(ctx), rec)
	return err
}

// requestReason is the reason of a keyhole.access.request record.
func requestReason(r *Request) string {
	var b strings.Builder
	b.WriteString("waits for a person's approval: ")
	if r.Grant != "" {
		b.WriteString("granted with approval by " + r.Grant)
	} else {
		b.WriteString("outside its scope: " + r.Denied)
	}
	if len(r.Risks) > 0 {
		b.WriteString("; risks: " + strings.Join(r.Risks, ", "))
	}
	return b.String()
}

// queryNames are the URL-escaped, sorted, distinct names of a query, as
// call records show them.
func queryNames(q []tools.Param) []string {
	var out []string
	for _, p := range q {
		out = append(out, url.QueryEscape(p.Name))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// view builds the request people see from the call: everything the
// agent chose passed through the scrubber, the body as a capped preview
// with the size and hash of the whole.
func view(a Ask) Call {
	sc := func(s string) string { return scrubbed(a.Scrub, s) }
	c := a.Call
	v := Call{
		Tool: a.Tool, Kind: c.Kind, Credential: a.Credential,
		Method: c.Method, Host: c.Host, Path: sc(c.Path),
		Bucket: c.Bucket, Action: c.Action, Key: sc(c.Key),
		Delimiter: sc(c.Delimiter), MaxKeys: c.MaxKeys, ContinuationToken: sc(c.ContinuationToken),
	}
	if c.Kind == "s3" && c.Action != "list" {
		v.MaxKeys = 0
	}
	for _, p := range c.Query {
		v.Query = append(v.Query, tools.Param{Name: sc(p.Name), Value: sc(p.Value)})
	}
	for _, p := range c.Headers {
		v.Headers = append(v.Headers, tools.Param{Name: p.Name, Value: sc(p.Value)})
	}
	if c.HasBody {
		sum := sha256.Sum256(c.Body)
		b := &Body{Bytes: len(c.Body), SHA256: hex.EncodeToString(sum[:])}
		if utf8.Valid(c.Body) {
			b.Preview = sc(string(c.Body))
		} else {
			b.Encoding = "base64"
			b.Preview = sc(base64.StdEncoding.EncodeToString(c.Body))
		}
		if len(b.Preview) > MaxPreview {
			cut := MaxPreview
			for cut > 0 && !utf8.RuneStart(b.Preview[cut]) {
				cut--
			}
			b.Preview, b.Truncated = b.Preview[:cut], true
		}
		v.Body = b
	}
	return v
}

// scrubbed is s through scrub, or s when there is no scrubber.
func scrubbed(scrub func(string) string, s string) string {
	if scrub == nil || s == "" {
		return s
	}
	return scrub(s)
}

// Risk labels.
const (
	RiskWrite   = "write"
	RiskDelete  = "delete"
	RiskNewPath = "new path"
	RiskOutside = "outside scope"
)

// historyLimit bounds how many earlier calls the "new path" risk reads.
const historyLimit = 10000

// risks labels what a's call would do: a write, a delete, a path (or
// key) its scope has not been allowed before among its last
// historyLimit allowed calls of the tool, a call outside the scope.
func (m *Manager) risks(a Ask) []string {
	var out []string
	switch a.Call.Method {
	case "POST", "PUT", "PATCH":
		out = append(out, RiskWrite)
	case "DELETE":
		out = append(out, RiskWrite, RiskDelete)
	}
	if m.history != nil && !m.seen(a) {
		out = append(out, RiskNewPath)
	}
	if a.Decision.Code != policy.CodeApprovalRequired {
		out = append(out, RiskOutside)
	}
	return out
}

// seen reports whether the scope was allowed this method and path (or
// action and key) on the tool before. An unreadable history is not seen.
func (m *Manager) seen(a Ask) bool {
	recs, err := m.history.Query(audit.Filter{Scope: a.Scope, Tool: a.Tool, Decision: audit.Allow, Limit: historyLimit})
	if err != nil {
		m.log.Warn("read the audit for an access request's risks", "error", err)
		return false
	}
	path, key := scrubbed(a.Scrub, a.Call.Path), scrubbed(a.Scrub, a.Call.Key)
	for _, r := range recs {
		if r.Method == a.Call.Method && r.Path == path && r.Action == a.Call.Action && r.Key == key {
			return true
		}
	}
	return false
}
