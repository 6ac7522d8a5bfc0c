package policy

import (
	"strings"
	"testing"
)

// TestS3PrefixMatchesWholeSegments holds issue 22's examples: a prefix
// grant reaches the key it names and the keys under it, never its
// siblings; a trailing "*" asks for a string prefix; "" is the bucket.
func TestS3PrefixMatchesWholeSegments(t *testing.T) {
	scopes := map[string]ScopeConfig{
		"segment": {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"list", "get", "head"}, Prefixes: []string{"reports/2026"}}}},
		"folder":  {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"reports/2026/"}}}},
		"string":  {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"reports/2026*"}}}},
		"bucket":  {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{""}}}},
		"two":     {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"get"}, Prefixes: []string{"a", "b/c"}}}},
	}
	p := mustCompile(t, scopes)
	tests := []struct {
		scope, action, key string
		allow              bool
	}{
		// The grant: reports/2026, without a trailing slash.
		{"segment", "get", "reports/2026-secret/payroll.csv", false},
		{"segment", "get", "reports/20260/x.csv", false},
		{"segment", "get", "reports/2026", true},
		{"segment", "head", "reports/2026", true},
		{"segment", "get", "reports/2026/", true},
		{"segment", "get", "reports/2026/01.csv", true},
		{"segment", "get", "reports/2026/q1/summary.txt", true},
		{"segment", "get", "reports/2026//x", true},
		{"segment", "get", "reports/2026x", false},
		{"segment", "get", "reports/2026.csv", false},
		{"segment", "get", "reports/202", false},
		{"segment", "get", "reports/", false},
		{"segment", "get", "Reports/2026/x", false},
		{"segment", "get", "reports/2026\\..\\payroll.csv", false},
		{"segment", "get", "reports/2026/..\\x", false},
		{"segment", "list", "reports/2026/", true},
		{"segment", "list", "reports/2026/q1", true},
		{"segment", "list", "reports/2026/q1/", true},
		{"segment", "list", "reports/2026", false}, // would list reports/2026-secret/…
		{"segment", "list", "reports/20", false},
		{"segment", "list", "reports/202", false},
		{"segment", "list", "reports/2026-", false},
		{"segment", "list", "reports/", false},
		{"segment", "list", "", false},

		// A trailing slash: the keys under it.
		{"folder", "get", "reports/2026/01.csv", true},
		{"folder", "get", "reports/2026/", true},
		{"folder", "get", "reports/2026", false},
		{"folder", "get", "reports/2026-secret/payroll.csv", false},
		{"folder", "list", "reports/2026/", true},
		{"folder", "list", "reports/2026", false},

		// A trailing "*": a plain string prefix, asked for explicitly.
		{"string", "get", "reports/2026-secret/payroll.csv", true},
		{"string", "get", "reports/20260/x.csv", true},
		{"string", "get", "reports/2026", true},
		{"string", "get", "reports/2025/x", false},
		{"string", "get", "reports/202", false},
		{"string", "list", "reports/2026", true},
		{"string", "list", "reports/2026-", true},
		{"string", "list", "reports/20", false},
		{"string", "list", "", false},

		// "" stays the bucket root.
		{"bucket", "list", "", true},
		{"bucket", "list", "x", true},
		{"bucket", "get", "anything/at/all", true},

		// Several prefixes: each on its own.
		{"two", "get", "a", true},
		{"two", "get", "a/x", true},
		{"two", "get", "ab", false},
		{"two", "get", "b/c/d", true},
		{"two", "get", "b/cd", false},
		{"two", "get", "b", false},
	}
	for _, tt := range tests {
		req := Request{Tool: "archive", Action: tt.action, Key: tt.key}
		sc, _ := p.Scope(tt.scope)
		d := sc.Decide(req)
		if d.Allow != tt.allow {
			t.Errorf("scope %s: Decide(%s) = %v (%s), want allow %v", tt.scope, req, d.Allow, d.Reason, tt.allow)
		}
		if d.Reason == "" {
			t.Errorf("scope %s: Decide(%s) has no reason", tt.scope, req)
		}
	}
}

func TestS3PrefixDenialSaysWhatToList(t *testing.T) {
	p := mustCompile(t, map[string]ScopeConfig{"s": {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"list"}, Prefixes: []string{"reports/2026"}}}}})
	sc, _ := p.Scope("s")
	got := sc.Decide(Request{Tool: "archive", Action: "list", Key: "reports/2026"}).Reason
	want := `list reports/2026 is not granted to scope s; granted: list reports/2026 (the key reports/2026 and every key under reports/2026/); a list of "reports/2026" would also reach keys beside reports/2026/: list "reports/2026/"`
	if got != want {
		t.Fatalf("Decide(list reports/2026).Reason =\n %s\nwant\n %s", got, want)
	}
	got = sc.Decide(Request{Tool: "archive", Action: "list", Key: "reports/20"}).Reason
	if strings.Contains(got, "would also reach") {
		t.Fatalf("Decide(list reports/20).Reason = %s; the hint is for the grant's own prefix only", got)
	}
}

// TestS3PrefixSummaryStatesTheMeaning is what `config check` and the
// tool's description show for each prefix.
func TestS3PrefixSummaryStatesTheMeaning(t *testing.T) {
	p := mustCompile(t, map[string]ScopeConfig{"s": {Grants: []GrantConfig{
		{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"reports/2026", "exports/", "logs/2026-03*", ""}},
	}}})
	sc, _ := p.Scope("s")
	want := []string{
		"list reports/2026 (the key reports/2026 and every key under reports/2026/)",
		"get reports/2026 (the key reports/2026 and every key under reports/2026/)",
		"list exports/ (every key under exports/)",
		"get exports/ (every key under exports/)",
		`list logs/2026-03* (every key that starts with "logs/2026-03")`,
		`get logs/2026-03* (every key that starts with "logs/2026-03")`,
		`list "" (the whole bucket)`,
		`get "" (the whole bucket)`,
	}
	got := sc.Summary("archive")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Summary(archive) =\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(want, "\n "))
	}
	d := sc.Decide(Request{Tool: "archive", Action: "get", Key: "reports/2026/a"})
	if d.Grant != "archive: list reports/2026" && d.Grant != "archive: get reports/2026" {
		t.Fatalf("Decide(get reports/2026/a).Grant = %q, want the grant as written", d.Grant)
	}
}

func TestS3PrefixCompileErrors(t *testing.T) {
	tests := map[string]struct {
		prefix string
		want   string
	}{
		"star alone":          {"*", `"*" alone is the whole bucket; write "" for it`},
		"star inside":         {"reports/*/x", `"reports/*/x": "*" is no wildcard; it may only end a prefix, where it asks for a plain string prefix ("reports/2026*" grants every key that starts with "reports/2026")`},
		"double star":         {"reports/**", `"reports/**": "*" is no wildcard; it may only end a prefix, where it asks for a plain string prefix ("reports/2026*" grants every key that starts with "reports/2026")`},
		"backslash":           {`reports\2026`, `"reports\\2026" contains a backslash, which keys may not hold (some S3-compatible stores read it as "/")`},
		"backslash with star": {`a\*`, `"a\\*" contains a backslash, which keys may not hold (some S3-compatible stores read it as "/")`},
		"leading slash":       {"/reports/", `"/reports/" starts with "/"; S3 keys have no leading slash (write "reports/")`},
		"dot-dot":             {"a/../b", `"a/../b" has a ".." segment; keys with one are refused, name the prefix itself`},
		"dot-dot then star":   {"../*", `"../*" has a ".." segment; keys with one are refused, name the prefix itself`},
		"dot last":            {"a/.", `"a/." has a "." segment; keys with one are refused, name the prefix itself`},
		"control":             {"a\tb", `"a\tb" contains a control character, which no key holds`},
		"too long":            {strings.Repeat("k", 1025), `"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…" is longer than 1024 bytes, the longest S3 key`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, errs := Compile(map[string]ScopeConfig{"s": {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"get"}, Prefixes: []string{tt.prefix}}}}}, testTools)
			if len(errs) != 1 || errs[0].Error() != "scopes.s.grants[0].prefixes[0]: "+tt.want {
				t.Fatalf("Compile(prefix %.40q) = %v, want one error %q", tt.prefix, errs, tt.want)
			}
		})
	}
	// The start of a name after the last "/" of a string prefix is not a
	// segment: "reports/.*" grants reports/.env.
	for _, ok := range []string{"reports/.*", "reports/..*", "a?b", "a$b", "reports/2026/*", "a//b"} {
		if _, errs := Compile(map[string]ScopeConfig{"s": {Grants: []GrantConfig{{Tool: "archive", Actions: []string{"get"}, Prefixes: []string{ok}}}}}, testTools); len(errs) > 0 {
			t.Errorf("Compile(prefix %q) = %v, want it accepted", ok, errs)
		}
	}
}

// TestS3ListNeverReachesBeyondGet checks the list rule against the key
// rule on every short key and prefix over a small alphabet: when a list
// of L is granted, every key that starts with L is granted to get.
func TestS3ListNeverReachesBeyondGet(t *testing.T) {
	const alphabet = "a/-0"
	var strs []string
	var gen func(s string)
	gen = func(s string) {
		strs = append(strs, s)
		if len(s) == 5 {
			return
		}
		for i := range len(alphabet) {
			gen(s + alphabet[i:i+1])
		}
	}
	gen("")
	for _, text := range strs {
		for _, px := range []string{text, text + "*"} {
			g, err := parseS3Prefix(px)
			if err != nil {
				continue
			}
			for _, l := range strs {
				if !g.GrantsList(l) {
					continue
				}
				for _, k := range strs {
					if strings.HasPrefix(k, l) && k != "" && !g.GrantsKey(k) {
						t.Fatalf("prefix %q grants a list of %q, which returns %q, but not a get of %q", px, l, k, k)
					}
				}
			}
			// And a segment grant never reaches a sibling.
			if g.Key != "" {
				for _, k := range strs {
					if strings.HasPrefix(k, g.Key) && k != g.Key && k[len(g.Key)] != '/' && g.GrantsKey(k) {
						t.Fatalf("prefix %q grants %q, a sibling", px, k)
					}
				}
			}
		}
	}
}

func TestS3DecideAllowedDoesNotAllocate(t *testing.T) {
	p := mustCompile(t, map[string]ScopeConfig{"s": {Grants: []GrantConfig{
		{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"exports/", "logs*", "reports/2026"}},
	}}})
	sc, _ := p.Scope("s")
	for _, req := range []Request{
		{Tool: "archive", Action: "get", Key: "reports/2026/01.csv"},
		{Tool: "archive", Action: "get", Key: "reports/2026"},
		{Tool: "archive", Action: "list", Key: "reports/2026/q1/"},
		{Tool: "archive", Action: "list", Key: "logs-2026"},
	} {
		if n := testing.AllocsPerRun(100, func() {
			if !sc.Decide(req).Allow {
				t.Fatalf("Decide(%s) denied", req)
			}
		}); n != 0 {
			t.Errorf("Decide(%s) allocates %v times, want 0", req, n)
		}
	}
}
