// Package policy decides whether a tool call is allowed. It owns the
// scopes: section of keyhole.yaml (ScopeConfig, GrantConfig), compiles it
// once into matchers (Compile), evaluates calls against a scope
// (Scope.Decide) and keeps the lifetime of sessions (Session: ttl,
// max_calls, rate, and the max_denials tripwire). Everything is deny by
// default: a call no grant names is refused with a reason a person can
// read. Policy performs no I/O and imports no other package of keyhole.
package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy is the compiled scopes: section. It is immutable and safe for
// concurrent use.
type Policy struct {
	scopes map[string]*Scope
	names  []string
}

// Scope returns the compiled scope called name.
func (p *Policy) Scope(name string) (*Scope, bool) {
	s, ok := p.scopes[name]
	return s, ok
}

// ScopeNames returns the names of all scopes, sorted.
func (p *Policy) ScopeNames() []string {
	return slices.Clone(p.names)
}

// Scope is a compiled scope: its grants indexed by tool, with every
// string a decision needs built ahead. It is immutable and safe for
// concurrent use.
type Scope struct {
	name        string
	description string
	ttl         time.Duration
	maxCalls    int
	maxDenials  int
	limit       limit
	approval    Approval
	tools       map[string]*toolGrants
	toolNames   []string
	// unknownSuffix follows the quoted tool name in an unknown_tool reason.
	unknownSuffix string
}

// toolGrants is everything a scope grants on one tool.
type toolGrants struct {
	scope   string
	kind    string // "http" or "s3"
	http    []httpRule
	index   *prefixNode // http rules by leading literal segments
	s3      []s3Rule
	summary []string
	// deniedSuffix follows the request in a not_granted reason:
	// " is not granted to scope triage; granted: GET /x, ...".
	deniedSuffix string
}

// httpRule allows the methods in a bit set on the paths of one pattern.
type httpRule struct {
	methods uint8
	grant   int // index of the grant in the scope's config
	// approve: a call this rule allows waits for a person (approve: true).
	approve bool
	// shape is a templated tool's path (params as "*"); nil for generic
	// tools. path narrows it; nil means the shape alone.
	shape *pattern
	path  *pattern
	// text and reason per method: "github: GET /repos/*" and
	// "granted to scope triage by github: GET /repos/*".
	text   [len(httpMethods)]string
	reason [len(httpMethods)]string
}

// s3Rule allows the actions in a bit set on the keys one prefix grants.
type s3Rule struct {
	actions uint8
	grant   int // index of the grant in the scope's config
	approve bool
	prefix  S3Prefix
	// text and reason per action, as for httpRule.
	text   [len(s3Actions)]string
	reason [len(s3Actions)]string
}

// httpMethods is the exact allowlist of methods a grant may name.
var httpMethods = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

var s3Actions = [...]string{"list", "get", "head"}

// methodIndex returns m's position in httpMethods, or -1. It matches
// exact upper-case names only.
func methodIndex(m string) int {
	switch m {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "PATCH":
		return 4
	case "DELETE":
		return 5
	case "OPTIONS":
		return 6
	}
	return -1
}

func actionIndex(a string) int {
	switch a {
	case "list":
		return 0
	case "get":
		return 1
	case "head":
		return 2
	}
	return -1
}

func isWriteMethod(m string) bool {
	return m == "POST" || m == "PUT" || m == "PATCH" || m == "DELETE"
}

// maxReasonGrants caps how many granted lines a denial reason lists.
const maxReasonGrants = 10

// Compile checks and compiles every scope against the tools they name;
// tools maps a tool's name to what policy knows of it. It reports all
// problems at once, each a *FieldError with a path such as
// "scopes.triage.grants[1].paths[0]" and a message a person can act on.
// When there are errors the returned Policy is nil.
func Compile(scopes map[string]ScopeConfig, tools map[string]ToolInfo) (*Policy, []error) {
	p := &Policy{scopes: make(map[string]*Scope, len(scopes))}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(scopes)) {
		s, serrs := compileScope(name, scopes[name], tools)
		errs = append(errs, serrs...)
		p.scopes[name] = s
		p.names = append(p.names, name)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

func compileScope(name string, c ScopeConfig, tools map[string]ToolInfo) (*Scope, []error) {
	at := "scopes." + name
	var errs []error
	s := &Scope{name: name, description: c.Description, maxCalls: c.MaxCalls, maxDenials: DefaultMaxDenials, tools: map[string]*toolGrants{}}
	var err error
	if s.ttl, err = parseTTL(c.TTL); err != nil {
		errs = append(errs, fieldErr(at+".ttl", "%v", err))
	}
	if s.limit, err = parseRate(c.Rate); err != nil {
		errs = append(errs, fieldErr(at+".rate", "%v", err))
	}
	if c.MaxCalls < 0 {
		errs = append(errs, fieldErr(at+".max_calls", "must be 0 (unlimited) or a positive number of calls"))
	}
	if c.MaxDenials != nil {
		s.maxDenials = *c.MaxDenials
		if s.maxDenials < 0 {
			errs = append(errs, fieldErr(at+".max_denials", "must be 0 (never end the session) or a positive number of denials"))
		}
	}
	var aerrs []error
	s.approval, aerrs = compileApproval(at, c.OnDeny, c.Approval)
	errs = append(errs, aerrs...)
	if len(c.Grants) == 0 {
		errs = append(errs, fieldErr(at+".grants", "a scope grants nothing without grants; add at least one"))
	}
	for i, g := range c.Grants {
		errs = append(errs, s.addGrant(fmt.Sprintf("%s.grants[%d]", at, i), i, g, tools)...)
	}
	for tool, tg := range s.tools {
		s.toolNames = append(s.toolNames, tool)
		tg.summary = dedupe(tg.summary)
		tg.index = buildIndex(tg.http)
		tg.deniedSuffix = " is not granted to scope " + name + "; granted: " + listLines(tg.summary)
	}
	slices.Sort(s.toolNames)
	s.unknownSuffix = " is not granted to scope " + name + "; its tools are: " + strings.Join(s.toolNames, ", ")
	return s, errs
}

// addGrant checks one grant and adds its rules to the scope.
func (s *Scope) addGrant(at string, grant int, g GrantConfig, tools map[string]ToolInfo) []error {
	if g.Tool == "" {
		return []error{fieldErr(at+".tool", "required: name a tool defined under tools:")}
	}
	info, ok := tools[g.Tool]
	if !ok {
		return []error{fieldErr(at+".tool", "tool %q is not defined under tools: (defined: %s)", g.Tool, strings.Join(slices.Sorted(maps.Keys(tools)), ", "))}
	}
	tg := s.tools[g.Tool]
	if tg == nil {
		tg = &toolGrants{scope: s.name, kind: info.Kind}
	}
	var errs []error
	nh, ns, nsum := len(tg.http), len(tg.s3), len(tg.summary)
	defer func() {
		// Each rule remembers its grant, for reports (Scope.Rules).
		for i := nh; i < len(tg.http); i++ {
			tg.http[i].grant = grant
		}
		for i := ns; i < len(tg.s3); i++ {
			tg.s3[i].grant = grant
		}
		if g.Approve {
			tg.markApprove(nh, ns, nsum)
		}
	}()
	switch {
	case info.Kind == "s3":
		errs = tg.addS3(at, g)
	case info.Kind == "http" && info.Method != "":
		errs = tg.addTemplated(at, g, info)
	case info.Kind == "http":
		errs = tg.addHTTP(at, g)
	default:
		return []error{fieldErr(at+".tool", "tool %q has kind %q; grants apply to http and s3 tools", g.Tool, info.Kind)}
	}
	s.tools[g.Tool] = tg
	return errs
}

// approvalNote follows the text of a grant with approve: true.
const approvalNote = " (with a person's approval)"

// markApprove marks the rules and summary lines added since the given
// lengths as needing a person's approval.
func (tg *toolGrants) markApprove(nh, ns, nsum int) {
	for i := nh; i < len(tg.http); i++ {
		r := &tg.http[i]
		r.approve = true
		for m := range r.text {
			if r.text[m] != "" {
				r.text[m] += approvalNote
				r.reason[m] += approvalNote
			}
		}
	}
	for i := ns; i < len(tg.s3); i++ {
		r := &tg.s3[i]
		r.approve = true
		for a := range r.text {
			if r.text[a] != "" {
				r.text[a] += approvalNote
				r.reason[a] += approvalNote
			}
		}
	}
	for i := nsum; i < len(tg.summary); i++ {
		tg.summary[i] += approvalNote
	}
}

// addHTTP compiles a grant of a generic http tool: methods and paths are
// both required.
func (tg *toolGrants) addHTTP(at string, g GrantConfig) []error {
	errs := notS3(at, g, g.Tool)
	mask, merrs := parseMethods(at, g.Methods)
	errs = append(errs, merrs...)
	if len(g.Methods) == 0 {
		errs = append(errs, fieldErr(at+".methods", "required for http tool %s: name the methods this grant allows (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)", g.Tool))
	}
	if len(g.Paths) == 0 {
		errs = append(errs, fieldErr(at+".paths", "required for http tool %s: name the paths this grant allows, e.g. /repos/acme/api/issues/*", g.Tool))
	}
	write := ""
	for _, m := range g.Methods {
		if isWriteMethod(m) {
			write = m
			break
		}
	}
	for j, ps := range g.Paths {
		p, err := parsePattern(ps)
		if err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.paths[%d]", at, j), "%v", err))
			continue
		}
		if p.broad && write != "" && !g.AllowBroad {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.paths[%d]", at, j), "%q on %s grants every path; name the paths or set allow_broad: true", ps, write))
			continue
		}
		tg.http = append(tg.http, newHTTPRule(tg.scope, g.Tool, mask, nil, &p))
		tg.summarizeHTTP(g.Methods, ps)
	}
	return errs
}

// addTemplated compiles a grant of a templated http tool. The tool fixes
// method and path; methods, if given, must be the tool's own, and paths,
// if given, narrow the rendered path.
func (tg *toolGrants) addTemplated(at string, g GrantConfig, info ToolInfo) []error {
	errs := notS3(at, g, g.Tool)
	mi := methodIndex(info.Method)
	shape, err := parseTemplate(info.Path)
	if mi < 0 || err != nil {
		return append(errs, fieldErr(at+".tool", "tool %s has method %q and path %q, which no grant can match; fix the tool first", g.Tool, info.Method, info.Path))
	}
	_, merrs := parseMethods(at, g.Methods)
	errs = append(errs, merrs...)
	for j, m := range g.Methods {
		if methodIndex(m) >= 0 && m != info.Method {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.methods[%d]", at, j), "tool %s always calls %s; leave methods out or write [%s]", g.Tool, info.Method, info.Method))
		}
	}
	mask := uint8(1) << mi
	if len(g.Paths) == 0 {
		tg.http = append(tg.http, newHTTPRule(tg.scope, g.Tool, mask, &shape, nil))
		tg.summarizeHTTP([]string{info.Method}, info.Path)
		return errs
	}
	for j, ps := range g.Paths {
		p, err := parsePattern(ps)
		if err == nil && !overlaps(p.segs, shape.segs) {
			err = fmt.Errorf("%q can never match the path of tool %s (%s)", ps, g.Tool, info.Path)
		}
		if err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.paths[%d]", at, j), "%v", err))
			continue
		}
		tg.http = append(tg.http, newHTTPRule(tg.scope, g.Tool, mask, &shape, &p))
		tg.summarizeHTTP([]string{info.Method}, ps)
	}
	return errs
}

// addS3 compiles a grant of an s3 tool: actions and prefixes are both
// required.
func (tg *toolGrants) addS3(at string, g GrantConfig) []error {
	var errs []error
	for _, f := range []struct {
		key string
		set bool
	}{{"methods", len(g.Methods) > 0}, {"paths", len(g.Paths) > 0}, {"allow_broad", g.AllowBroad}} {
		if f.set {
			errs = append(errs, fieldErr(at+"."+f.key, "%s applies to http tools; %s is an s3 tool (use actions and prefixes)", f.key, g.Tool))
		}
	}
	var mask uint8
	for j, a := range g.Actions {
		i := actionIndex(a)
		if i < 0 {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.actions[%d]", at, j), "%q is not an s3 action; use list, get or head", a))
			continue
		}
		mask |= 1 << i
	}
	if len(g.Actions) == 0 {
		errs = append(errs, fieldErr(at+".actions", "required for s3 tool %s: name the actions this grant allows (list, get, head)", g.Tool))
	}
	if len(g.Prefixes) == 0 {
		errs = append(errs, fieldErr(at+".prefixes", `required for s3 tool %s: name the key prefixes this grant allows, or "" for the whole bucket`, g.Tool))
	}
	for j, px := range g.Prefixes {
		p, err := parseS3Prefix(px)
		if err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.prefixes[%d]", at, j), "%v", err))
			continue
		}
		tg.s3 = append(tg.s3, newS3Rule(tg.scope, g.Tool, mask, p))
		for _, a := range g.Actions {
			if actionIndex(a) >= 0 {
				tg.summary = append(tg.summary, a+" "+p.Meaning())
			}
		}
	}
	return errs
}

// describeKey shows a requested key or list prefix in a reason.
func describeKey(key string) string {
	if key == "" {
		return `"" (the whole bucket)`
	}
	return key
}

// notS3 reports s3-only fields set on an http grant.
func notS3(at string, g GrantConfig, tool string) []error {
	var errs []error
	if len(g.Actions) > 0 {
		errs = append(errs, fieldErr(at+".actions", "actions apply to s3 tools; %s is an http tool (use methods and paths)", tool))
	}
	if len(g.Prefixes) > 0 {
		errs = append(errs, fieldErr(at+".prefixes", "prefixes apply to s3 tools; %s is an http tool (use paths)", tool))
	}
	return errs
}

// parseMethods checks methods against the exact allowlist and returns
// their bit set.
func parseMethods(at string, methods []string) (uint8, []error) {
	var mask uint8
	var errs []error
	for j, m := range methods {
		i := methodIndex(m)
		if i >= 0 {
			mask |= 1 << i
			continue
		}
		var msg string
		switch up := strings.ToUpper(strings.TrimSpace(m)); {
		case up == "CONNECT" || up == "TRACE":
			msg = fmt.Sprintf("%q is never granted; allowed methods are GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", m)
		case methodIndex(up) >= 0:
			msg = fmt.Sprintf("%q is not a method as written; methods are exact upper-case names: write %s", m, up)
		default:
			msg = fmt.Sprintf("%q is not a method; allowed methods are GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", m)
		}
		errs = append(errs, &FieldError{Path: fmt.Sprintf("%s.methods[%d]", at, j), Msg: msg})
	}
	return mask, errs
}

// summarizeHTTP adds "METHOD pattern" lines for the valid methods.
func (tg *toolGrants) summarizeHTTP(methods []string, pat string) {
	for _, m := range methods {
		if methodIndex(m) >= 0 {
			tg.summary = append(tg.summary, m+" "+pat)
		}
	}
}

// newHTTPRule builds a rule with the grant text of every method it allows.
func newHTTPRule(scope, tool string, methods uint8, shape, path *pattern) httpRule {
	r := httpRule{methods: methods, shape: shape, path: path}
	pat := shape
	if path != nil {
		pat = path
	}
	for i, m := range httpMethods {
		if methods&(1<<i) != 0 {
			r.text[i] = tool + ": " + m + " " + pat.text
			r.reason[i] = "granted to scope " + scope + " by " + r.text[i]
		}
	}
	return r
}

// newS3Rule builds a rule with the grant text of every action it allows.
func newS3Rule(scope, tool string, actions uint8, prefix S3Prefix) s3Rule {
	r := s3Rule{actions: actions, prefix: prefix}
	for i, a := range s3Actions {
		if actions&(1<<i) != 0 {
			r.text[i] = tool + ": " + a + " " + describeKey(prefix.Text)
			r.reason[i] = "granted to scope " + scope + " by " + r.text[i]
		}
	}
	return r
}

// listLines joins summary lines for a reason, listing at most
// maxReasonGrants of them.
func listLines(lines []string) string {
	if len(lines) == 0 {
		return "nothing"
	}
	if len(lines) <= maxReasonGrants {
		return strings.Join(lines, ", ")
	}
	return strings.Join(lines[:maxReasonGrants], ", ") + ", and " + strconv.Itoa(len(lines)-maxReasonGrants) + " more"
}

func dedupe(lines []string) []string {
	seen := make(map[string]bool, len(lines))
	out := lines[:0]
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

func fieldErr(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}
