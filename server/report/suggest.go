package report

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// SuggestOptions say whose calls a suggestion learns from.
type SuggestOptions struct {
	Scope string
	// Session, if set, learns from that session's calls alone.
	Session string
	// Since is how far back calls count; 0 is 7 days.
	Since time.Duration
}

// Suggestion is the smallest scope that would have allowed what a scope's
// sessions did: `keyhole scope suggest --json` prints it as it is.
type Suggestion struct {
	Scope   string `json:"scope"`
	Session string `json:"session,omitempty"`
	Window  Window `json:"window"`
	// Calls counts the allowed calls the grants come from, Sessions their
	// sessions; Skipped counts allowed calls no grant could be learned
	// from, by why.
	Calls    int       `json:"calls"`
	Sessions int       `json:"sessions"`
	Skipped  []Counted `json:"skipped,omitempty"`
	// Grants are the suggested grants; YAML is the scope with them, ready
	// to paste under scopes:.
	Grants []policy.GrantConfig `json:"grants"`
	YAML   string               `json:"yaml"`
	// Diff says of every line of the current scope whether to keep it,
	// narrow it or remove it.
	Diff []LineDiff `json:"diff"`
	// Denied are the requests the scope denied: asked for, not granted,
	// and never turned into grants.
	Denied []Counted `json:"denied,omitempty"`
}

// LineDiff is one line of the current scope against what was used.
type LineDiff struct {
	Tool  string `json:"tool"`
	Grant int    `json:"grant"`
	Line  string `json:"line"`
	// Status is "keep", "narrow" (NarrowTo is what was used of it) or
	// "unused" (no allowed call in the window: remove it).
	Status   string   `json:"status"`
	Calls    int      `json:"calls"`
	Distinct int      `json:"distinct_requests"`
	NarrowTo []string `json:"narrow_to,omitempty"`
}

// learned is what a suggestion learns from one tool's allowed calls.
type learned struct {
	paths map[string][][]string // method → paths (http)
	keys  map[string][]string   // action → keys (s3)
	seen  map[string]bool       // distinct requests
}

func newLearned() *learned {
	return &learned{paths: map[string][][]string{}, keys: map[string][]string{}, seen: map[string]bool{}}
}

func (l *learned) add(c *audit.Call) {
	req := requestText(c.Method, c.Path, c.Action, c.Key)
	if l.seen[req] {
		return
	}
	l.seen[req] = true
	if c.Action != "" {
		l.keys[c.Action] = append(l.keys[c.Action], c.Key)
	} else {
		l.paths[c.Method] = append(l.paths[c.Method], policy.SplitPath(c.Path))
	}
}

// Suggest learns, from the allowed calls of a scope (or one session) in a
// window, the smallest grants that would have allowed them. There is no
// permissive learning: denied calls are listed apart, never granted.
func Suggest(ctx context.Context, src *Sources, o SuggestOptions) (*Suggestion, error) {
	if o.Since == 0 {
		o.Since = 7 * 24 * time.Hour
	}
	w := newWorld(src)
	_, ok := w.scope(o.Scope)
	if !ok {
		return nil, fmt.Errorf("report: no scope %q in the config (scopes: %s)", o.Scope, joinAnd(w.scopes))
	}
	s := &Suggestion{Scope: o.Scope, Session: o.Session, Window: Window{Since: src.Now.Add(-o.Since), Until: src.Now}}
	sessions, err := suggestSessions(ctx, src, w, o, s.Window.Since)
	if err != nil {
		return nil, err
	}
	byTool := map[string]*learned{}
	byLine := map[string]*learned{}
	lineCalls := map[string]int{}
	skipped, denied := map[string]int{}, map[string]int{}
	used := map[string]bool{}
	for _, id := range sessions {
		err := src.Log.Calls(ctx, audit.CallFilter{Session: id, Since: s.Window.Since}, func(c audit.Call) error {
			if internal(c.Tool) || c.Scope != o.Scope {
				return nil
			}
			if c.Grant == "" {
				if c.Decision == audit.Deny && c.Code != "invalid_arguments" && c.Code != "" {
					denied[clean(c.Tool)+": "+clean(requestText(c.Method, c.Path, c.Action, c.Key))+" ("+c.Code+")"]++
				}
				return nil
			}
			switch {
			case w.tools[c.Tool].Kind == "":
				skipped["the tool is no longer in the config"]++
				return nil
			case c.Cut || strings.Contains(c.Path, "[REDACTED]") || strings.Contains(c.Key, "[REDACTED]"):
				skipped["its path or key was cut or redacted in the record"]++
				return nil
			}
			s.Calls++
			used[c.Session] = true
			if byTool[c.Tool] == nil {
				byTool[c.Tool] = newLearned()
			}
			byTool[c.Tool].add(&c)
			if byLine[c.Grant] == nil {
				byLine[c.Grant] = newLearned()
			}
			byLine[c.Grant].add(&c)
			lineCalls[c.Grant]++
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	s.Sessions = len(used)
	s.Skipped, s.Denied = countedOf(skipped), countedOf(denied)
	for _, tool := range slices.Sorted(maps.Keys(byTool)) {
		s.Grants = append(s.Grants, w.grantsFor(tool, byTool[tool])...)
	}
	s.Diff = w.diff(o.Scope, byLine, lineCalls)
	s.render(w)
	if err := s.check(w, byTool); err != nil {
		return nil, err
	}
	return s, nil
}

// suggestSessions returns the sessions to learn from: the one asked for,
// or every session of the scope with a call in the window.
func suggestSessions(ctx context.Context, src *Sources, w *world, o SuggestOptions, since time.Time) ([]string, error) {
	if o.Session != "" {
		return []string{o.Session}, nil
	}
	set := map[string]bool{}
	err := src.Log.Usage(ctx, audit.UsageFilter{Credentials: w.secretsOf(o.Scope), Scope: o.Scope, Since: since}, func(u audit.Usage) error {
		set[u.Session] = true
		return nil
	})
	return slices.Sorted(maps.Keys(set)), err
}

// grantsFor returns the smallest grants of one tool that allow what was
// learned.
func (w *world) grantsFor(tool string, l *learned) []policy.GrantConfig {
	info := w.tools[tool]
	if info.Kind == "s3" {
		return s3Grants(tool, l)
	}
	byPattern := map[string][]string{} // pattern → methods
	for m, paths := range l.paths {
		for _, p := range generalizePaths(paths) {
			byPattern[p] = append(byPattern[p], m)
		}
	}
	if info.Templated {
		shape := templateShape(w.cfg.Tools[tool].Info().Path)
		pats := slices.Sorted(maps.Keys(byPattern))
		if len(pats) == 1 && pats[0] == shape {
			return []policy.GrantConfig{{Tool: tool}}
		}
		return []policy.GrantConfig{{Tool: tool, Paths: pats}}
	}
	byMethods := map[string][]string{} // "GET,POST" → patterns
	for p, ms := range byPattern {
		ms = sortMethods(ms)
		k := strings.Join(ms, ",")
		byMethods[k] = append(byMethods[k], p)
	}
	var out []policy.GrantConfig
	for _, k := range slices.Sorted(maps.Keys(byMethods)) {
		paths := byMethods[k]
		slices.Sort(paths)
		out = append(out, policy.GrantConfig{Tool: tool, Methods: strings.Split(k, ","), Paths: paths})
	}
	return out
}

// s3Grants returns the smallest s3 grants for the actions and keys seen.
func s3Grants(tool string, l *learned) []policy.GrantConfig {
	actions := map[string][]string{} // prefix → actions
	for a, keys := range l.keys {
		var prefixes []string
		if a == "list" {
			set := map[string]bool{}
			for _, k := range keys {
				set[s3ListPrefix(k)] = true
			}
			prefixes = dropCoveredPrefixes(slices.Sorted(maps.Keys(set)))
		} else {
			prefixes = s3KeyPrefixes(keys)
		}
		for _, p := range prefixes {
			actions[p] = append(actions[p], a)
		}
	}
	byActions := map[string][]string{}
	for p, as := range actions {
		slices.SortFunc(as, func(a, b string) int { return actionRank(a) - actionRank(b) })
		k := strings.Join(as, ",")
		byActions[k] = append(byActions[k], p)
	}
	var out []policy.GrantConfig
	for _, k := range slices.Sorted(maps.Keys(byActions)) {
		ps := byActions[k]
		slices.Sort(ps)
		out = append(out, policy.GrantConfig{Tool: tool, Actions: strings.Split(k, ","), Prefixes: ps})
	}
	return out
}

func actionRank(a string) int { return slices.Index([]string{"list", "get", "head"}, a) }

var methodOrder = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func sortMethods(ms []string) []string {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b string) int { return slices.Index(methodOrder, a) - slices.Index(methodOrder, b) })
	return slices.Compact(ms)
}

// templateShape is a templated tool's path as a pattern: each
// "{param}" segment "*".
func templateShape(path string) string {
	segs := policy.SplitPath(path)
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			segs[i] = "*"
		}
	}
	return patternText(segs)
}

// diff compares every line of the current scope with what was used of it.
func (w *world) diff(scope string, byLine map[string]*learned, calls map[string]int) []LineDiff {
	var out []LineDiff
	for _, r := range w.rules[scope] {
		for j, text := range r.Texts {
			d := LineDiff{Tool: r.Tool, Grant: r.Grant, Line: ruleLine(r, j), Calls: calls[text]}
			l := byLine[text]
			switch {
			case l == nil:
				d.Status = "unused"
			default:
				d.Distinct = len(l.seen)
				var now []string
				if r.Kind == "s3" {
					for _, g := range s3Grants(r.Tool, l) {
						now = append(now, g.Prefixes...)
					}
					slices.Sort(now)
					now = slices.Compact(now)
					if len(now) == 1 && now[0] == r.Prefix.Text {
						d.Status = "keep"
						break
					}
				} else {
					for _, ps := range l.paths {
						now = append(now, generalizePaths(ps)...)
					}
					slices.Sort(now)
					now = slices.Compact(now)
					pattern := r.Pattern
					if w.tools[r.Tool].Templated && strings.Contains(pattern, "{") {
						pattern = templateShape(pattern)
					}
					if len(now) == 1 && now[0] == pattern {
						d.Status = "keep"
						break
					}
				}
				d.Status, d.NarrowTo = "narrow", now
			}
			out = append(out, d)
		}
	}
	return out
}

// render writes the suggested scope as YAML: the current scope's settings
// with the suggested grants.
func (s *Suggestion) render(w *world) {
	raw := w.cfg.Config.Scopes[s.Scope]
	var b strings.Builder
	fmt.Fprintf(&b, "# keyhole scope suggest --scope %s", s.Scope)
	if s.Session != "" {
		fmt.Fprintf(&b, " --session %s", s.Session)
	}
	fmt.Fprintf(&b, ": %s of %s, %s to %s\n", plural(s.Calls, "allowed call"), plural(s.Sessions, "session"), stamp(s.Window.Since), stamp(s.Window.Until))
	fmt.Fprintf(&b, "scopes:\n  %s:\n", yamlKey(s.Scope))
	if raw.Description != "" {
		fmt.Fprintf(&b, "    description: %s\n", yamlString(raw.Description))
	}
	if raw.TTL != "" {
		fmt.Fprintf(&b, "    ttl: %s\n", yamlString(raw.TTL))
	}
	if raw.MaxCalls != 0 {
		fmt.Fprintf(&b, "    max_calls: %d\n", raw.MaxCalls)
	}
	if raw.Rate != "" {
		fmt.Fprintf(&b, "    rate: %s\n", yamlString(raw.Rate))
	}
	if raw.MaxDenials != nil {
		fmt.Fprintf(&b, "    max_denials: %d\n", *raw.MaxDenials)
	}
	if len(s.Grants) == 0 {
		b.WriteString("    # no allowed call in the window: nothing to grant\n    grants: []\n")
	} else {
		b.WriteString("    grants:\n")
	}
	for _, g := range s.Grants {
		parts := []string{"tool: " + yamlString(g.Tool)}
		for _, f := range []struct {
			key  string
			vals []string
		}{{"methods", g.Methods}, {"paths", g.Paths}, {"actions", g.Actions}, {"prefixes", g.Prefixes}} {
			if len(f.vals) == 0 {
				continue
			}
			q := make([]string, len(f.vals))
			for i, v := range f.vals {
				q[i] = yamlString(v)
			}
			parts = append(parts, f.key+": ["+strings.Join(q, ", ")+"]")
		}
		fmt.Fprintf(&b, "      - {%s}\n", strings.Join(parts, ", "))
	}
	s.YAML = b.String()
}

// yamlString writes s as a YAML scalar that reads back as s in a flow
// collection: plain when that is safe, else double-quoted (a JSON string
// is a YAML double-quoted scalar).
func yamlString(s string) string {
	safe := s != "" && !strings.ContainsAny(s[:1], "*&!|>'\"%@`#-?:[]{},")
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./*-", r)) {
			safe = false
		}
	}
	if safe {
		var v string
		if yaml.Unmarshal([]byte(s), &v) == nil && v == s {
			return s
		}
	}
	q, _ := json.Marshal(s)
	return string(q)
}

func yamlKey(s string) string { return yamlString(s) }

// check reads the YAML back, compiles it against the config's tools and
// checks that it allows every distinct request it was learned from: a
// suggestion that would break what ran is a bug, never printed.
func (s *Suggestion) check(w *world, learnedBy map[string]*learned) error {
	var doc struct {
		Scopes map[string]policy.ScopeConfig `yaml:"scopes"`
	}
	if err := yaml.Unmarshal([]byte(s.YAML), &doc); err != nil {
		return fmt.Errorf("report: the suggested YAML does not read back: %w", err)
	}
	if len(s.Grants) == 0 {
		return nil
	}
	infos := map[string]policy.ToolInfo{}
	for name, t := range w.cfg.Tools {
		infos[name] = t.Info()
	}
	p, errs := policy.Compile(doc.Scopes, infos)
	if len(errs) > 0 {
		return fmt.Errorf("report: the suggested scope does not compile: %v", errs)
	}
	sc, _ := p.Scope(s.Scope)
	for tool, l := range learnedBy {
		var reqs []policy.Request
		for m, paths := range l.paths {
			for _, segs := range paths {
				reqs = append(reqs, policy.Request{Tool: tool, Method: m, Segments: segs})
			}
		}
		for a, keys := range l.keys {
			for _, k := range keys {
				reqs = append(reqs, policy.Request{Tool: tool, Action: a, Key: k})
			}
		}
		for _, req := range reqs {
			if d := sc.Decide(req); !d.Allow {
				return fmt.Errorf("report: the suggested scope would deny %s, which the scope allowed: %s", req, d.Reason)
			}
		}
	}
	return nil
}

// WriteText writes the suggestion: the YAML, the diff and the denials.
func (s *Suggestion) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	who := "scope " + s.Scope
	if s.Session != "" {
		who = "session " + clean(s.Session) + " of scope " + s.Scope
	}
	ew.printf("Learned from %s of %s: %s, %s to %s.\n", plural(s.Calls, "allowed call"), who, plural(s.Sessions, "session"), stamp(s.Window.Since), stamp(s.Window.Until))
	for _, sk := range s.Skipped {
		ew.printf("Left out: %s (%s).\n", plural(sk.Count, "allowed call"), sk.Value)
	}
	ew.printf("\nSuggested scope (paste under scopes: in keyhole.yaml):\n\n%s\n", s.YAML)
	ew.printf("Against the current scope:\n")
	tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
	for _, d := range s.Diff {
		what := ""
		switch d.Status {
		case "keep":
			what = fmt.Sprintf("%s, %s", plural(d.Calls, "call"), plural(d.Distinct, "distinct request"))
		case "narrow":
			what = fmt.Sprintf("%s, %s: narrow to %s", plural(d.Calls, "call"), plural(d.Distinct, "distinct request"), clean(strings.Join(d.NarrowTo, ", ")))
		case "unused":
			what = "no allowed call in the window: remove it"
		}
		fmt.Fprintf(tw, "  %s\tgrants[%d] %s: %s\t%s\n", d.Status, d.Grant, clean(d.Tool), clean(d.Line), what)
	}
	tw.Flush()
	if len(s.Denied) > 0 {
		ew.printf("\nAsked for, not granted (never turned into grants):\n")
		for _, d := range s.Denied {
			ew.printf("  %s ×%d\n", d.Value, d.Count)
		}
	}
	return ew.err
}
