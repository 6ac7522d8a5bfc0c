package report

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools"
)

// The six questions of the incident template, by id.
var questionText = map[string]string{
	"held":      "What credentials did the agent hold at the time of the incident?",
	"necessary": "Were those credentials necessary for the task that triggered the incident?",
	"active":    "How long had those credentials been active?",
	"expiry":    "Could a session-scoped token have expired before the damage occurred?",
	"scope_fit": "Did the agent's credential scope match its intended task scope, or was it inherited from a broader one?",
	"shared":    "How many other agents share the same credentials?",
}

// QuestionIDs are the ids of the six questions, in order.
var QuestionIDs = []string{"held", "necessary", "active", "expiry", "scope_fit", "shared"}

func question(id, answer string, facts any) Question {
	return Question{ID: id, Question: questionText[id], Answer: answer, Facts: facts}
}

// HeldFacts are the numbers behind the held answer.
type HeldFacts struct {
	// Live says whether the session was live at the incident.
	Live        bool       `json:"live_at_incident"`
	Credentials []HeldFact `json:"credentials"`
}

// HeldFact is one secret the session held.
type HeldFact struct {
	Secret         string   `json:"secret"`
	VersionAtStart int      `json:"version_at_start,omitempty"`
	VersionSource  string   `json:"version_source"`
	Tools          []string `json:"tools"`
	Kinds          []string `json:"kinds"`
	Used           bool     `json:"used"`
}

func (d *sessionData) liveAt() bool {
	h := d.header
	if h.State == "active" || h.State == "unknown" {
		return h.Expires.IsZero() || d.at.Before(h.Expires)
	}
	return h.Ended.IsZero() || !d.at.After(h.Ended)
}

func (d *sessionData) held(creds []Credential) Question {
	f := HeldFacts{Live: d.liveAt()}
	var parts, unused []string
	for _, c := range creds {
		used := c.Calls.Allowed > 0
		f.Credentials = append(f.Credentials, HeldFact{Secret: c.Secret, VersionAtStart: c.VersionAtStart, VersionSource: c.VersionSource,
			Tools: c.Tools, Kinds: c.Kinds, Used: used})
		v := "version unknown"
		if c.VersionAtStart > 0 {
			v = fmt.Sprintf("v%d at the session's start", c.VersionAtStart)
		}
		parts = append(parts, fmt.Sprintf("%s (%s, %s) through %s", c.Secret, v, strings.Join(c.Kinds, "/"), c.toolList()))
		if !used {
			unused = append(unused, c.Secret)
		}
	}
	when := "At the incident"
	if d.header.Incident.Seq != 0 {
		when = fmt.Sprintf("At the incident (seq %s, %s)", recordName(d.header.Incident.Replica, d.header.Incident.Seq), stamp(d.at))
	}
	if !f.Live {
		when += ", after the session had ended,"
	}
	var answer string
	switch len(creds) {
	case 0:
		answer = when + " the session held no credential: its scope " + d.header.Scope + " grants no tool of the config."
	default:
		answer = fmt.Sprintf("%s the session held %s through scope %s: %s.", when, plural(len(creds), "credential"), d.header.Scope, joinAnd(parts))
		if len(unused) > 0 {
			answer += fmt.Sprintf(" It never used %s.", joinAnd(unused))
		}
	}
	return question("held", answer, f)
}

// NecessaryFacts are the numbers behind the necessary answer.
type NecessaryFacts struct {
	Credentials []NecessaryFact `json:"credentials"`
	// Denied are the session's denied requests, on any tool, up to the
	// incident.
	Denied      []Counted `json:"denied,omitempty"`
	DeniedCalls int       `json:"denied_calls"`
}

// NecessaryFact is one secret's granted reach against its use.
type NecessaryFact struct {
	Secret        string     `json:"secret"`
	Necessary     bool       `json:"necessary"`
	GrantedLines  int        `json:"granted_lines"`
	UsedLines     int        `json:"used_lines"`
	AllowedCalls  int        `json:"allowed_calls"`
	Grants        []GrantUse `json:"grants"`
	UnusedWrites  []string   `json:"unused_write_reach,omitempty"`
	UnusedDeletes []string   `json:"unused_delete_reach,omitempty"`
	// IncidentLine is the line that allowed the incident's call;
	// IncidentFirst says no earlier call of the session used it.
	IncidentLine   string `json:"incident_line,omitempty"`
	IncidentFirst  bool   `json:"incident_first_use,omitempty"`
	IncidentWrites bool   `json:"incident_writes,omitempty"`
	// Responses say what the agent received from read tools and which
	// fields it passed on.
	Responses []ResponseUse `json:"responses,omitempty"`
}

func (d *sessionData) necessary(creds []Credential) Question {
	var f NecessaryFacts
	var parts []string
	for _, c := range creds {
		n := NecessaryFact{Secret: c.Secret, Necessary: c.Calls.Allowed > 0, GrantedLines: len(c.Grants), UsedLines: c.usedLines(),
			AllowedCalls: c.Calls.Allowed, Grants: c.Grants, UnusedWrites: c.UnusedWrites, UnusedDeletes: c.UnusedDeletes, Responses: c.Responses,
			IncidentLine: c.IncidentLine, IncidentFirst: c.IncidentFirst, IncidentWrites: c.IncidentWrites}
		f.Credentials = append(f.Credentials, n)
		if !n.Necessary {
			parts = append(parts, fmt.Sprintf("secret %s was not necessary: it was granted %s and never used", c.Secret, plural(n.GrantedLines, "line")))
			continue
		}
		distinct := 0
		for _, g := range c.Grants {
			distinct += g.Distinct
		}
		p := fmt.Sprintf("secret %s was used for %d of its %s (%s, %s)", c.Secret, n.UsedLines, plural(n.GrantedLines, "granted line"),
			plural(n.AllowedCalls, "allowed call"), plural(distinct, "distinct request"))
		if c.IncidentFirst {
			reach := ""
			if c.IncidentWrites {
				reach = " (write reach)"
			}
			p += fmt.Sprintf("; the incident used %s%s, which no earlier call of the session did", c.IncidentLine, reach)
		}
		if len(c.UnusedDeletes) > 0 {
			p += fmt.Sprintf("; its delete reach (%s) was never used", joinAnd(clipList(c.UnusedDeletes, 3)))
		}
		if w := without(c.UnusedWrites, c.UnusedDeletes); len(w) > 0 {
			p += fmt.Sprintf("; its write reach (%s) was never used", joinAnd(clipList(w, 3)))
		}
		for _, r := range c.Responses {
			if len(r.Fields) == 0 && len(r.Passed) > 0 {
				p += fmt.Sprintf("; of the whole responses of %s (%d bytes a call) it passed on only %s: response.fields [%s] would do", r.Tool, r.AvgBytes,
					joinAnd(r.Passed), strings.Join(r.Proposed, ", "))
			}
		}
		parts = append(parts, p)
	}
	denied := map[string]int{}
	for _, cl := range d.seen() {
		if cl.Decision == "deny" && cl.Grant == "" {
			denied[clean(cl.Tool)+": "+clean(cl.request())+" ("+cl.Code+")"]++
			f.DeniedCalls++
		}
	}
	f.Denied = countedOf(denied)
	answer := "The session made no call with any of its credentials."
	if len(parts) > 0 {
		answer = capFirst(strings.Join(parts, "; ")) + "."
	}
	if f.DeniedCalls > 0 {
		answer += fmt.Sprintf(" Beyond its scope it attempted %s, denied: %s.", plural(f.DeniedCalls, "call"), listCounted(f.Denied, 3))
	} else {
		answer += " It attempted nothing beyond its scope."
	}
	return question("necessary", answer, f)
}

// ActiveFacts are the numbers behind the active answer.
type ActiveFacts struct {
	SessionStarted  time.Time    `json:"session_started"`
	SessionSeconds  int64        `json:"session_seconds_at_incident"`
	SessionDuration int64        `json:"session_seconds,omitempty"`
	Credentials     []ActiveFact `json:"credentials"`
}

// ActiveFact is one secret's age and use.
type ActiveFact struct {
	Secret  string    `json:"secret"`
	Created time.Time `json:"created,omitzero"`
	Rotated time.Time `json:"rotated,omitzero"`
	// AgeDays is how long the value in use at the incident had been set,
	// in days (from its last rotation, or its creation).
	AgeDays         int       `json:"age_days"`
	CreatedDays     int       `json:"created_days"`
	RotatedAfter    bool      `json:"rotated_after_incident"`
	Version         int       `json:"version_now,omitempty"`
	FirstUse        time.Time `json:"first_use,omitzero"`
	LastUse         time.Time `json:"last_use,omitzero"`
	VaultLastUsed   time.Time `json:"vault_last_used,omitzero"`
	NotRotated90Day bool      `json:"not_rotated_in_90_days"`
}

func (d *sessionData) active(creds []Credential) Question {
	f := ActiveFacts{SessionStarted: d.start, SessionSeconds: int64(d.at.Sub(d.start) / time.Second)}
	if !d.header.Ended.IsZero() {
		f.SessionDuration = int64(d.header.Ended.Sub(d.start) / time.Second)
	}
	var parts []string
	for _, c := range creds {
		a := ActiveFact{Secret: c.Secret, Created: c.Created, Rotated: c.Rotated, Version: c.VersionNow, FirstUse: c.FirstUse, LastUse: c.LastUse, VaultLastUsed: c.LastUsed}
		if !c.InVault {
			f.Credentials = append(f.Credentials, a)
			parts = append(parts, "secret "+c.Secret+" is not in the vault (its age is unknown)")
			continue
		}
		set := c.Created
		if !c.Rotated.IsZero() {
			set = c.Rotated
		}
		a.CreatedDays = days(d.at.Sub(c.Created))
		a.AgeDays = days(d.at.Sub(set))
		a.NotRotated90Day = d.at.Sub(set) > 90*24*time.Hour
		p := fmt.Sprintf("secret %s was created %s before the incident", c.Secret, human(d.at.Sub(c.Created)))
		switch {
		case c.Rotated.IsZero():
			p += " and never rotated"
		case c.Rotated.After(d.at):
			a.RotatedAfter = true
			a.AgeDays = a.CreatedDays
			p += fmt.Sprintf(" and rotated after it (at %s, now v%d)", stamp(c.Rotated), c.VersionNow)
		default:
			p += fmt.Sprintf(" and last rotated %s before it (v%d)", human(d.at.Sub(c.Rotated)), c.VersionNow)
		}
		if !c.FirstUse.IsZero() {
			p += fmt.Sprintf("; the session used it from %s to %s", clock(c.FirstUse), clock(c.LastUse))
		} else {
			p += "; the session never used it"
		}
		f.Credentials = append(f.Credentials, a)
		parts = append(parts, p)
	}
	answer := fmt.Sprintf("The session started %s and had run %s at the incident.", stamp(d.start), human(d.at.Sub(d.start)))
	if len(parts) > 0 {
		answer += " " + capFirst(strings.Join(parts, "; ")) + "."
	}
	return question("active", answer, f)
}

// ExpiryAnswerFacts are the numbers behind the expiry answer.
type ExpiryAnswerFacts struct {
	IncidentTime time.Time    `json:"incident_time"`
	Start        time.Time    `json:"session_started"`
	Credentials  []ExpiryFact `json:"credentials"`
}

// ExpiryFact is one secret's expiry against the incident.
type ExpiryFact struct {
	Secret           string   `json:"secret"`
	Kinds            []string `json:"kinds"`
	MintedPerSession bool     `json:"minted_per_session"`
	ExpiryFacts
	Token *Token `json:"token_at_incident,omitempty"`
}

func (d *sessionData) expiry(creds []Credential) Question {
	f := ExpiryAnswerFacts{IncidentTime: d.at, Start: d.start}
	var parts []string
	yes := false
	for _, c := range creds {
		e := c.Expiry
		f.Credentials = append(f.Credentials, ExpiryFact{Secret: c.Secret, Kinds: c.Kinds, MintedPerSession: c.MintedPerSession, ExpiryFacts: e, Token: c.Token})
		var kind string
		switch {
		case c.MintedPerSession && c.Token != nil && !c.Token.Expires.IsZero():
			kind = fmt.Sprintf("secret %s is minted per session (%s; the token in use at the incident expired at %s)", c.Secret, strings.Join(c.Kinds, "/"), stamp(c.Token.Expires))
		case c.MintedPerSession:
			kind = fmt.Sprintf("secret %s is minted per session (%s)", c.Secret, strings.Join(c.Kinds, "/"))
		case e.LongLived:
			kind = fmt.Sprintf("secret %s is long-lived (a static secret, valid until rotated)", c.Secret)
		case slices.Contains(c.Kinds, tools.CredAWSSTS):
			kind = fmt.Sprintf("secret %s holds static AWS keys (long-lived) or a role each session assumes; the session never used it, and only the secret says which", c.Secret)
		default:
			kind = fmt.Sprintf("secret %s sends short-lived OAuth 2.0 access tokens shared by its tool's sessions, refreshed from a long-lived refresh token", c.Secret)
		}
		var sized string
		switch {
		case e.SizedSeconds == 0 && e.ExpiredBefore:
			yes = true
			sized = "the session did no work with it before the incident, so a token minted on demand would not have existed"
		case e.SizedSeconds == 0:
			sized = "the session did no work with it before the incident"
		case e.ExpiredBefore:
			yes = true
			sized = fmt.Sprintf("a token sized to the %s of work done would have expired at %s, %s before the incident", human(time.Duration(e.SizedSeconds)*time.Second),
				clock(e.SizedExpiry), human(time.Duration(e.MarginSeconds)*time.Second))
		default:
			sized = fmt.Sprintf("a token sized to the %s of work done would still have been valid: the incident came %s into the session", human(time.Duration(e.SizedSeconds)*time.Second),
				human(d.at.Sub(d.start)))
		}
		parts = append(parts, kind+"; "+sized)
	}
	verdict := "No."
	if yes {
		verdict = "Yes."
	}
	if len(parts) == 0 {
		return question("expiry", "The session held no credential.", f)
	}
	return question("expiry", verdict+" "+capFirst(strings.Join(parts, "; "))+".", f)
}

// ScopeFitFacts are the numbers behind the scope_fit answer.
type ScopeFitFacts struct {
	Scope       string `json:"scope"`
	Description string `json:"description,omitempty"`
	// Verdict is "fit", "broader" (one agent, but grants nobody used or
	// broad patterns) or "inherited" (several agents share the scope and
	// this session used part of it).
	Verdict string `json:"verdict"`
	// Sessions of the scope in the window (with a call of one of its
	// credentials), and whose they were.
	Sessions int       `json:"sessions"`
	Agents   []Counted `json:"agents"`
	Labels   []Counted `json:"labels,omitempty"`
	Clients  []Counted `json:"clients,omitempty"`
	Configs  []Counted `json:"configs,omitempty"`
	// Lines counts the scope's granted lines; SessionUsed those this
	// session used; Unused lists those no session of the scope used in
	// the window.
	Lines       int      `json:"granted_lines"`
	SessionUsed int      `json:"session_used_lines"`
	Unused      []string `json:"unused_in_window,omitempty"`
	// Broad are lines with "**", a write method, or the bucket root.
	Broad []string `json:"broad,omitempty"`
}

func (d *sessionData) scopeFit() Question {
	f := ScopeFitFacts{Scope: d.header.Scope, Description: d.header.ScopeDescription}
	if !d.header.ScopeInConfig {
		f.Verdict = "unknown"
		return question("scope_fit", fmt.Sprintf("Scope %s is no longer in the config, so its grants cannot be compared with the task.", d.header.Scope), f)
	}
	sessions := map[string]bool{d.id: true}
	agents, labels, clients, configs := map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	count := func(id, label, client, config string) {
		agents[agentOf(label, client)]++
		if label != "" {
			labels[label]++
		}
		if client != "" {
			clients[client]++
		}
		if config != "" {
			configs[config]++
		}
	}
	first := ""
	if len(d.calls) > 0 {
		first = d.calls[0].Client
	}
	count(d.id, d.header.Label, first, strings.Join(d.header.Configs, ", "))
	scopeUsed := map[string]bool{}
	for _, u := range d.usage {
		if u.Scope != d.header.Scope {
			continue
		}
		if u.Grant != "" {
			scopeUsed[u.Grant] = true
		}
		if sessions[u.Session] {
			continue
		}
		sessions[u.Session] = true
		count(u.Session, d.w.sessions[u.Session].Label, d.clients[u.Session], u.Config)
	}
	// This session's own calls count as the scope's use too.
	for _, cl := range d.seen() {
		if cl.Grant != "" {
			scopeUsed[cl.Grant] = true
		}
	}
	f.Sessions = len(sessions)
	f.Agents, f.Labels, f.Clients, f.Configs = countedOf(agents), countedOf(labels), countedOf(clients), countedOf(configs)
	sessUsed := map[string]bool{}
	for _, cl := range d.seen() {
		if cl.Grant != "" {
			sessUsed[cl.Grant] = true
		}
	}
	for _, r := range d.rules {
		for j, t := range r.Texts {
			f.Lines++
			line := r.Tool + ": " + ruleLine(r, j)
			if sessUsed[t] {
				f.SessionUsed++
			}
			if !scopeUsed[t] {
				f.Unused = append(f.Unused, line)
			}
			if r.AnyDepth && r.Kind == "http" || r.Broad || lineWrites(r, j) {
				f.Broad = append(f.Broad, line)
			}
		}
	}
	switch {
	case len(agents) >= 2 && f.SessionUsed < f.Lines:
		f.Verdict = "inherited"
	case len(f.Unused) > 0 || slices.ContainsFunc(d.rules, func(r policy.Rule) bool { return r.Broad }):
		f.Verdict = "broader"
	default:
		f.Verdict = "fit"
	}
	desc := ""
	if f.Description != "" {
		desc = fmt.Sprintf(" (%q)", clean(f.Description))
	}
	var answer string
	switch f.Verdict {
	case "inherited":
		answer = fmt.Sprintf("Inherited: scope %s%s is shared by %s in the window (%s; %s), and this session used %d of its %d granted lines.",
			f.Scope, desc, plural(len(agents), "agent"), clean(listCounted(f.Agents, 4)), plural(f.Sessions, "session"), f.SessionUsed, f.Lines)
	case "broader":
		answer = fmt.Sprintf("Broader than the task: scope %s%s serves %s (%s), but this session used %d of its %d granted lines.",
			f.Scope, desc, plural(len(agents), "agent"), clean(listCounted(f.Agents, 4)), f.SessionUsed, f.Lines)
	default:
		answer = fmt.Sprintf("It matched: scope %s%s serves %s (%s), and every one of its %d granted lines was used in the window.",
			f.Scope, desc, plural(len(agents), "agent"), clean(listCounted(f.Agents, 4)), f.Lines)
	}
	var notes []string
	if len(f.Unused) > 0 {
		notes = append(notes, fmt.Sprintf("no session of the scope used %s in the window", joinAnd(clipList(f.Unused, 4))))
	}
	if len(f.Broad) > 0 {
		notes = append(notes, fmt.Sprintf("broad or write lines: %s", joinAnd(clipList(f.Broad, 4))))
	}
	if len(notes) > 0 {
		answer += " " + capFirst(strings.Join(notes, "; ")) + "."
	}
	return question("scope_fit", answer, f)
}

// SharedFacts are the numbers behind the shared answer.
type SharedFacts struct {
	Credentials []SharedFact `json:"credentials"`
}

// SharedFact is who else reaches and uses one secret.
type SharedFact struct {
	Secret string `json:"secret"`
	Sharing
	// OtherScopes are the scopes beside the session's that reach it.
	OtherScopes []string `json:"other_scopes"`
}

func (d *sessionData) shared(creds []Credential) Question {
	var f SharedFacts
	var parts []string
	for _, c := range creds {
		sf := SharedFact{Secret: c.Secret, Sharing: c.Shared}
		var other []string
		toolSet := map[string]bool{}
		for _, s := range c.Shared.Scopes {
			if s.Scope != d.header.Scope {
				other = append(other, s.Scope)
			}
			for _, t := range s.Tools {
				toolSet[t] = true
			}
		}
		sf.OtherScopes = other
		f.Credentials = append(f.Credentials, sf)
		p := "secret " + c.Secret + " is reachable "
		if len(other) == 0 {
			p += "from this scope alone"
		} else {
			p += fmt.Sprintf("from %s besides %s (%s)", plural(len(other), "other scope"), d.header.Scope, joinAnd(clipList(other, 5)))
		}
		p += fmt.Sprintf(" through %s", joinAnd(slices.Sorted(maps.Keys(toolSet))))
		if c.Shared.Sessions == 0 {
			p += ", and no other session used it in the window"
		} else {
			p += fmt.Sprintf(", and %s of %s used it in the window (%s)", plural(c.Shared.Sessions, "other session"),
				plural(len(c.Shared.Agents), "agent"), clean(listCounted(c.Shared.Agents, 4)))
		}
		parts = append(parts, p)
	}
	answer := "The session held no credential."
	if len(parts) > 0 {
		answer = capFirst(strings.Join(parts, "; ")) + "."
	}
	return question("shared", answer, f)
}

// clipList keeps the first n items and says how many more there were.
func clipList(items []string, n int) []string {
	if len(items) <= n {
		return items
	}
	return append(slices.Clone(items[:n]), fmt.Sprintf("%d more", len(items)-n))
}

// without returns the items of a not in b.
func without(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func capFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// clock writes a time of day, UTC.
func clock(t time.Time) string { return t.UTC().Format("15:04:05Z") }
