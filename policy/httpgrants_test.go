package policy

import (
	"reflect"
	"testing"
)

func TestHTTPGrantsListsRulesAsSegments(t *testing.T) {
	tools := map[string]ToolInfo{
		"github": {Kind: "http"},
		"titles": {Kind: "http", Method: "GET", Path: "/repos/{owner}/{repo}/issues"},
		"bucket": {Kind: "s3"},
	}
	p, errs := Compile(map[string]ScopeConfig{"s": {Grants: []GrantConfig{
		{Tool: "github", Methods: []string{"GET", "HEAD"}, Paths: []string{"/repos/acme/api/issues/*", "/**"}},
		{Tool: "github", Methods: []string{"POST"}, Paths: []string{"/repos/acme/api/issues/*/comments"}},
		{Tool: "titles"},
		{Tool: "titles", Paths: []string{"/repos/acme/*/issues"}},
		{Tool: "bucket", Actions: []string{"list"}, Prefixes: []string{"a/"}},
	}}}, tools)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	sc, _ := p.Scope("s")
	want := []HTTPGrant{
		{Methods: []string{"GET", "HEAD"}, Paths: [][]string{{"repos", "acme", "api", "issues", "*"}}},
		{Methods: []string{"GET", "HEAD"}, Paths: [][]string{{"**"}}},
		{Methods: []string{"POST"}, Paths: [][]string{{"repos", "acme", "api", "issues", "*", "comments"}}},
	}
	if got := sc.HTTPGrants("github"); !reflect.DeepEqual(got, want) {
		t.Fatalf("HTTPGrants(github) = %+v, want %+v", got, want)
	}
	want = []HTTPGrant{
		{Methods: []string{"GET"}, Paths: [][]string{{"repos", "*", "*", "issues"}}},
		{Methods: []string{"GET"}, Paths: [][]string{{"repos", "*", "*", "issues"}, {"repos", "acme", "*", "issues"}}},
	}
	if got := sc.HTTPGrants("titles"); !reflect.DeepEqual(got, want) {
		t.Fatalf("HTTPGrants(titles) = %+v, want %+v", got, want)
	}
	if got := sc.HTTPGrants("bucket"); got != nil {
		t.Fatalf("HTTPGrants(bucket) = %+v, want nil for an s3 tool", got)
	}
	if got := sc.HTTPGrants("other"); got != nil {
		t.Fatalf("HTTPGrants(other) = %+v, want nil for a tool not granted", got)
	}
}
