package policy

// Methods lists the http methods the scope grants on tool, in the order
// of the allowlist (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS); none
// for an s3 tool or a tool the scope does not grant.
func (s *Scope) Methods(tool string) []string {
	tg, ok := s.tools[tool]
	if !ok {
		return nil
	}
	var mask uint8
	for _, r := range tg.http {
		mask |= r.methods
	}
	var out []string
	for i, m := range httpMethods {
		if mask&(1<<i) != 0 {
			out = append(out, m)
		}
	}
	return out
}

// ReadOnly reports whether everything the scope grants on tool only reads:
// GET and HEAD on an http tool, list, get and head on an s3 tool. It is
// false for a tool the scope does not grant, and for a generic http tool
// of a scope whose denials become access requests (on_deny: request),
// since a person may approve any method on it.
func (s *Scope) ReadOnly(tool string) bool {
	tg, ok := s.tools[tool]
	if !ok {
		return false
	}
	if s.approval.OnDenyRequest {
		for _, r := range tg.http {
			if r.shape == nil {
				return false
			}
		}
	}
	const readMethods = 1<<0 | 1<<1 // GET, HEAD: httpMethods[0:2]
	for _, r := range tg.http {
		if r.methods&^readMethods != 0 {
			return false
		}
	}
	const readActions = 1<<len(s3Actions) - 1 // every s3 action reads
	for _, r := range tg.s3 {
		if r.actions&^readActions != 0 {
			return false
		}
	}
	return true
}
