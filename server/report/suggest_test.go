package report

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
)

func TestGeneralizePaths(t *testing.T) {
	tests := map[string]struct {
		paths []string
		want  []string
	}{
		"one id stays literal":             {[]string{"/issues/7"}, []string{"/issues/7"}},
		"two ids become *":                 {[]string{"/issues/7", "/issues/9"}, []string{"/issues/*"}},
		"names never become *":             {[]string{"/repos/acme/api", "/repos/acme/web"}, []string{"/repos/acme/api", "/repos/acme/web"}},
		"a name beside ids is covered":     {[]string{"/issues/7", "/issues/9", "/issues/new"}, []string{"/issues/*"}},
		"ids merge where the rest agrees":  {[]string{"/a/1/x", "/a/2/y", "/a/3/x"}, []string{"/a/*/x", "/a/2/y"}},
		"lengths stay apart, never **":     {[]string{"/a/1", "/a/2/b", "/a/3/b/c"}, []string{"/a/1", "/a/2/b", "/a/3/b/c"}},
		"the root":                         {[]string{"/"}, []string{"/"}},
		"customer ids":                     {[]string{"/customers/cus_NffrFeUfNV2Hib", "/customers/cus_Q8r2"}, []string{"/customers/*"}},
		"ids at two levels":                {[]string{"/orgs/o1/users/u1", "/orgs/o2/users/u2"}, []string{"/orgs/*/users/*"}},
		"one id beside a name stays apart": {[]string{"/users/u1", "/users/me"}, []string{"/users/me", "/users/u1"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var in [][]string
			for _, p := range tc.paths {
				in = append(in, policy.SplitPath(p))
			}
			if got := generalizePaths(in); !slices.Equal(got, tc.want) {
				t.Fatalf("generalizePaths(%q) = %q, want %q", tc.paths, got, tc.want)
			}
		})
	}
}

func TestS3Prefixes(t *testing.T) {
	for _, tc := range []struct {
		keys, want []string
	}{
		{[]string{"reports/2026/01.csv", "reports/2026/02.csv"}, []string{"reports/2026/"}},
		{[]string{"reports/2026/01.csv"}, []string{"reports/2026/01.csv"}},
		{[]string{"reports/a.csv", "reports/b.csv"}, []string{"reports/a.csv", "reports/b.csv"}},
		{[]string{"1.csv", "2.csv"}, []string{"1.csv", "2.csv"}}, // never the whole bucket
		{[]string{"a/1.csv", "a/2.csv", "a/b/3.csv"}, []string{"a/"}},
	} {
		if got := s3KeyPrefixes(tc.keys); !slices.Equal(got, tc.want) {
			t.Errorf("s3KeyPrefixes(%q) = %q, want %q", tc.keys, got, tc.want)
		}
	}
	for p, want := range map[string]string{"reports/": "reports/", "": "", "reports/2026": "reports/2026*"} {
		if got := s3ListPrefix(p); got != want {
			t.Errorf("s3ListPrefix(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestSuggestLearnsFromAllowedCallsOnly(t *testing.T) {
	f, _ := triageFixture(t)
	const cc = "claude-code/1.0"
	f.call(t0.Add(min_(50)), "ses_a", "triage", cc, "archive", `{"action":"list","prefix":"reports/2026/"}`, 100)
	f.call(t0.Add(min_(51)), "ses_a", "triage", cc, "archive", `{"action":"get","key":"reports/2026/01.csv"}`, 100)
	f.call(t0.Add(min_(52)), "ses_a", "triage", cc, "archive", `{"action":"get","key":"reports/2026/02.csv"}`, 100)
	f.call(t0.Add(min_(53)), "ses_a", "triage", cc, "archive", `{"action":"get","key":"payroll/2026.csv"}`, 0) // denied
	s, err := Suggest(context.Background(), f.src, SuggestOptions{Scope: "triage"})
	if err != nil {
		t.Fatal(err)
	}
	want := []policy.GrantConfig{
		{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"reports/2026/"}},
		{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/repos/acme/api/issues", "/repos/acme/api/issues/*"}},
		{Tool: "github", Methods: []string{"POST"}, Paths: []string{"/repos/acme/api/issues/3/comments"}},
	}
	if !equalJSON(s.Grants, want) {
		t.Fatalf("Suggest grants = %+v, want %+v", s.Grants, want)
	}
	// ses_old (40 days back) is outside the 7 days; ses_c is of another scope.
	if s.Calls != 7 || s.Sessions != 2 {
		t.Fatalf("Suggest learned from %d calls of %d sessions, want 7 of 2", s.Calls, s.Sessions)
	}
	wantDiff := []LineDiff{
		{Tool: "archive", Grant: 2, Line: "list reports/", Status: "narrow", Calls: 1, Distinct: 1, NarrowTo: []string{"reports/2026/"}},
		{Tool: "archive", Grant: 2, Line: "get reports/", Status: "narrow", Calls: 2, Distinct: 2, NarrowTo: []string{"reports/2026/"}},
		{Tool: "github", Grant: 0, Line: "GET /repos/acme/api/issues", Status: "keep", Calls: 1, Distinct: 1},
		{Tool: "github", Grant: 0, Line: "GET /repos/acme/api/issues/*", Status: "keep", Calls: 2, Distinct: 2},
		{Tool: "github", Grant: 1, Line: "POST /repos/acme/api/issues/*/comments", Status: "narrow", Calls: 1, Distinct: 1, NarrowTo: []string{"/repos/acme/api/issues/3/comments"}},
		{Tool: "github", Grant: 1, Line: "DELETE /repos/acme/api/issues/*/comments", Status: "unused"},
	}
	if !equalJSON(s.Diff, wantDiff) {
		t.Fatalf("Suggest diff =\n%+v\nwant\n%+v", s.Diff, wantDiff)
	}
	wantDenied := []Counted{{"github: DELETE /repos/acme/api (not_granted)", 2}, {"archive: get payroll/2026.csv (not_granted)", 1}, {"gitlab: - (unknown_tool)", 1}}
	if !equalJSON(s.Denied, wantDenied) {
		t.Fatalf("Suggest denied = %+v, want %+v", s.Denied, wantDenied)
	}
	for _, g := range s.Grants {
		if g.Tool == "archive" && slices.Contains(g.Prefixes, "payroll/") || slices.Contains(g.Methods, "DELETE") {
			t.Fatalf("a denied request became a grant: %+v", g)
		}
	}
	wantYAML := `scopes:
  triage:
    description: "Triage issues in acme/api."
    ttl: 1h
    grants:
      - {tool: archive, actions: [list, get], prefixes: [reports/2026/]}
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues, /repos/acme/api/issues/*]}
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/3/comments]}
`
	if !strings.HasSuffix(s.YAML, wantYAML) || !strings.HasPrefix(s.YAML, "# keyhole scope suggest --scope triage: 7 allowed calls of 2 sessions") {
		t.Fatalf("Suggest YAML =\n%s\nwant it to end with\n%s", s.YAML, wantYAML)
	}
	var b bytes.Buffer
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"unused  grants[1] github: DELETE /repos/acme/api/issues/*/comments", "Asked for, not granted", "narrow to reports/2026/"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("text does not hold %q:\n%s", w, b.String())
		}
	}

	// One session's calls, over a window that reaches ses_old too.
	s, err = Suggest(context.Background(), f.src, SuggestOptions{Scope: "triage", Session: "ses_b", Since: 60 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if want := []policy.GrantConfig{{Tool: "github", Methods: []string{"POST"}, Paths: []string{"/repos/acme/api/issues/3/comments"}}}; s.Calls != 1 || !equalJSON(s.Grants, want) {
		t.Fatalf("Suggest(--session ses_b) = %d calls, %+v", s.Calls, s.Grants)
	}
	if _, err := Suggest(context.Background(), f.src, SuggestOptions{Scope: "nosuch"}); err == nil {
		t.Fatal("Suggest of an unknown scope = nil error")
	}
}

func TestSuggestOfATemplatedTool(t *testing.T) {
	f := newFixture(t, `version: 1
tools:
  stripe_customer:
    kind: http
    base_url: https://api.stripe.com/v1
    method: GET
    path: /customers/{customer}
    input_schema: {type: object, required: [customer], properties: {customer: {type: string}}}
    credential: {secret: stripe, inject: bearer}
scopes:
  sync:
    grants:
      - {tool: stripe_customer}
`, nil, nil)
	f.call(t0, "s1", "sync", "c/1", "stripe_customer", `{"customer":"cus_A1"}`, 10)
	s, err := Suggest(context.Background(), f.src, SuggestOptions{Scope: "sync"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []policy.GrantConfig{{Tool: "stripe_customer", Paths: []string{"/customers/cus_A1"}}}; !equalJSON(s.Grants, want) {
		t.Fatalf("one customer: grants = %+v, want %+v", s.Grants, want)
	}
	f.call(t0.Add(time.Minute), "s1", "sync", "c/1", "stripe_customer", `{"customer":"cus_B2"}`, 10)
	s, err = Suggest(context.Background(), f.src, SuggestOptions{Scope: "sync"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []policy.GrantConfig{{Tool: "stripe_customer"}}; !equalJSON(s.Grants, want) || s.Diff[0].Status != "keep" {
		t.Fatalf("two customers: grants = %+v, diff %+v; want the tool alone, kept", s.Grants, s.Diff)
	}
}

func TestYAMLStringReadsBack(t *testing.T) {
	for _, s := range []string{"/repos/acme/*", "reports/2026/", "", "a, b", "{x}", "*", "-1", "yes", "null", "a: b", "#x", "ü", `q"uote`, "reports/2026*"} {
		q := yamlString(s)
		var doc struct {
			V []string `yaml:"v"`
		}
		if err := yamlUnmarshal("v: ["+q+"]", &doc); err != nil || len(doc.V) != 1 || doc.V[0] != s {
			t.Errorf("yamlString(%q) = %s, reads back as %q (%v)", s, q, doc.V, err)
		}
	}
}

// TestSuggestionCheckCatchesAScopeThatWouldBreakWhatRan: the check every
// suggestion passes before it is printed fails a scope that would deny a
// request it was learned from.
func TestSuggestionCheckCatchesAScopeThatWouldBreakWhatRan(t *testing.T) {
	f, _ := triageFixture(t)
	w := newWorld(f.src)
	l := newLearned()
	l.paths["GET"] = [][]string{{"repos", "acme", "api", "issues", "7"}, {"repos", "acme", "api", "issues"}}
	l.seen["x"] = true
	s := &Suggestion{Scope: "triage", Grants: []policy.GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/repos/acme/api/issues/*"}}}}
	s.render(w)
	if err := s.check(w, map[string]*learned{"github": l}); err == nil || !strings.Contains(err.Error(), "GET /repos/acme/api/issues is") {
		t.Fatalf("check of a scope without /repos/acme/api/issues = %v", err)
	}
	s.Grants[0].Paths = append(s.Grants[0].Paths, "/repos/acme/api/issues")
	s.render(w)
	if err := s.check(w, map[string]*learned{"github": l}); err != nil {
		t.Fatalf("check of a scope that allows both = %v", err)
	}
}
