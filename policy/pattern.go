package policy

import (
	"fmt"
	"strings"
)

// segKind is what one segment of a path pattern matches.
type segKind uint8

const (
	segLiteral segKind = iota // exactly these bytes
	segOne                    // "*": exactly one non-empty segment
	segAny                    // "**": any number of segments, including zero
)

type patSeg struct {
	kind segKind
	lit  string
}

// pattern is a compiled path pattern such as "/repos/acme/*/issues/**".
// It matches a request's decoded segments, never a raw path string.
type pattern struct {
	text string // as written in the config, for summaries and reasons
	segs []patSeg
	// hasAny is false for fixed-length patterns, which match only requests
	// with exactly len(segs) segments.
	hasAny bool
	// broad is true when no literal segment constrains the pattern and
	// some "**" is present: it grants (almost) every path.
	broad bool
}

// parsePattern compiles a path pattern. It must start with "/"; each
// segment is a literal, "*" or "**"; "/" alone is the root path. The
// returned error's message is written for the person editing keyhole.yaml.
func parsePattern(s string) (pattern, error) {
	p := pattern{text: s}
	if !strings.HasPrefix(s, "/") {
		return p, fmt.Errorf("%q must start with \"/\"", s)
	}
	if s == "/" {
		return p, nil
	}
	literals := 0
	for i, seg := range strings.Split(s[1:], "/") {
		n := i + 1
		switch {
		case seg == "":
			return p, fmt.Errorf("%q has an empty segment %d; remove the doubled or trailing \"/\"", s, n)
		case seg == "." || seg == "..":
			return p, fmt.Errorf("%q has a %q segment; requests never contain one, name the path itself", s, seg)
		case seg == "**":
			p.hasAny = true
			// "**/**" matches what "**" matches; keep one.
			if len(p.segs) > 0 && p.segs[len(p.segs)-1].kind == segAny {
				continue
			}
			p.segs = append(p.segs, patSeg{kind: segAny})
		case seg == "*":
			p.segs = append(p.segs, patSeg{kind: segOne})
		case strings.Contains(seg, "*"):
			return p, fmt.Errorf("%q: segment %d %q mixes \"*\" with other characters; \"*\" and \"**\" must be whole segments", s, n, seg)
		case strings.ContainsAny(seg, "?#"):
			return p, fmt.Errorf("%q: segment %d contains \"?\" or \"#\"; patterns match the path only, not a query or fragment", s, n)
		case strings.Contains(seg, "\\") || hasControl(seg):
			return p, fmt.Errorf("%q: segment %d contains a backslash or control character, which no request path holds", s, n)
		case hasPercentEscape(seg):
			return p, fmt.Errorf("%q: segment %d looks percent-encoded; paths are matched decoded, so write the character itself", s, n)
		default:
			literals++
			p.segs = append(p.segs, patSeg{kind: segLiteral, lit: seg})
		}
	}
	p.broad = p.hasAny && literals == 0
	return p, nil
}

// parseTemplate compiles a templated tool's path ("/repos/{owner}/{repo}/issues")
// into the pattern of the paths it can render: each "{param}" segment is "*".
func parseTemplate(s string) (pattern, error) {
	if !strings.HasPrefix(s, "/") {
		return pattern{text: s}, fmt.Errorf("%q must start with \"/\"", s)
	}
	p := pattern{text: s}
	if s == "/" {
		return p, nil
	}
	for _, seg := range strings.Split(s[1:], "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return p, fmt.Errorf("%q has an empty, \".\" or \"..\" segment", s)
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}"):
			p.segs = append(p.segs, patSeg{kind: segOne})
		default:
			p.segs = append(p.segs, patSeg{kind: segLiteral, lit: seg})
		}
	}
	return p, nil
}

// match reports whether segs, a request's decoded path segments, match
// the pattern. Literal segments compare as exact bytes; "*" matches one
// non-empty segment; "**" matches any run of segments. It does not
// allocate and runs in O(len(segs) * len(pattern)) at worst.
func (p *pattern) match(segs []string) bool {
	if !p.hasAny {
		if len(segs) != len(p.segs) {
			return false
		}
		for i := range segs {
			if !p.segs[i].matchOne(segs[i]) {
				return false
			}
		}
		return true
	}
	// Wildcard matching with backtracking to the last "**" only: a later
	// "**" can absorb whatever an earlier one would have, so retrying the
	// most recent one is enough.
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(segs) {
		if pi < len(p.segs) {
			ps := &p.segs[pi]
			if ps.kind == segAny {
				star, mark = pi, si
				pi++
				continue
			}
			if ps.matchOne(segs[si]) {
				pi++
				si++
				continue
			}
		}
		if star < 0 {
			return false
		}
		pi = star + 1
		mark++
		si = mark
	}
	for pi < len(p.segs) && p.segs[pi].kind == segAny {
		pi++
	}
	return pi == len(p.segs)
}

func (s *patSeg) matchOne(seg string) bool {
	switch s.kind {
	case segLiteral:
		return s.lit == seg
	case segOne:
		return seg != ""
	}
	return false
}

// overlaps reports whether some path matches both p and t, where t is
// fixed-length (a rendered template: literals and "*" only). Compile uses
// it to refuse a narrowing path that can never match its tool's template.
// It also serves as the plain recursive reference matcher in tests.
func overlaps(p, t []patSeg) bool {
	if len(p) == 0 {
		return len(t) == 0
	}
	if p[0].kind == segAny {
		return overlaps(p[1:], t) || (len(t) > 0 && overlaps(p, t[1:]))
	}
	if len(t) == 0 {
		return false
	}
	if p[0].kind == segLiteral && t[0].kind == segLiteral && p[0].lit != t[0].lit {
		return false
	}
	if p[0].kind == segOne && t[0].kind == segLiteral && t[0].lit == "" {
		return false // "*" never matches an empty segment
	}
	return overlaps(p[1:], t[1:])
}

// canonicalSegments reports whether every segment is one a tool may send:
// non-empty, not "." or "..", without "/", "\\" or control bytes.
// Requests are built that way; policy checks again so a "**" can never be
// walked out of.
func canonicalSegments(segs []string) bool {
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return false
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c == 0x7f || c == '/' || c == '\\' {
				return false
			}
		}
	}
	return true
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func hasPercentEscape(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && isHex(s[i+1]) && isHex(s[i+2]) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
