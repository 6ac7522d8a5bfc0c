package report

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/tools"
)

// Credential is everything the session report knows of one secret the
// session could reach: the facts behind the six answers.
type Credential struct {
	Secret string `json:"secret"`
	// Tools are the tools of the session's scope (and of its calls) that
	// inject the secret.
	Tools   []string `json:"tools"`
	InVault bool     `json:"in_vault"`
	// VersionAtStart is the secret's version when the session started,
	// as VersionSource says it is known; VersionNow is the vault's.
	VersionAtStart int       `json:"version_at_start,omitempty"`
	VersionSource  string    `json:"version_source"`
	VersionNow     int       `json:"version_now,omitempty"`
	Created        time.Time `json:"created,omitzero"`
	// Rotated is when the current value was set; zero if never rotated.
	Rotated time.Time `json:"rotated,omitzero"`
	// LastUsed is the vault's record of the secret's last use (kept to
	// the minute).
	LastUsed time.Time `json:"last_used,omitzero"`
	// Kinds are the credential kinds the tools sent (KindsSource
	// "calls") or can send (KindsSource "config").
	Kinds            []string `json:"kinds"`
	KindsSource      string   `json:"kinds_source"`
	MintedPerSession bool     `json:"minted_per_session"`
	// Calls counts the session's calls of the secret's tools, up to the
	// incident; FirstUse and LastUse bound its allowed ones.
	Calls    CallCounts `json:"calls"`
	FirstUse time.Time  `json:"first_use,omitzero"`
	LastUse  time.Time  `json:"last_use,omitzero"`
	// Grants is every granted line (a method on a path pattern, an action
	// on a prefix) of the secret's tools, with what used it.
	Grants        []GrantUse `json:"grants"`
	UnusedWrites  []string   `json:"unused_write_reach,omitempty"`
	UnusedDeletes []string   `json:"unused_delete_reach,omitempty"`
	// Denied are the session's denied requests on the secret's tools.
	Denied []Counted `json:"denied,omitempty"`
	// IncidentLine is the granted line that allowed the incident's call,
	// when it used this secret; IncidentFirst says no earlier call of the
	// session used that line.
	IncidentLine   string `json:"incident_line,omitempty"`
	IncidentFirst  bool   `json:"incident_first_use,omitempty"`
	IncidentWrites bool   `json:"incident_writes,omitempty"`
	// Token is the minted token the last allowed call before the
	// incident sent, if one was.
	Token *Token `json:"token_at_incident,omitempty"`
	// Responses say, per read tool, how much the agent received and
	// which fields it passed on.
	Responses []ResponseUse `json:"responses,omitempty"`
	Shared    Sharing       `json:"shared"`
	Expiry    ExpiryFacts   `json:"expiry"`
}

// GrantUse is one granted line and what the session used of it.
type GrantUse struct {
	Tool string `json:"tool"`
	// Grant is the index of the grant in the scope's grants.
	Grant    int    `json:"grant"`
	Line     string `json:"line"`
	Writes   bool   `json:"writes"`
	Deletes  bool   `json:"deletes"`
	AnyDepth bool   `json:"any_depth"`
	Broad    bool   `json:"broad"`
	// Calls and Distinct count the session's allowed calls under it and
	// their distinct requests; Examples are some of those.
	Calls    int      `json:"calls"`
	Distinct int      `json:"distinct_requests"`
	Examples []string `json:"examples,omitempty"`
	// ScopeCalls counts the calls of every session of the scope in the
	// window under it.
	ScopeCalls int `json:"scope_calls_in_window"`
}

// Token is a minted credential as the audit names it: never its value.
type Token struct {
	Kind    string    `json:"kind"`
	ID      string    `json:"id,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
}

// ResponseUse is what an agent received from a read tool and which fields
// of it it passed on to write calls.
type ResponseUse struct {
	Tool string `json:"tool"`
	// Fields is the tool's response.fields; empty when the whole response
	// reaches the agent.
	Fields   []string `json:"fields,omitempty"`
	Calls    int      `json:"calls"`
	BytesIn  int64    `json:"bytes_in"`
	AvgBytes int64    `json:"avg_bytes"`
	// Passed are the field names of the bodies of the session's allowed
	// write calls after it first read the tool; Proposed is
	// response.fields to set, when the tool has none.
	Passed   []string `json:"fields_passed_on,omitempty"`
	Proposed []string `json:"proposed_fields,omitempty"`
}

// Sharing is who else reaches and uses a secret.
type Sharing struct {
	// Scopes are the config's scopes that grant a tool of the secret.
	Scopes []ScopeReach `json:"scopes"`
	// Sessions counts the other sessions with an allowed call of the
	// secret in the window; Agents and ScopesUsed say whose.
	Sessions   int       `json:"sessions"`
	Agents     []Counted `json:"agents,omitempty"`
	ScopesUsed []Counted `json:"scopes_used,omitempty"`
}

// ExpiryFacts are the numbers behind the expiry answer for a secret.
type ExpiryFacts struct {
	// LongLived is set for a static secret, valid until rotated: one
	// whose calls sent it as stored, or whose tools can send nothing else.
	LongLived bool `json:"long_lived"`
	// Work is the time from the session's start to its last allowed call
	// of the secret before the incident; Sized is that rounded up to a
	// minute: the lifetime of a token sized to the work done.
	WorkSeconds  int64     `json:"work_seconds"`
	SizedSeconds int64     `json:"sized_seconds"`
	SizedExpiry  time.Time `json:"sized_expiry"`
	// ExpiredBefore is set when such a token would have expired before the
	// incident, Margin before it.
	ExpiredBefore bool  `json:"expired_before_incident"`
	MarginSeconds int64 `json:"margin_seconds"`
	// SessionExpires is when the session itself expired (its ttl).
	SessionExpires time.Time `json:"session_expires,omitzero"`
}

// seen returns the calls up to the incident: the session as it stood.
func (d *sessionData) seen() []call {
	if d.incident >= 0 {
		return d.calls[:d.incident+1]
	}
	if d.header.Incident.By == "last call" {
		return d.calls
	}
	return nil
}

// credentials builds the facts of every secret the session could reach.
func (d *sessionData) credentials() []Credential {
	seen := d.seen()
	var out []Credential
	for _, name := range d.credentialNames() {
		c := Credential{Secret: name}
		toolSet := map[string]bool{}
		for _, r := range d.rules {
			if d.w.secretOf(r.Tool) == name {
				toolSet[r.Tool] = true
			}
		}
		for _, cl := range seen {
			if cl.Credential == name {
				toolSet[cl.Tool] = true
			}
		}
		c.Tools = slices.Sorted(maps.Keys(toolSet))
		d.vaultFacts(&c, seen)
		d.kinds(&c, seen)
		d.use(&c, seen)
		d.responses(&c, seen)
		d.sharing(&c)
		d.expiryFacts(&c, seen)
		out = append(out, c)
	}
	return out
}

// vaultFacts fills what the vault says, and the version at the start.
func (d *sessionData) vaultFacts(c *Credential, seen []call) {
	m, ok := d.w.secrets[c.Secret]
	c.InVault = ok
	if ok {
		c.VersionNow, c.Created, c.LastUsed = m.Version, m.Created, m.LastUsed
		if m.Version > 1 {
			c.Rotated = m.Updated
		}
	}
	for _, cl := range seen {
		if cl.Credential == c.Secret && cl.Version > 0 {
			c.VersionAtStart = cl.Version
			c.VersionSource = "its first use in the session, at " + stamp(cl.Time)
			return
		}
	}
	switch {
	case !ok:
		c.VersionSource = "unknown: the secret is not in the vault"
	case !m.Updated.After(d.start):
		c.VersionAtStart = m.Version
		c.VersionSource = "the vault: unchanged since before the session started"
	default:
		c.VersionSource = "unknown: rotated at " + stamp(m.Updated) + ", after the session started, and never used by it"
	}
}

// kinds fills what kind of credential the tools sent or can send.
func (d *sessionData) kinds(c *Credential, seen []call) {
	set := map[string]bool{}
	for _, cl := range seen {
		if cl.Credential == c.Secret && cl.CredKind != "" {
			set[cl.CredKind] = true
		}
	}
	c.KindsSource = "calls"
	if len(set) == 0 {
		c.KindsSource = "config"
		for _, t := range c.Tools {
			for _, k := range d.w.tools[t].Kinds {
				set[k] = true
			}
		}
	}
	c.Kinds = slices.Sorted(maps.Keys(set))
	// Minted per session only if every kind it can send is.
	c.MintedPerSession = len(c.Kinds) > 0 && !slices.ContainsFunc(c.Kinds, func(k string) bool { return !tools.PerSession(k) })
}

// use fills the granted lines and what the session used of them.
func (d *sessionData) use(c *Credential, seen []call) {
	type lineUse struct {
		calls    int
		requests map[string]bool
	}
	uses := map[ruleRef]*lineUse{}
	denied := map[string]int{}
	var incident *call
	if d.incident >= 0 && d.calls[d.incident].Credential == c.Secret && d.calls[d.incident].Grant != "" {
		incident = &d.calls[d.incident]
		c.IncidentFirst = true
	}
	for i, cl := range seen {
		if cl.Credential != c.Secret {
			continue
		}
		if incident != nil && i < d.incident && cl.Grant == incident.Grant {
			c.IncidentFirst = false
		}
		c.Calls.add(cl.Decision)
		if cl.Grant == "" {
			if cl.Decision == "deny" {
				denied[cl.request()+" ("+cl.Code+")"]++
			}
			continue
		}
		if c.FirstUse.IsZero() {
			c.FirstUse = cl.Time
		}
		c.LastUse = cl.Time
		ref, ok := d.texts[cl.Grant]
		if !ok {
			continue
		}
		u := uses[ref]
		if u == nil {
			u = &lineUse{requests: map[string]bool{}}
			uses[ref] = u
		}
		u.calls++
		if len(u.requests) < 10_000 {
			u.requests[cl.request()] = true
		}
	}
	scopeCalls := map[string]int{}
	for _, u := range d.usage {
		if u.Scope == d.header.Scope && u.Credential == c.Secret && u.Grant != "" {
			scopeCalls[u.Grant] += u.Calls
		}
	}
	for i, r := range d.rules {
		if d.w.secretOf(r.Tool) != c.Secret {
			continue
		}
		for j := range r.Texts {
			g := GrantUse{Tool: r.Tool, Grant: r.Grant, Line: ruleLine(r, j), Writes: lineWrites(r, j), Deletes: lineDeletes(r, j),
				AnyDepth: r.AnyDepth, Broad: r.Broad, ScopeCalls: scopeCalls[r.Texts[j]]}
			if u := uses[ruleRef{i, j}]; u != nil {
				g.Calls, g.Distinct = u.calls, len(u.requests)
				g.Examples = slices.Sorted(maps.Keys(u.requests))
				if len(g.Examples) > 5 {
					g.Examples = g.Examples[:5]
				}
			} else {
				if g.Writes {
					c.UnusedWrites = append(c.UnusedWrites, r.Tool+": "+g.Line)
				}
				if g.Deletes {
					c.UnusedDeletes = append(c.UnusedDeletes, r.Tool+": "+g.Line)
				}
			}
			c.Grants = append(c.Grants, g)
		}
	}
	c.Denied = countedOf(denied)
	if incident != nil {
		if ref, ok := d.texts[incident.Grant]; ok {
			c.IncidentLine = incident.Tool + ": " + ruleLine(d.rules[ref.rule], ref.at)
			c.IncidentWrites = lineWrites(d.rules[ref.rule], ref.at)
		} else {
			c.IncidentLine = incident.Grant
		}
	}
	// The minted token the last allowed call before the incident sent.
	for i := len(seen) - 1; i >= 0; i-- {
		cl := seen[i]
		if cl.Credential == c.Secret && cl.Grant != "" && cl.CredKind != "" && cl.CredKind != tools.CredStatic {
			c.Token = &Token{Kind: cl.CredKind, ID: cl.TokenID, Expires: cl.TokenExp}
			break
		}
	}
}

// responses fills, for each read tool of the secret the session called,
// what it received and which fields it passed on.
func (d *sessionData) responses(c *Credential, seen []call) {
	for _, t := range c.Tools {
		info := d.w.tools[t]
		if info.Kind != "http" {
			continue
		}
		ru := ResponseUse{Tool: t, Fields: info.Fields}
		firstRead := -1
		for i, cl := range seen {
			if cl.Tool != t || cl.Grant == "" {
				continue
			}
			if cl.Method != "GET" && cl.Method != "HEAD" {
				ru.Calls = -1 // not a read tool for this session
				break
			}
			if firstRead < 0 {
				firstRead = i
			}
			ru.Calls++
			ru.BytesIn += cl.BytesIn
		}
		if ru.Calls <= 0 {
			continue
		}
		ru.AvgBytes = ru.BytesIn / int64(ru.Calls)
		passed := map[string]bool{}
		for _, cl := range seen[firstRead:] {
			for _, f := range cl.Passed {
				passed[f] = true
			}
		}
		ru.Passed = slices.Sorted(maps.Keys(passed))
		if len(ru.Fields) == 0 {
			ru.Proposed = ru.Passed
		}
		c.Responses = append(c.Responses, ru)
	}
}

// sharing fills who else reaches and used the secret in the window.
func (d *sessionData) sharing(c *Credential) {
	c.Shared.Scopes = d.w.scopesReaching(c.Secret)
	sessions := map[string]bool{}
	agents, scopes := map[string]int{}, map[string]int{}
	for _, u := range d.usage {
		if u.Credential != c.Secret || u.Grant == "" || u.Session == d.id || sessions[u.Session] {
			continue
		}
		sessions[u.Session] = true
		scopes[u.Scope]++
		agents[d.agent(u.Session)]++
	}
	c.Shared.Sessions = len(sessions)
	c.Shared.Agents = countedOf(agents)
	c.Shared.ScopesUsed = countedOf(scopes)
}

// agent names the agent of another session in the window.
func (d *sessionData) agent(id string) string {
	return agentOf(d.w.sessions[id].Label, d.clients[id])
}

// expiryFacts fills when a token sized to the work would have expired.
func (d *sessionData) expiryFacts(c *Credential, seen []call) {
	e := &c.Expiry
	e.LongLived = slices.Equal(c.Kinds, []string{tools.CredStatic})
	e.SessionExpires = d.header.Expires
	var workEnd time.Time
	for i, cl := range seen {
		if i == d.incident {
			break // the incident is not work
		}
		if cl.Credential == c.Secret && cl.Grant != "" {
			workEnd = cl.Time
		}
	}
	if !workEnd.IsZero() {
		work := workEnd.Sub(d.start)
		e.WorkSeconds = int64(work / time.Second)
		sized := (work + time.Minute - 1).Truncate(time.Minute)
		if sized <= 0 {
			sized = time.Minute
		}
		e.SizedSeconds = int64(sized / time.Second)
		e.SizedExpiry = d.start.Add(sized)
	} else {
		// No work with it: a token minted on demand would never have
		// been minted.
		e.SizedExpiry = d.start
	}
	e.ExpiredBefore = d.at.After(e.SizedExpiry)
	e.MarginSeconds = int64(d.at.Sub(e.SizedExpiry) / time.Second)
}

// usedLines counts the lines of a credential the session used.
func (c *Credential) usedLines() int {
	n := 0
	for _, g := range c.Grants {
		if g.Calls > 0 {
			n++
		}
	}
	return n
}

// toolList writes the tools of a credential for an answer.
func (c *Credential) toolList() string { return strings.Join(c.Tools, ", ") }
