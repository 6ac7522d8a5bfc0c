package policy

import (
	"errors"
	"testing"
	"time"
)

func intp(n int) *int { return &n }

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name  string
		scope ScopeConfig
		tools map[string]ToolInfo // nil: testTools
		want  []FieldError        // exact paths and messages, in order
	}{
		{"broad write", ScopeConfig{Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET", "POST"}, Paths: []string{"/**"}}}}, nil,
			[]FieldError{{"scopes.s.grants[0].paths[0]", `"/**" on POST grants every path; name the paths or set allow_broad: true`}}},
		{"broad without literals", ScopeConfig{Grants: []GrantConfig{{Tool: "github", Methods: []string{"DELETE"}, Paths: []string{"/x", "/*/**"}}}}, nil,
			[]FieldError{{"scopes.s.grants[0].paths[1]", `"/*/**" on DELETE grants every path; name the paths or set allow_broad: true`}}},
		{"unknown tool", ScopeConfig{Grants: []GrantConfig{{Tool: "gh", Methods: []string{"GET"}, Paths: []string{"/"}}}}, nil,
			[]FieldError{{"scopes.s.grants[0].tool", `tool "gh" is not defined under tools: (defined: archive, github, issue_titles)`}}},
		{"no tool", ScopeConfig{Grants: []GrantConfig{{}}}, nil,
			[]FieldError{{"scopes.s.grants[0].tool", `required: name a tool defined under tools:`}}},
		{"no grants", ScopeConfig{}, nil,
			[]FieldError{{"scopes.s.grants", `a scope grants nothing without grants; add at least one`}}},
		{"methods", ScopeConfig{Grants: []GrantConfig{{Tool: "github", Methods: []string{"get", "GET ", "CONNECT", "trace", "FETCH", ""}, Paths: []string{"/x"}}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].methods[0]", `"get" is not a method as written; methods are exact upper-case names: write GET`},
				{"scopes.s.grants[0].methods[1]", `"GET " is not a method as written; methods are exact upper-case names: write GET`},
				{"scopes.s.grants[0].methods[2]", `"CONNECT" is never granted; allowed methods are GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`},
				{"scopes.s.grants[0].methods[3]", `"trace" is never granted; allowed methods are GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`},
				{"scopes.s.grants[0].methods[4]", `"FETCH" is not a method; allowed methods are GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`},
				{"scopes.s.grants[0].methods[5]", `"" is not a method; allowed methods are GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`},
			}},
		{"generic http needs methods and paths", ScopeConfig{Grants: []GrantConfig{{Tool: "github"}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].methods", `required for http tool github: name the methods this grant allows (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)`},
				{"scopes.s.grants[0].paths", `required for http tool github: name the paths this grant allows, e.g. /repos/acme/api/issues/*`},
			}},
		{"bad patterns", ScopeConfig{Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{
			"repos", "/a//b", "/a/", "/a/../b", "/a/./b", "/a*", "/a/**b", "/search?q=1", `/a\b`, "/a%2Fb", "/a\nb",
		}}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].paths[0]", `"repos" must start with "/"`},
				{"scopes.s.grants[0].paths[1]", `"/a//b" has an empty segment 2; remove the doubled or trailing "/"`},
				{"scopes.s.grants[0].paths[2]", `"/a/" has an empty segment 2; remove the doubled or trailing "/"`},
				{"scopes.s.grants[0].paths[3]", `"/a/../b" has a ".." segment; requests never contain one, name the path itself`},
				{"scopes.s.grants[0].paths[4]", `"/a/./b" has a "." segment; requests never contain one, name the path itself`},
				{"scopes.s.grants[0].paths[5]", `"/a*": segment 1 "a*" mixes "*" with other characters; "*" and "**" must be whole segments`},
				{"scopes.s.grants[0].paths[6]", `"/a/**b": segment 2 "**b" mixes "*" with other characters; "*" and "**" must be whole segments`},
				{"scopes.s.grants[0].paths[7]", `"/search?q=1": segment 1 contains "?" or "#"; patterns match the path only, not a query or fragment`},
				{"scopes.s.grants[0].paths[8]", `"/a\\b": segment 1 contains a backslash or control character, which no request path holds`},
				{"scopes.s.grants[0].paths[9]", `"/a%2Fb": segment 1 looks percent-encoded; paths are matched decoded, so write the character itself`},
				{"scopes.s.grants[0].paths[10]", `"/a\nb": segment 1 contains a backslash or control character, which no request path holds`},
			}},
		{"s3 fields on http", ScopeConfig{Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/x"}, Actions: []string{"list"}, Prefixes: []string{""}}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].actions", `actions apply to s3 tools; github is an http tool (use methods and paths)`},
				{"scopes.s.grants[0].prefixes", `prefixes apply to s3 tools; github is an http tool (use paths)`},
			}},
		{"http fields on s3", ScopeConfig{Grants: []GrantConfig{{Tool: "archive", Methods: []string{"GET"}, Paths: []string{"/x"}, AllowBroad: true, Actions: []string{"list"}, Prefixes: []string{"a/"}}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].methods", `methods applies to http tools; archive is an s3 tool (use actions and prefixes)`},
				{"scopes.s.grants[0].paths", `paths applies to http tools; archive is an s3 tool (use actions and prefixes)`},
				{"scopes.s.grants[0].allow_broad", `allow_broad applies to http tools; archive is an s3 tool (use actions and prefixes)`},
			}},
		{"s3 needs actions and prefixes", ScopeConfig{Grants: []GrantConfig{{Tool: "archive"}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].actions", `required for s3 tool archive: name the actions this grant allows (list, get, head)`},
				{"scopes.s.grants[0].prefixes", `required for s3 tool archive: name the key prefixes this grant allows, or "" for the whole bucket`},
			}},
		{"s3 bad actions and prefixes", ScopeConfig{Grants: []GrantConfig{{Tool: "archive", Actions: []string{"put", "LIST"}, Prefixes: []string{"/reports/", "a/../b/", "a\x00"}}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].actions[0]", `"put" is not an s3 action; use list, get or head`},
				{"scopes.s.grants[0].actions[1]", `"LIST" is not an s3 action; use list, get or head`},
				{"scopes.s.grants[0].prefixes[0]", `"/reports/" starts with "/"; S3 keys have no leading slash (write "reports/")`},
				{"scopes.s.grants[0].prefixes[1]", `"a/../b/" has a ".." segment; keys with one are refused, name the prefix itself`},
				{"scopes.s.grants[0].prefixes[2]", `"a\x00" contains a control character, which no key holds`},
			}},
		{"templated wrong method", ScopeConfig{Grants: []GrantConfig{{Tool: "issue_titles", Methods: []string{"GET", "POST"}}}}, nil,
			[]FieldError{{"scopes.s.grants[0].methods[1]", `tool issue_titles always calls GET; leave methods out or write [GET]`}}},
		{"templated path that never matches", ScopeConfig{Grants: []GrantConfig{{Tool: "issue_titles", Paths: []string{"/repos/acme/api/pulls", "/repos/*/issues", "/repos/**/issues", "/orgs/**"}}}}, nil,
			[]FieldError{
				{"scopes.s.grants[0].paths[0]", `"/repos/acme/api/pulls" can never match the path of tool issue_titles (/repos/{owner}/{repo}/issues)`},
				{"scopes.s.grants[0].paths[1]", `"/repos/*/issues" can never match the path of tool issue_titles (/repos/{owner}/{repo}/issues)`},
				{"scopes.s.grants[0].paths[3]", `"/orgs/**" can never match the path of tool issue_titles (/repos/{owner}/{repo}/issues)`},
			}},
		{"limits", ScopeConfig{TTL: "forever", Rate: "5/d", MaxCalls: -1, MaxDenials: intp(-2), Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/"}}}}, nil,
			[]FieldError{
				{"scopes.s.ttl", `"forever" is not a duration; write e.g. 15m, 1h, 72h or 7d`},
				{"scopes.s.rate", `"5/d" is not a rate; write <calls>/s, <calls>/m or <calls>/h with a positive whole number, e.g. 5/s`},
				{"scopes.s.max_calls", `must be 0 (unlimited) or a positive number of calls`},
				{"scopes.s.max_denials", `must be 0 (never end the session) or a positive number of denials`},
			}},
		{"ttl too long", ScopeConfig{TTL: "721h", Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/"}}}}, nil,
			[]FieldError{{"scopes.s.ttl", `"721h" is longer than the maximum of 30 days (30d)`}}},
		{"ttl not positive", ScopeConfig{TTL: "0s", Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/"}}}}, nil,
			[]FieldError{{"scopes.s.ttl", `"0s" must be positive`}}},
		{"unknown tool kind", ScopeConfig{Grants: []GrantConfig{{Tool: "ftp"}}}, map[string]ToolInfo{"ftp": {Kind: "ftp"}},
			[]FieldError{{"scopes.s.grants[0].tool", `tool "ftp" has kind "ftp"; grants apply to http and s3 tools`}}},
		{"broken template", ScopeConfig{Grants: []GrantConfig{{Tool: "broken"}}}, map[string]ToolInfo{"broken": {Kind: "http", Method: "GET", Path: "repos"}},
			[]FieldError{{"scopes.s.grants[0].tool", `tool broken has method "GET" and path "repos", which no grant can match; fix the tool first`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ti := tt.tools
			if ti == nil {
				ti = testTools
			}
			p, errs := Compile(map[string]ScopeConfig{"s": tt.scope}, ti)
			if p != nil {
				t.Errorf("Compile returned a policy along with errors")
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("Compile: %d errors, want %d:\n%v", len(errs), len(tt.want), errs)
			}
			for i, err := range errs {
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("error %d is %T, want *FieldError", i, err)
				}
				if *fe != tt.want[i] {
					t.Errorf("error %d:\n got %s: %s\nwant %s: %s", i, fe.Path, fe.Msg, tt.want[i].Path, tt.want[i].Msg)
				}
			}
		})
	}
}

func TestCompileAccepts(t *testing.T) {
	tests := map[string]ScopeConfig{
		"broad read":          {Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET", "HEAD", "OPTIONS"}, Paths: []string{"/**"}}}},
		"broad write allowed": {Grants: []GrantConfig{{Tool: "github", Methods: []string{"POST"}, Paths: []string{"/**"}, AllowBroad: true}}},
		"templated bare":      {Grants: []GrantConfig{{Tool: "issue_titles"}}},
		"templated narrowed":  {Grants: []GrantConfig{{Tool: "issue_titles", Methods: []string{"GET"}, Paths: []string{"/repos/acme/**", "/**"}}}},
		"s3 whole bucket":     {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"list", "get", "head"}, Prefixes: []string{""}}}},
		"limits":              {TTL: "720h", Rate: "1000/h", MaxCalls: 5, MaxDenials: intp(0), Grants: []GrantConfig{{Tool: "archive", Actions: []string{"list"}, Prefixes: []string{"a/"}}}},
	}
	for name, sc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, errs := Compile(map[string]ScopeConfig{"s": sc}, testTools); len(errs) > 0 {
				t.Fatalf("Compile: %v", errs)
			}
		})
	}
}

func TestCompileDefaults(t *testing.T) {
	p := mustCompile(t, map[string]ScopeConfig{"s": {Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/"}}}}})
	sc, _ := p.Scope("s")
	if sc.TTL() != time.Hour || sc.MaxCalls() != 0 || sc.MaxDenials() != DefaultMaxDenials || sc.limit.burst != 0 {
		t.Fatalf("defaults: ttl %s, max_calls %d, max_denials %d, burst %d; want 1h, 0, 20, 0", sc.TTL(), sc.MaxCalls(), sc.MaxDenials(), sc.limit.burst)
	}
}

func TestParseRate(t *testing.T) {
	tests := map[string]struct {
		in    string
		every float64
		burst int
		text  string
	}{
		"per second": {"5/s", 5, 5, "5 calls per second"},
		"per minute": {"120/m", 2, 120, "120 calls per minute"},
		"per hour":   {"3600/h", 1, 3600, "3600 calls per hour"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			l, err := parseRate(tt.in)
			if err != nil || float64(l.every) != tt.every || l.burst != tt.burst || l.text != tt.text {
				t.Fatalf("parseRate(%q) = %+v, %v; want every %v burst %d text %q", tt.in, l, err, tt.every, tt.burst, tt.text)
			}
		})
	}
	for _, bad := range []string{"5", "/s", "0/s", "-1/s", "+5/s", "5/sec", "5/ s", "1.5/s", "5/S"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("parseRate(%q) succeeded, want an error", bad)
		}
	}
}

func TestSessionTTL(t *testing.T) {
	p := mustCompile(t, map[string]ScopeConfig{"s": {TTL: "1h", Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/"}}}}})
	sc, _ := p.Scope("s")
	tests := map[string]struct {
		in, want time.Duration
		err      error
	}{
		"default": {0, time.Hour, nil},
		"shorter": {time.Minute, time.Minute, nil},
		"equal":   {time.Hour, time.Hour, nil},
		"longer":  {2 * time.Hour, 0, ErrTTLTooLong},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := sc.SessionTTL(tt.in)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Fatalf("SessionTTL(%s) = %s, %v; want %s, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
	if _, err := sc.SessionTTL(-time.Second); err == nil || errors.Is(err, ErrTTLTooLong) {
		t.Fatalf("SessionTTL(-1s) error = %v, want a non-ErrTTLTooLong error", err)
	}
}
