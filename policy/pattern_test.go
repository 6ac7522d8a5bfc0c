package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		path    []string
		want    bool
	}{
		{"/", nil, true},
		{"/", []string{"a"}, false},
		{"/a", []string{"a"}, true},
		{"/a", []string{"A"}, false},
		{"/a", []string{"a", "b"}, false},
		{"/a", nil, false},
		{"/*", []string{"x"}, true},
		{"/*", []string{""}, false},
		{"/*", nil, false},
		{"/*", []string{"x", "y"}, false},
		{"/**", nil, true},
		{"/**", []string{"a", "b", "c"}, true},
		{"/a/**", []string{"a"}, true},
		{"/a/**", []string{"b"}, false},
		{"/**/b", []string{"b"}, true},
		{"/**/b", []string{"a", "b"}, true},
		{"/**/b", []string{"a", "b", "c"}, false},
		{"/**/b/**/c", []string{"b", "b", "x", "c"}, true},
		{"/**/b/**/c", []string{"c", "b"}, false},
		{"/a/*/**/*/d", []string{"a", "x", "d"}, false},
		{"/a/*/**/*/d", []string{"a", "x", "y", "d"}, true},
		{"/a/**/**/z", []string{"a", "z"}, true},
		{"/é", []string{"é"}, true},
		{"/é", []string{"e\u0301"}, false}, // no Unicode normalization
		{"/．．", []string{"．．"}, true},
		{"/．．", []string{".."}, false},
		{"/a/**", []string{"a", ""}, true}, // "**" is not where emptiness is refused; Decide is
	}
	for _, tt := range tests {
		p, err := parsePattern(tt.pattern)
		if err != nil {
			t.Fatalf("parsePattern(%q): %v", tt.pattern, err)
		}
		if got := p.match(tt.path); got != tt.want {
			t.Errorf("%q.match(%q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
		if got := overlaps(p.segs, literalSegs(tt.path)); got != tt.want {
			t.Errorf("overlaps(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func literalSegs(path []string) []patSeg {
	out := make([]patSeg, len(path))
	for i, s := range path {
		out[i] = patSeg{kind: segLiteral, lit: s}
	}
	return out
}

// FuzzMatch checks the fast matcher against the plain recursive one, and
// that a pattern without "*" matches exactly the segments it names.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"/repos/acme/api/issues", "repos/acme/api/issues"},
		{"/repos/*/issues/**", "repos/x/issues/1/comments"},
		{"/**/z", "a/b/z"},
		{"/a/**/b/**/c", "a/b/x/b/c"},
		{"/", ""},
		{"/Issues", "issues"},
		{"/．．", ".."},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pat, path string) {
		var segs []string
		if path != "" {
			segs = strings.Split(path, "/")
		}
		p, err := parsePattern(pat)
		if err != nil {
			return
		}
		got := p.match(segs)
		if len(p.segs) <= 16 && len(segs) <= 32 {
			if want := overlaps(p.segs, literalSegs(segs)); got != want {
				t.Fatalf("%q.match(%q) = %v, reference matcher says %v", pat, segs, got, want)
			}
		}
		if strings.Contains(pat, "*") {
			return
		}
		var lits []string
		for _, s := range p.segs {
			lits = append(lits, s.lit)
		}
		if want := slices.Equal(lits, segs); got != want {
			t.Fatalf("literal %q.match(%q) = %v, want %v", pat, segs, got, want)
		}
	})
}

// TestIndexMatchesLinearScan checks that the prefix index picks the same
// rules as evaluating every rule in config order (the first that needs no
// approval, else the first with approve: true), over every path of up to
// four segments from a small alphabet.
func TestIndexMatchesLinearScan(t *testing.T) {
	paths := []string{"/", "/a", "/a/b", "/a/*", "/a/**", "/**", "/*/b", "/a/b/x", "/**/x", "/a/**/x", "/b/a", "/a/b/**", "/*"}
	var grants []GrantConfig
	for i, p := range paths {
		m := []string{"GET"}
		if i%3 == 0 {
			m = append(m, "HEAD")
		}
		grants = append(grants, GrantConfig{Tool: "github", Methods: m, Paths: []string{p}, Approve: i%4 == 1})
	}
	pol := mustCompile(t, map[string]ScopeConfig{"s": {Grants: grants}})
	sc, _ := pol.Scope("s")
	tg := sc.tools["github"]
	var all [][]string
	var gen func(prefix []string)
	gen = func(prefix []string) {
		all = append(all, slices.Clone(prefix))
		if len(prefix) == 4 {
			return
		}
		for _, s := range []string{"a", "b", "x"} {
			gen(append(prefix, s))
		}
	}
	gen(nil)
	for _, segs := range all {
		for _, bit := range []uint8{1, 2} {
			plain, approve := -1, -1
			for i := range tg.http {
				if !tg.http[i].allows(bit, segs) {
					continue
				}
				if !tg.http[i].approve {
					plain = i
					break
				}
				if approve < 0 {
					approve = i
				}
			}
			if plain >= 0 {
				approve = -1
			}
			if gp, ga := tg.first(bit, segs); gp != plain || ga != approve {
				t.Errorf("first(%d, %q) = %d, %d; linear scan = %d, %d", bit, segs, gp, ga, plain, approve)
			}
		}
	}
}
