package policy

// HTTPGrant is what one http rule of a scope allows on a tool: its
// methods on the request paths that match every one of Paths.
type HTTPGrant struct {
	// Methods are upper-case HTTP methods.
	Methods []string
	// Paths are the patterns a request path must all match, each as its
	// segments: a literal segment as written, "*" for any one segment and
	// "**" for any number (a literal never holds "*"). A generic tool's
	// rule has one pattern; a templated tool's has the tool's path (each
	// parameter a "*") and, when the grant narrows it, the grant's path.
	Paths [][]string
}

// HTTPGrants returns what the scope grants on the http tool called tool,
// one HTTPGrant per rule in config order: tools that mint a credential
// per session read from it what that credential must reach. It is nil for
// a tool the scope does not grant or that is not an http tool.
func (s *Scope) HTTPGrants(tool string) []HTTPGrant {
	tg, ok := s.tools[tool]
	if !ok || tg.kind != "http" {
		return nil
	}
	out := make([]HTTPGrant, 0, len(tg.http))
	for _, r := range tg.http {
		var g HTTPGrant
		for i, m := range httpMethods {
			if r.methods&(1<<i) != 0 {
				g.Methods = append(g.Methods, m)
			}
		}
		for _, p := range []*pattern{r.shape, r.path} {
			if p != nil {
				g.Paths = append(g.Paths, p.segments())
			}
		}
		out = append(out, g)
	}
	return out
}

// segments returns the pattern as segments: literals as written, "*" and
// "**" for the wildcards.
func (p *pattern) segments() []string {
	out := make([]string, len(p.segs))
	for i, s := range p.segs {
		switch s.kind {
		case segOne:
			out[i] = "*"
		case segAny:
			out[i] = "**"
		default:
			out[i] = s.lit
		}
	}
	return out
}
