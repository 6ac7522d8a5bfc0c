package policy

import (
	"reflect"
	"slices"
	"testing"
)

func TestRulesSayWhatEachGrantReaches(t *testing.T) {
	tools := map[string]ToolInfo{
		"github": {Kind: "http"},
		"titles": {Kind: "http", Method: "GET", Path: "/repos/{owner}/{repo}/issues"},
		"bucket": {Kind: "s3"},
	}
	p, errs := Compile(map[string]ScopeConfig{"s": {Grants: []GrantConfig{
		{Tool: "github", Methods: []string{"GET", "HEAD"}, Paths: []string{"/repos/acme/api/issues/*", "/repos/**"}},
		{Tool: "bucket", Actions: []string{"list", "get"}, Prefixes: []string{"reports/2026/", ""}},
		{Tool: "github", Methods: []string{"POST", "DELETE"}, Paths: []string{"/repos/acme/api/issues/*/comments"}},
		{Tool: "titles"},
		{Tool: "titles", Paths: []string{"/repos/acme/*/issues"}},
		{Tool: "github", Methods: []string{"PUT"}, Paths: []string{"/**"}, AllowBroad: true},
	}}}, tools)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	sc, _ := p.Scope("s")
	whole, _ := parseS3Prefix("")
	reports, _ := parseS3Prefix("reports/2026/")
	want := []Rule{
		{Tool: "bucket", Kind: "s3", Grant: 1, Actions: []string{"list", "get"}, Prefix: reports, AnyDepth: true,
			Texts: []string{"bucket: list reports/2026/", "bucket: get reports/2026/"}},
		{Tool: "bucket", Kind: "s3", Grant: 1, Actions: []string{"list", "get"}, Prefix: whole, AnyDepth: true, Broad: true,
			Texts: []string{`bucket: list "" (the whole bucket)`, `bucket: get "" (the whole bucket)`}},
		{Tool: "github", Kind: "http", Grant: 0, Methods: []string{"GET", "HEAD"}, Pattern: "/repos/acme/api/issues/*",
			Texts: []string{"github: GET /repos/acme/api/issues/*", "github: HEAD /repos/acme/api/issues/*"}},
		{Tool: "github", Kind: "http", Grant: 0, Methods: []string{"GET", "HEAD"}, Pattern: "/repos/**", AnyDepth: true,
			Texts: []string{"github: GET /repos/**", "github: HEAD /repos/**"}},
		{Tool: "github", Kind: "http", Grant: 2, Methods: []string{"POST", "DELETE"}, Pattern: "/repos/acme/api/issues/*/comments", Writes: true, Deletes: true,
			Texts: []string{"github: POST /repos/acme/api/issues/*/comments", "github: DELETE /repos/acme/api/issues/*/comments"}},
		{Tool: "github", Kind: "http", Grant: 5, Methods: []string{"PUT"}, Pattern: "/**", Writes: true, AnyDepth: true, Broad: true,
			Texts: []string{"github: PUT /**"}},
		{Tool: "titles", Kind: "http", Grant: 3, Methods: []string{"GET"}, Pattern: "/repos/{owner}/{repo}/issues",
			Texts: []string{"titles: GET /repos/{owner}/{repo}/issues"}},
		{Tool: "titles", Kind: "http", Grant: 4, Methods: []string{"GET"}, Pattern: "/repos/acme/*/issues",
			Texts: []string{"titles: GET /repos/acme/*/issues"}},
	}
	got := sc.Rules()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Rules() =\n%+v\nwant\n%+v", got, want)
	}
	// Each text is what Decide names when the rule allows a call.
	for _, c := range []struct {
		req  Request
		rule int
	}{
		{Request{Tool: "github", Method: "HEAD", Segments: []string{"repos", "acme", "api", "issues", "7"}}, 2},
		{Request{Tool: "github", Method: "GET", Segments: []string{"repos", "acme", "web"}}, 3},
		{Request{Tool: "github", Method: "DELETE", Segments: []string{"repos", "acme", "api", "issues", "7", "comments"}}, 4},
		{Request{Tool: "bucket", Action: "get", Key: "reports/2026/01.csv"}, 0},
		{Request{Tool: "bucket", Action: "list", Key: "other/"}, 1},
		{Request{Tool: "titles", Method: "GET", Segments: []string{"repos", "other", "x", "issues"}}, 6},
	} {
		d := sc.Decide(c.req)
		if !d.Allow || !slices.Contains(want[c.rule].Texts, d.Grant) {
			t.Errorf("Decide(%s) = %+v, want allowed by %v", c.req, d, want[c.rule].Texts)
		}
	}
	if lines := got[1].Lines(); !slices.Equal(lines, []string{`list "" (the whole bucket)`, `get "" (the whole bucket)`}) {
		t.Errorf("Lines() = %q", lines)
	}
	if lines := got[4].Lines(); !slices.Equal(lines, []string{"POST /repos/acme/api/issues/*/comments", "DELETE /repos/acme/api/issues/*/comments"}) {
		t.Errorf("Lines() = %q", lines)
	}
}

func TestSplitPathUndoesRequestPath(t *testing.T) {
	for _, segs := range [][]string{nil, {"a"}, {"repos", "acme", "api"}, {"a b", "ü", "x;y"}} {
		p := Request{Segments: segs}.Path()
		if got := SplitPath(p); !slices.Equal(got, segs) {
			t.Errorf("SplitPath(%q) = %q, want %q", p, got, segs)
		}
	}
}
