package report

import (
	"context"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
)

// ReplayOptions say which recorded calls a replay checks.
type ReplayOptions struct {
	// Since is how far back calls are replayed; 0 is DefaultWindow.
	Since time.Duration
	// Examples caps the example requests of each flip; 0 is 5.
	Examples int
}

// ReplayReport is what a new config would have decided about every
// recorded call: `keyhole policy test --json` prints it as it is.
type ReplayReport struct {
	Config string `json:"config"`
	Window Window `json:"window"`
	// Replayed counts the calls checked against the new config, Unchanged
	// those it decides as they were decided.
	Replayed  int `json:"replayed"`
	Unchanged int `json:"unchanged"`
	// Skipped counts the calls no grant decided (refused arguments, a
	// session past its ttl, a rate limit) or whose request the record
	// does not hold whole, by why.
	Skipped []Counted `json:"skipped,omitempty"`
	// Widened are calls that were denied and would be allowed; Narrowed
	// calls that were allowed and would be denied.
	Widened  []Flip `json:"widened"`
	Narrowed []Flip `json:"narrowed"`
}

// Flips counts the calls that would be decided otherwise.
func (r *ReplayReport) Flips() int {
	n := 0
	for _, f := range append(slices.Clone(r.Widened), r.Narrowed...) {
		n += f.Calls
	}
	return n
}

// Flip is a group of calls of one scope and tool that the new config
// decides otherwise, by the grant that would allow them (widened) or that
// allowed them (narrowed).
type Flip struct {
	Scope string `json:"scope"`
	Tool  string `json:"tool"`
	// Grant is the new config's grant that would allow the calls
	// (widened) or the grant that allowed them (narrowed).
	Grant string `json:"grant"`
	// Reason is the new config's reason for a denial (narrowed), or says
	// the tool is newly granted when the request was not recorded.
	Reason   string   `json:"reason,omitempty"`
	Calls    int      `json:"calls"`
	Sessions int      `json:"sessions"`
	Examples []string `json:"examples"`
}

// grantCodes are the denial codes a scope's grants decide; a call denied
// with another code (a limit, an expired session) says nothing of them.
var grantCodes = map[string]bool{policy.CodeNotGranted: true, policy.CodeUnknownTool: true, policy.CodeTripwire: true, policy.CodeApprovalRequired: true}

// How a call went, or would go, as far as grants and approvals decide.
const (
	wentThrough = iota // a grant allowed it
	byPerson           // a person approved it through an access request
	asked              // it waited for a person, who did not approve it
	refused            // no grant allows it and no person may
)

// oldFate is how a recorded call went.
func oldFate(c *audit.Call) int {
	switch {
	case strings.HasPrefix(c.Grant, "access request ") || strings.Contains(c.Grant, "by access request "):
		return byPerson
	case c.Grant != "":
		return wentThrough
	case c.Code == policy.CodeApprovalRequired:
		return asked
	}
	return refused
}

// newFate is how a call would go under d: allowed, waiting for a person
// (a grant with approve: true, or on_deny: request), or denied.
func newFate(d policy.Decision, sc *policy.Scope) int {
	switch {
	case d.Allow:
		return wentThrough
	case d.Ask || d.Code == policy.CodeNotGranted && sc != nil && sc.Approval().OnDenyRequest:
		return asked
	}
	return refused
}

// maxDecisions bounds the cache of decisions a replay keeps.
const maxDecisions = 100_000

// Replay checks every recorded call of the window (its canonical request,
// scope and tool) against the scopes of next, and reports what would
// flip.
func Replay(ctx context.Context, src *Sources, next *config.Loaded, o ReplayOptions) (*ReplayReport, error) {
	if o.Since == 0 {
		o.Since = DefaultWindow
	}
	if o.Examples == 0 {
		o.Examples = 5
	}
	rep := &ReplayReport{Config: next.Path, Window: Window{Since: src.Now.Add(-o.Since), Until: src.Now}}
	type flipKey struct {
		widened            bool
		scope, tool, grant string
	}
	type flipAcc struct {
		reason   string // of the first call
		calls    int
		sessions map[string]bool
		examples map[string]bool
	}
	flips := map[flipKey]*flipAcc{}
	skipped := map[string]int{}
	type decKey struct{ scope, tool, method, path, action, key string }
	type decided struct {
		d    policy.Decision
		fate int
	}
	cache := map[decKey]decided{}
	decide := func(c *audit.Call) decided {
		k := decKey{c.Scope, c.Tool, c.Method, c.Path, c.Action, c.Key}
		if d, ok := cache[k]; ok {
			return d
		}
		var d policy.Decision
		sc, ok := next.Policy.Scope(c.Scope)
		switch {
		case !ok:
			d = policy.Decision{Code: policy.CodeNotGranted, Reason: "scope " + c.Scope + " is not in " + next.Path}
		case next.Tools[c.Tool] == nil:
			d = policy.Decision{Code: policy.CodeUnknownTool, Reason: "tool " + c.Tool + " is not in " + next.Path}
		default:
			req := policy.Request{Tool: c.Tool, Method: c.Method, Action: c.Action, Key: c.Key}
			if c.Action == "" {
				req.Segments = policy.SplitPath(c.Path)
			}
			d = sc.Decide(req)
		}
		if len(cache) == maxDecisions {
			clear(cache)
		}
		dd := decided{d, newFate(d, sc)}
		cache[k] = dd
		return dd
	}
	add := func(k flipKey, reason string, c *audit.Call) {
		a := flips[k]
		if a == nil {
			a = &flipAcc{reason: reason, sessions: map[string]bool{}, examples: map[string]bool{}}
			flips[k] = a
		}
		a.calls++
		a.sessions[c.Session] = true
		if len(a.examples) < o.Examples {
			a.examples[requestText(c.Method, c.Path, c.Action, c.Key)] = true
		}
	}
	err := src.Log.Calls(ctx, audit.CallFilter{Since: rep.Window.Since}, func(c audit.Call) error {
		if internal(c.Tool) {
			return nil
		}
		wasAllowed := c.Grant != ""
		switch {
		case !wasAllowed && !grantCodes[c.Code]:
			skipped["not decided by a grant ("+orDash(c.Code)+")"]++
			return nil
		case c.Cut || strings.Contains(c.Path, "[REDACTED]") || strings.Contains(c.Key, "[REDACTED]"):
			skipped["its path or key was cut or redacted in the record"]++
			return nil
		case !wasAllowed && c.Method == "" && c.Action == "":
			// A call of a tool its scope did not grant: the tool never
			// described the request. If the new config grants the tool to
			// the scope, the agent reaches it.
			if sc, ok := next.Policy.Scope(c.Scope); ok && sc.HasTool(c.Tool) {
				rep.Replayed++
				add(flipKey{widened: true, scope: c.Scope, tool: c.Tool, grant: "the tool " + c.Tool},
					"the tool is newly granted to the scope; the request was not recorded (the tool was unknown to the scope then)", &c)
				return nil
			}
			rep.Replayed++
			rep.Unchanged++
			return nil
		}
		rep.Replayed++
		dd := decide(&c)
		was, will := oldFate(&c), dd.fate
		switch {
		case was == will, was == byPerson && will == asked:
			rep.Unchanged++
		case will == wentThrough:
			grant := dd.d.Grant
			if was != refused {
				grant += " (no person's approval needed any more)"
			}
			add(flipKey{widened: true, scope: c.Scope, tool: c.Tool, grant: grant}, "", &c)
		case will == asked && was == refused:
			add(flipKey{widened: true, scope: c.Scope, tool: c.Tool, grant: "a person's approval"}, dd.d.Reason, &c)
		case will == asked:
			add(flipKey{scope: c.Scope, tool: c.Tool, grant: c.Grant}, "would wait for a person's approval: "+dd.d.Reason, &c)
		case was == asked:
			// Asked, not approved, and now denied outright: either way
			// the call did not go through.
			rep.Unchanged++
		default:
			// The reason names the request: the group keeps its first's.
			old := c.Grant
			if old == "" {
				old = "a person's approval"
			}
			add(flipKey{scope: c.Scope, tool: c.Tool, grant: old}, dd.d.Reason, &c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range slices.SortedFunc(maps.Keys(flips), func(a, b flipKey) int {
		return strings.Compare(a.scope+"\x00"+a.tool+"\x00"+a.grant, b.scope+"\x00"+b.tool+"\x00"+b.grant)
	}) {
		a := flips[k]
		f := Flip{Scope: k.scope, Tool: k.tool, Grant: k.grant, Reason: a.reason, Calls: a.calls, Sessions: len(a.sessions), Examples: slices.Sorted(maps.Keys(a.examples))}
		if k.widened {
			rep.Widened = append(rep.Widened, f)
		} else {
			rep.Narrowed = append(rep.Narrowed, f)
		}
	}
	if rep.Widened == nil {
		rep.Widened = []Flip{}
	}
	if rep.Narrowed == nil {
		rep.Narrowed = []Flip{}
	}
	rep.Skipped = countedOf(skipped)
	return rep, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteText writes what would flip, as a person reads it.
func (r *ReplayReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("Replayed %s from %s to %s against %s: %d unchanged, %s.\n", plural(r.Replayed, "recorded call"), stamp(r.Window.Since), stamp(r.Window.Until),
		clean(r.Config), r.Unchanged, plural(r.Flips(), "flip"))
	for _, s := range r.Skipped {
		ew.printf("Not replayed: %s (%s).\n", plural(s.Count, "call"), s.Value)
	}
	if len(r.Widened) > 0 {
		ew.printf("\nDenied → allowed (the new config widens):\n")
		for _, f := range r.Widened {
			ew.printf("  scope %s, tool %s: %s of %s, would be allowed by %s\n", clean(f.Scope), clean(f.Tool), plural(f.Calls, "call"), plural(f.Sessions, "session"), clean(f.Grant))
			if f.Reason != "" {
				ew.printf("    note: %s\n", clean(f.Reason))
			}
			for _, e := range f.Examples {
				ew.printf("    e.g. %s\n", clean(e))
			}
		}
	}
	if len(r.Narrowed) > 0 {
		ew.printf("\nAllowed → denied (what would break):\n")
		for _, f := range r.Narrowed {
			ew.printf("  scope %s, tool %s: %s of %s, allowed by %s\n", clean(f.Scope), clean(f.Tool), plural(f.Calls, "call"), plural(f.Sessions, "session"), clean(f.Grant))
			ew.printf("    now: %s\n", clean(f.Reason))
			for _, e := range f.Examples {
				ew.printf("    e.g. %s\n", clean(e))
			}
		}
	}
	if r.Flips() == 0 {
		ew.printf("\nNothing flips.\n")
	}
	return ew.err
}
