package policy

import "strings"

// Rule is one rule of a scope as reports show it: what a grant allows on
// one path pattern or key prefix of a tool. A grant with several paths or
// prefixes has a rule for each, in config order.
type Rule struct {
	Tool string
	// Kind is "http" or "s3".
	Kind string
	// Grant is the index of the grant in the scope's grants: the rule
	// comes from scopes.<scope>.grants[Grant].
	Grant int
	// Methods (http) are the methods the rule allows, upper-case.
	Methods []string
	// Pattern (http) is the path pattern as written; for a templated
	// tool's grant that names no path, the tool's path
	// ("/customers/{customer}", each parameter one segment).
	Pattern string
	// Actions (s3) are the actions the rule allows: list, get, head.
	Actions []string
	// Prefix (s3) is the key prefix the rule grants.
	Prefix S3Prefix
	// Texts are what Decision.Grant says when the rule allows a call, one
	// per method or action in the order of Methods or Actions: "github:
	// GET /repos/acme/*".
	Texts []string
	// Writes is set when a method changes something upstream (POST, PUT,
	// PATCH, DELETE); Deletes when one is DELETE. Every s3 action reads.
	Writes, Deletes bool
	// AnyDepth is set when the pattern has a "**" segment (any number of
	// segments), or the prefix grants every key under it rather than one
	// key.
	AnyDepth bool
	// Broad is set when the rule grants every path of the tool ("**" and
	// no literal segment) or the whole bucket.
	Broad bool
}

// Lines returns the rule as summary lines, one per method or action:
// "GET /repos/acme/*", `list reports/ (every key under reports/)`.
func (r Rule) Lines() []string {
	var out []string
	for _, m := range r.Methods {
		out = append(out, m+" "+r.Pattern)
	}
	for _, a := range r.Actions {
		out = append(out, a+" "+r.Prefix.Meaning())
	}
	return out
}

// Rules returns every rule of the scope: the tools in name order, each
// tool's rules in config order.
func (s *Scope) Rules() []Rule {
	var out []Rule
	for _, tool := range s.toolNames {
		tg := s.tools[tool]
		for i := range tg.http {
			r := &tg.http[i]
			p := r.path
			if p == nil {
				p = r.shape
			}
			rule := Rule{Tool: tool, Kind: "http", Grant: r.grant, Pattern: p.text, AnyDepth: p.hasAny, Broad: p.broad}
			for j, m := range httpMethods {
				if r.methods&(1<<j) == 0 {
					continue
				}
				rule.Methods = append(rule.Methods, m)
				rule.Texts = append(rule.Texts, r.text[j])
				rule.Writes = rule.Writes || isWriteMethod(m)
				rule.Deletes = rule.Deletes || m == "DELETE"
			}
			out = append(out, rule)
		}
		for i := range tg.s3 {
			r := &tg.s3[i]
			rule := Rule{Tool: tool, Kind: "s3", Grant: r.grant, Prefix: r.prefix, AnyDepth: true, Broad: r.prefix.Whole()}
			for j, a := range s3Actions {
				if r.actions&(1<<j) != 0 {
					rule.Actions = append(rule.Actions, a)
					rule.Texts = append(rule.Texts, r.text[j])
				}
			}
			out = append(out, rule)
		}
	}
	return out
}

// SplitPath returns the segments of a request path as Request.Path
// writes it: "/repos/acme/api" is {"repos", "acme", "api"} and "/" is
// none. It is how a recorded request is checked again (policy replay).
func SplitPath(path string) []string {
	p := strings.TrimPrefix(path, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// IsWriteMethod reports whether an HTTP method changes something upstream:
// POST, PUT, PATCH or DELETE.
func IsWriteMethod(m string) bool { return isWriteMethod(m) }
