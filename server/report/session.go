package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// ErrNoSession is returned by Session for a session the log has no call
// of and no session record names.
var ErrNoSession = errors.New("report: no such session")

// ErrIncident is returned by Session for an incident that is not one of
// the session's calls.
var ErrIncident = errors.New("report: the incident is not a call of this session")

// SessionOptions say what a session report is about.
type SessionOptions struct {
	// Incident is the seq of the call that is the incident. With At zero
	// too, the incident is the session's last call.
	Incident uint64
	// IncidentReplica is the chain of Incident in a log of several chains
	// (a store's, where each broker writes its own and a seq names a
	// record in each); "" matches a call of any chain.
	IncidentReplica string
	// At is the time of the incident, when no call marks it: the report
	// looks at the session as it stood then.
	At time.Time
	// Window is how far before the incident other sessions are looked at;
	// 0 is DefaultWindow.
	Window time.Duration
	// MaxTimeline caps the calls the timeline lists (around the
	// incident, with the first and last); 0 is 400.
	MaxTimeline int
}

// SessionReport is the post-mortem of one session: `keyhole report
// session ID --json` prints it as it is.
type SessionReport struct {
	Session     SessionHeader `json:"session"`
	Questions   []Question    `json:"questions"`
	Credentials []Credential  `json:"credentials"`
	Timeline    []Event       `json:"timeline"`
	// TimelineOmitted counts the calls left out of a long timeline.
	TimelineOmitted int `json:"timeline_omitted,omitempty"`
}

// SessionHeader says what the session was.
type SessionHeader struct {
	ID    string `json:"id"`
	Scope string `json:"scope"`
	// ScopeDescription is the scope's description in the config.
	ScopeDescription string `json:"scope_description,omitempty"`
	// ScopeInConfig is false when the config no longer defines the scope.
	ScopeInConfig bool      `json:"scope_in_config"`
	Configs       []string  `json:"configs,omitempty"`
	Label         string    `json:"label,omitempty"`
	Clients       []string  `json:"clients,omitempty"`
	Started       time.Time `json:"started"`
	// Expires, State and EndReason come from the session's record; Ended
	// is its last call when it is no longer active.
	Expires   time.Time  `json:"expires,omitzero"`
	Ended     time.Time  `json:"ended,omitzero"`
	State     string     `json:"state"`
	EndReason string     `json:"end_reason,omitempty"`
	Calls     CallCounts `json:"calls"`
	// Tripwire is set when the session was ended by too many denials.
	Tripwire bool `json:"tripwire"`
	// Record says where State came from: "session record", or why the
	// audit alone had to say.
	Record   string   `json:"record"`
	Incident Incident `json:"incident"`
	Window   Window   `json:"window"`
}

// CallCounts counts calls by what became of them.
type CallCounts struct {
	Total       int `json:"total"`
	Allowed     int `json:"allowed"`
	Denied      int `json:"denied"`
	Errors      int `json:"errors"`
	Interrupted int `json:"interrupted"`
	Running     int `json:"running,omitempty"`
}

func (c *CallCounts) add(d audit.Decision) {
	c.Total++
	switch d {
	case audit.Allow:
		c.Allowed++
	case audit.Deny:
		c.Denied++
	case audit.Error:
		c.Errors++
	case audit.Interrupted:
		c.Interrupted++
	case audit.Running:
		c.Running++
	}
}

// Incident is the moment the report is about.
type Incident struct {
	// By is "seq", "at" or "last call": how it was chosen.
	By  string `json:"by"`
	Seq uint64 `json:"seq,omitempty"`
	// Replica is the chain of Seq, in a log of several chains.
	Replica string    `json:"replica,omitempty"`
	Time    time.Time `json:"time"`
	// Tool, Request, Decision and Credential describe the incident's call.
	Tool       string `json:"tool,omitempty"`
	Request    string `json:"request,omitempty"`
	Decision   string `json:"decision,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// Window is the time other sessions are counted in.
type Window struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
}

// Question is one of the six questions of the post-mortem, answered.
type Question struct {
	ID       string `json:"id"`
	Question string `json:"question"`
	Answer   string `json:"answer"`
	Facts    any    `json:"facts"`
}

// Event is one call in the timeline.
type Event struct {
	Seq uint64 `json:"seq"`
	// Replica is the chain of Seq, in a log of several chains.
	Replica  string    `json:"replica,omitempty"`
	Time     time.Time `json:"time"`
	Tool     string    `json:"tool"`
	Request  string    `json:"request"`
	Decision string    `json:"decision"`
	Status   int       `json:"status,omitempty"`
	Code     string    `json:"code,omitempty"`
	Incident bool      `json:"incident,omitempty"`
}

// call is what a session report keeps of one of the session's calls.
type call struct {
	Seq        uint64
	Replica    string
	Time       time.Time
	Tool       string
	Method     string
	Path       string
	Action     string
	Key        string
	Decision   audit.Decision
	Code       string
	Grant      string
	Credential string
	Version    int
	Status     int
	BytesIn    int64
	CredKind   string
	TokenID    string
	TokenExp   time.Time
	Client     string
	// Passed are the field names of a write call's body: what the agent
	// passed on.
	Passed []string
}

func (c *call) request() string { return requestText(c.Method, c.Path, c.Action, c.Key) }

// maxSessionCalls bounds the calls a session report keeps in memory.
const maxSessionCalls = 200_000

// sessionData is everything a session report is computed from.
type sessionData struct {
	w        *world
	id       string
	header   SessionHeader
	calls    []call
	incident int // index into calls, -1 when none marks it
	at       time.Time
	start    time.Time
	rules    []policy.Rule
	texts    map[string]ruleRef
	scope    *policy.Scope
	// window-wide
	usage []audit.Usage
	// clients are the MCP clients of the sessions in the window.
	clients map[string]string
}

// Session answers the post-mortem of session id.
func Session(ctx context.Context, src *Sources, id string, o SessionOptions) (*SessionReport, error) {
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.MaxTimeline == 0 {
		o.MaxTimeline = 400
	}
	d := &sessionData{w: newWorld(src), id: id, incident: -1}
	if err := d.load(ctx, src); err != nil {
		return nil, err
	}
	if err := d.pickIncident(src, o); err != nil {
		return nil, err
	}
	d.header.Window = Window{Since: d.at.Add(-o.Window), Until: src.Now}
	if err := d.loadWindow(ctx, src); err != nil {
		return nil, err
	}
	creds := d.credentials()
	rep := &SessionReport{Session: d.header, Credentials: creds}
	rep.Questions = []Question{
		d.held(creds), d.necessary(creds), d.active(creds), d.expiry(creds), d.scopeFit(), d.shared(creds),
	}
	rep.Timeline, rep.TimelineOmitted = d.timeline(o.MaxTimeline)
	return rep, nil
}

// load reads the session's calls and its record.
func (d *sessionData) load(ctx context.Context, src *Sources) error {
	h := &d.header
	h.ID = d.id
	clients := map[string]bool{}
	err := src.Log.Stream(ctx, audit.Filter{Session: d.id}, func(r audit.Record) error {
		if internal(r.Tool) {
			return nil
		}
		if len(d.calls) == maxSessionCalls {
			return fmt.Errorf("report: session %s has more than %d calls; report on it with --at to look at a part of it", d.id, maxSessionCalls)
		}
		h.Scope = r.Scope
		if r.Client != "" {
			clients[r.Client] = true
		}
		c := call{Seq: r.Seq, Replica: r.Replica, Time: r.Time, Tool: r.Tool, Method: r.Method, Path: r.Path, Action: r.Action, Key: r.Key,
			Decision: r.Decision, Code: r.Code, Grant: r.Grant, Credential: r.Credential, Version: r.CredVersion,
			Status: r.Status, BytesIn: r.BytesIn, CredKind: r.CredentialKind, TokenID: r.TokenID, TokenExp: r.TokenExpires, Client: r.Client}
		if r.Grant != "" && policy.IsWriteMethod(r.Method) {
			c.Passed = passedFields(r.Args)
		}
		d.calls = append(d.calls, c)
		return nil
	})
	if err != nil {
		return err
	}
	h.Clients = slices.Sorted(maps.Keys(clients))
	rec, stored := d.w.sessions[d.id]
	if len(d.calls) == 0 && !stored {
		return fmt.Errorf("%w: %s (no call of it is recorded, and no session record names it)", ErrNoSession, d.id)
	}
	for _, c := range d.calls {
		h.Calls.add(c.Decision)
		if c.Code == policy.CodeTripwire {
			h.Tripwire = true
		}
	}
	if len(d.calls) > 0 {
		d.start = d.calls[0].Time
		// The config each call's session ran, where records name it.
		_ = src.Log.Calls(ctx, audit.CallFilter{Session: d.id}, func(c audit.Call) error {
			if c.Config != "" && !slices.Contains(h.Configs, c.Config) {
				h.Configs = append(h.Configs, c.Config)
			}
			return nil
		})
	}
	if stored {
		h.Scope = rec.Scope
		h.Label = rec.Label
		h.Started, h.Expires = rec.Created, rec.Expires
		h.State, h.EndReason = string(rec.State), rec.EndReason
		if rec.State == policy.StateActive && !src.Now.Before(rec.Expires) {
			h.State = string(policy.StateExpired)
		}
		h.Record = "session record"
		if rec.Created.Before(d.start) || d.start.IsZero() {
			d.start = rec.Created
		}
		if strings.Contains(rec.EndReason, "denial") {
			h.Tripwire = true
		}
	} else {
		h.Started = d.start
		h.State, h.EndReason, h.Record = d.stateFromCalls()
		if src.SessionsNote != "" {
			h.Record += " (" + src.SessionsNote + ")"
		}
	}
	if h.State != string(policy.StateActive) && len(d.calls) > 0 {
		h.Ended = d.calls[len(d.calls)-1].Time
	}
	if sc, ok := d.w.scope(h.Scope); ok {
		d.scope = sc
		h.ScopeInConfig = true
		h.ScopeDescription = sc.Description()
		d.rules = d.w.rules[h.Scope]
		d.texts = textIndex(d.rules)
		if h.Expires.IsZero() && !d.start.IsZero() {
			h.Expires = d.start.Add(sc.TTL())
		}
	}
	return nil
}

// recordName names a record as `keyhole audit show` takes it: SEQ, or
// REPLICA:SEQ in a log of several chains.
func recordName(replica string, seq uint64) string {
	if replica == "" {
		return strconv.FormatUint(seq, 10)
	}
	return replica + ":" + strconv.FormatUint(seq, 10)
}

// stateFromCalls says what the audit alone says of a session without a
// record (a stdio session lives only as long as its client).
func (d *sessionData) stateFromCalls() (state, reason, source string) {
	source = "audit only: no session record (stdio sessions have none)"
	for i := len(d.calls) - 1; i >= 0; i-- {
		switch d.calls[i].Code {
		case policy.CodeTripwire:
			return string(policy.StateEnded), "too many denials (max_denials)", source
		case policy.CodeSessionExpired:
			return string(policy.StateExpired), "its ttl ran out", source
		case policy.CodeSessionRevoked:
			return string(policy.StateRevoked), "revoked", source
		case policy.CodeSessionEnded:
			return string(policy.StateEnded), "ended", source
		}
	}
	return "unknown", "", source
}

// pickIncident sets the incident: a seq, a time, or the last call.
func (d *sessionData) pickIncident(src *Sources, o SessionOptions) error {
	inc := &d.header.Incident
	switch {
	case o.Incident != 0:
		inc.By = "seq"
		i := slices.IndexFunc(d.calls, func(c call) bool {
			return c.Seq == o.Incident && (o.IncidentReplica == "" || c.Replica == o.IncidentReplica)
		})
		name := recordName(o.IncidentReplica, o.Incident)
		if i < 0 {
			if r, err := src.Log.Get(o.Incident); err == nil && r.Session != d.id {
				return fmt.Errorf("%w: seq %s is a call of session %s", ErrIncident, name, r.Session)
			}
			return fmt.Errorf("%w: the log holds no call %s of session %s", ErrIncident, name, d.id)
		}
		d.incident = i
	case !o.At.IsZero():
		inc.By = "at"
		d.at = o.At
		// The incident's call is the last one at or before that time.
		for i, c := range d.calls {
			if !c.Time.After(o.At) {
				d.incident = i
			}
		}
	default:
		inc.By = "last call"
		d.incident = len(d.calls) - 1
		if d.incident < 0 {
			d.at = src.Now
		}
	}
	if d.incident >= 0 {
		c := &d.calls[d.incident]
		if d.at.IsZero() {
			d.at = c.Time
		}
		inc.Seq, inc.Replica, inc.Tool, inc.Request, inc.Decision, inc.Credential = c.Seq, c.Replica, c.Tool, c.request(), string(c.Decision), c.Credential
	}
	inc.Time = d.at
	return nil
}

// loadWindow reads how the session's credentials were used in the window:
// by which sessions of which scopes, under which grants.
func (d *sessionData) loadWindow(ctx context.Context, src *Sources) error {
	creds := d.credentialNames()
	d.clients = map[string]string{}
	if len(creds) == 0 {
		return nil
	}
	return src.Log.Usage(ctx, audit.UsageFilter{Credentials: creds, Since: d.header.Window.Since}, func(u audit.Usage) error {
		d.usage = append(d.usage, u)
		if u.Client != "" {
			d.clients[u.Session] = u.Client
		}
		return nil
	})
}

// credentialNames are the secrets the session could reach (its scope's
// tools) and the ones its calls used, sorted.
func (d *sessionData) credentialNames() []string {
	set := map[string]bool{}
	for _, s := range d.w.secretsOf(d.header.Scope) {
		set[s] = true
	}
	for _, c := range d.calls {
		if c.Credential != "" {
			set[c.Credential] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// timeline lists the calls, at most limit: the first, those around the
// incident and the last.
func (d *sessionData) timeline(limit int) ([]Event, int) {
	keep := func(i int) bool { return true }
	omitted := 0
	if len(d.calls) > limit {
		center := d.incident
		if center < 0 {
			center = len(d.calls) - 1
		}
		lo := max(0, center-limit/2)
		hi := min(len(d.calls), lo+limit-2)
		keep = func(i int) bool { return i == 0 || i == len(d.calls)-1 || i >= lo && i < hi }
	}
	var out []Event
	for i, c := range d.calls {
		if !keep(i) {
			omitted++
			continue
		}
		out = append(out, Event{Seq: c.Seq, Replica: c.Replica, Time: c.Time, Tool: c.Tool, Request: c.request(), Decision: string(c.Decision),
			Status: c.Status, Code: c.Code, Incident: i == d.incident})
	}
	return out, omitted
}

// passedFields returns the field names of a write call's body: the keys of
// args.body when it is an object (a generic http tool), else the keys of
// the arguments themselves (a templated tool's parameters), sorted.
func passedFields(args json.RawMessage) []string {
	var m map[string]json.RawMessage
	if json.Unmarshal(args, &m) != nil {
		return nil
	}
	if body, ok := m["body"]; ok {
		var b map[string]json.RawMessage
		if json.Unmarshal(body, &b) != nil {
			return nil
		}
		return slices.Sorted(maps.Keys(b))
	}
	if _, generic := m["method"]; generic {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}
