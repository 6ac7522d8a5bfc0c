package policy

import (
	"reflect"
	"strings"
	"testing"
)

// testTools are the tools every test policy compiles against.
var testTools = map[string]ToolInfo{
	"github":       {Kind: "http", Host: "api.github.com"},
	"issue_titles": {Kind: "http", Method: "GET", Path: "/repos/{owner}/{repo}/issues"},
	"archive":      {Kind: "s3", Bucket: "acme-archive"},
}

func testScopes() map[string]ScopeConfig {
	return map[string]ScopeConfig{
		"triage": {Grants: []GrantConfig{
			{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/repos/acme/api/issues", "/repos/acme/api/issues/*"}},
			{Tool: "github", Methods: []string{"POST"}, Paths: []string{"/repos/acme/api/issues/*/comments"}},
		}},
		"deep": {Grants: []GrantConfig{
			{Tool: "github", Methods: []string{"GET", "HEAD"}, Paths: []string{"/docs/**", "/a/**/z", "/"}},
		}},
		"titles": {Grants: []GrantConfig{{Tool: "issue_titles"}}},
		"narrow": {Grants: []GrantConfig{{Tool: "issue_titles", Methods: []string{"GET"}, Paths: []string{"/repos/acme/*/issues"}}}},
		"report": {Grants: []GrantConfig{
			{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"reports/2026/"}},
		}},
		"bucket": {Grants: []GrantConfig{
			{Tool: "archive", Actions: []string{"list"}, Prefixes: []string{""}},
		}},
	}
}

func mustCompile(t testing.TB, scopes map[string]ScopeConfig) *Policy {
	t.Helper()
	p, errs := Compile(scopes, testTools)
	if len(errs) > 0 {
		t.Fatalf("Compile: %v", errs)
	}
	return p
}

func seg(path string) []string {
	if path == "/" {
		return nil
	}
	return strings.Split(strings.TrimPrefix(path, "/"), "/")
}

func get(path string) Request  { return Request{Tool: "github", Method: "GET", Segments: seg(path)} }
func post(path string) Request { return Request{Tool: "github", Method: "POST", Segments: seg(path)} }

const (
	triageGranted = "; granted: GET /repos/acme/api/issues, GET /repos/acme/api/issues/*, POST /repos/acme/api/issues/*/comments"
	deepGranted   = "; granted: GET /docs/**, HEAD /docs/**, GET /a/**/z, HEAD /a/**/z, GET /, HEAD /"
	reportGranted = "; granted: list reports/2026/ (every key under reports/2026/), get reports/2026/ (every key under reports/2026/)"
)

func TestScopeDecide(t *testing.T) {
	p := mustCompile(t, testScopes())
	allow := func(grant string) Decision {
		return Decision{Allow: true, Reason: "granted to scope " + strings.SplitN(grant, "|", 2)[0] + " by " + strings.SplitN(grant, "|", 2)[1], Grant: strings.SplitN(grant, "|", 2)[1]}
	}
	deny := func(reason string) Decision { return Decision{Code: CodeNotGranted, Reason: reason} }
	tests := []struct {
		name  string
		scope string
		req   Request
		want  Decision
	}{
		{"list issues", "triage", get("/repos/acme/api/issues"), allow("triage|github: GET /repos/acme/api/issues")},
		{"one issue", "triage", get("/repos/acme/api/issues/7"), allow("triage|github: GET /repos/acme/api/issues/*")},
		{"comment", "triage", post("/repos/acme/api/issues/7/comments"), allow("triage|github: POST /repos/acme/api/issues/*/comments")},
		{"labels not granted", "triage", post("/repos/acme/api/issues/7/labels"),
			deny("POST /repos/acme/api/issues/7/labels is not granted to scope triage" + triageGranted)},
		{"method not granted", "triage", Request{Tool: "github", Method: "DELETE", Segments: seg("/repos/acme/api/issues/7")},
			deny("DELETE /repos/acme/api/issues/7 is not granted to scope triage" + triageGranted)},
		{"lower-case method", "triage", Request{Tool: "github", Method: "get", Segments: seg("/repos/acme/api/issues")},
			deny(`method "get" is not granted to scope triage` + triageGranted)},
		{"method with space", "triage", Request{Tool: "github", Method: "GET ", Segments: seg("/repos/acme/api/issues")},
			deny(`method "GET " is not granted to scope triage` + triageGranted)},
		{"CONNECT", "triage", Request{Tool: "github", Method: "CONNECT", Segments: seg("/repos/acme/api/issues")},
			deny(`method "CONNECT" is not granted to scope triage` + triageGranted)},
		{"case differs", "triage", get("/repos/acme/api/Issues"),
			deny("GET /repos/acme/api/Issues is not granted to scope triage" + triageGranted)},
		{"full-width slash is opaque", "triage", get("/repos/acme/api/issues／7"),
			deny("GET /repos/acme/api/issues／7 is not granted to scope triage" + triageGranted)},
		{"full-width dots are one segment", "triage", get("/repos/acme/api/issues/．．"), allow("triage|github: GET /repos/acme/api/issues/*")},
		{"star is one segment", "triage", get("/repos/acme/api/issues/7/8"),
			deny("GET /repos/acme/api/issues/7/8 is not granted to scope triage" + triageGranted)},
		{"star does not match empty", "triage", Request{Tool: "github", Method: "GET", Segments: []string{"repos", "acme", "api", "issues", ""}},
			deny(`GET request refused by scope triage: its path has an empty, ".", ".." or unsafe segment`)},
		{"dotdot refused", "deep", get("/docs/../admin"),
			deny(`GET request refused by scope deep: its path has an empty, ".", ".." or unsafe segment`)},
		{"dot refused", "deep", get("/docs/./x"),
			deny(`GET request refused by scope deep: its path has an empty, ".", ".." or unsafe segment`)},
		{"encoded slash refused", "deep", Request{Tool: "github", Method: "GET", Segments: []string{"docs", "a/../../admin"}},
			deny(`GET request refused by scope deep: its path has an empty, ".", ".." or unsafe segment`)},
		{"backslash refused", "deep", Request{Tool: "github", Method: "GET", Segments: []string{"docs", `..\admin`}},
			deny(`GET request refused by scope deep: its path has an empty, ".", ".." or unsafe segment`)},
		{"CRLF refused", "deep", Request{Tool: "github", Method: "GET", Segments: []string{"docs", "a\r\nX: 1"}},
			deny(`GET request refused by scope deep: its path has an empty, ".", ".." or unsafe segment`)},
		{"doublestar zero segments", "deep", get("/docs"), allow("deep|github: GET /docs/**")},
		{"doublestar many segments", "deep", get("/docs/a/b/c"), allow("deep|github: GET /docs/**")},
		{"doublestar inner", "deep", get("/a/z"), allow("deep|github: GET /a/**/z")},
		{"doublestar inner many", "deep", get("/a/b/z/c/z"), allow("deep|github: GET /a/**/z")},
		{"doublestar inner tail missing", "deep", get("/a/b/z/c"),
			deny("GET /a/b/z/c is not granted to scope deep" + deepGranted)},
		{"root", "deep", Request{Tool: "github", Method: "HEAD"}, allow("deep|github: HEAD /")},
		{"root not granted", "triage", get("/"), deny("GET / is not granted to scope triage" + triageGranted)},
		{"prefix of literal", "deep", get("/doc"), deny("GET /doc is not granted to scope deep" + deepGranted)},
		{"unknown tool", "triage", Request{Tool: "gitlab", Method: "GET", Segments: seg("/x")},
			Decision{Code: CodeUnknownTool, Reason: `tool "gitlab" is not granted to scope triage; its tools are: github`}},
		{"s3 action on http tool", "triage", Request{Tool: "github", Action: "get", Key: "x"},
			deny(`s3 action "get" is not granted to scope triage` + triageGranted)},

		{"templated", "titles", Request{Tool: "issue_titles", Method: "GET", Segments: seg("/repos/acme/api/issues")}, allow("titles|issue_titles: GET /repos/{owner}/{repo}/issues")},
		{"templated other path", "titles", Request{Tool: "issue_titles", Method: "GET", Segments: seg("/repos/acme/api/pulls")},
			deny("GET /repos/acme/api/pulls is not granted to scope titles; granted: GET /repos/{owner}/{repo}/issues")},
		{"templated other method", "titles", Request{Tool: "issue_titles", Method: "POST", Segments: seg("/repos/acme/api/issues")},
			deny("POST /repos/acme/api/issues is not granted to scope titles; granted: GET /repos/{owner}/{repo}/issues")},
		{"narrowed", "narrow", Request{Tool: "issue_titles", Method: "GET", Segments: seg("/repos/acme/web/issues")}, allow("narrow|issue_titles: GET /repos/acme/*/issues")},
		{"narrowed other owner", "narrow", Request{Tool: "issue_titles", Method: "GET", Segments: seg("/repos/evil/web/issues")},
			deny("GET /repos/evil/web/issues is not granted to scope narrow; granted: GET /repos/acme/*/issues")},
		{"narrowing keeps template shape", "narrow", Request{Tool: "issue_titles", Method: "GET", Segments: seg("/repos/acme/web/issues/extra")},
			deny("GET /repos/acme/web/issues/extra is not granted to scope narrow; granted: GET /repos/acme/*/issues")},

		{"s3 list under prefix", "report", Request{Tool: "archive", Action: "list", Key: "reports/2026/x"}, allow("report|archive: list reports/2026/")},
		{"s3 list prefix itself", "report", Request{Tool: "archive", Action: "list", Key: "reports/2026/"}, allow("report|archive: list reports/2026/")},
		{"s3 get", "report", Request{Tool: "archive", Action: "get", Key: "reports/2026/q1.csv"}, allow("report|archive: get reports/2026/")},
		{"s3 other year", "report", Request{Tool: "archive", Action: "list", Key: "reports/2025/"},
			deny("list reports/2025/ is not granted to scope report" + reportGranted)},
		{"s3 shorter prefix", "report", Request{Tool: "archive", Action: "list", Key: "reports/20"},
			deny("list reports/20 is not granted to scope report" + reportGranted)},
		{"s3 root needs root grant", "report", Request{Tool: "archive", Action: "list", Key: ""},
			deny(`list "" (the whole bucket) is not granted to scope report` + reportGranted)},
		{"s3 root granted", "bucket", Request{Tool: "archive", Action: "list", Key: ""}, allow(`bucket|archive: list "" (the whole bucket)`)},
		{"s3 action not granted", "report", Request{Tool: "archive", Action: "head", Key: "reports/2026/q1.csv"},
			deny("head reports/2026/q1.csv is not granted to scope report" + reportGranted)},
		{"s3 unknown action", "report", Request{Tool: "archive", Action: "put", Key: "reports/2026/q1.csv"},
			deny(`action "put" is not granted to scope report` + reportGranted)},
		{"s3 dotdot key", "report", Request{Tool: "archive", Action: "get", Key: "reports/2026/../secret"},
			deny(`get request refused by scope report: its key has a "." or ".." segment, a backslash or a control character`)},
		{"s3 control key", "report", Request{Tool: "archive", Action: "get", Key: "reports/2026/a\nb"},
			deny(`get request refused by scope report: its key has a "." or ".." segment, a backslash or a control character`)},
		{"s3 dots inside a name are fine", "report", Request{Tool: "archive", Action: "get", Key: "reports/2026/..hidden"}, allow("report|archive: get reports/2026/")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, ok := p.Scope(tt.scope)
			if !ok {
				t.Fatalf("Scope(%q) not found", tt.scope)
			}
			got := sc.Decide(tt.req)
			if got != tt.want {
				t.Fatalf("Decide(%s)\n got %#v\nwant %#v", tt.req, got, tt.want)
			}
		})
	}
}

func TestZeroDecisionDenies(t *testing.T) {
	var d Decision
	if d.Allow {
		t.Fatal("zero Decision allows")
	}
}

func TestScopeAccessors(t *testing.T) {
	cfg := testScopes()
	tr := cfg["triage"]
	tr.Description = "Triage issues."
	tr.TTL = "15m"
	tr.Grants = append(tr.Grants, GrantConfig{Tool: "archive", Actions: []string{"list"}, Prefixes: []string{"a/"}})
	cfg["triage"] = tr
	p := mustCompile(t, cfg)
	if got, want := strings.Join(p.ScopeNames(), ","), "bucket,deep,narrow,report,titles,triage"; got != want {
		t.Fatalf("ScopeNames() = %s, want %s", got, want)
	}
	sc, _ := p.Scope("triage")
	if sc.Name() != "triage" || sc.Description() != "Triage issues." || sc.TTL().String() != "15m0s" {
		t.Fatalf("Name, Description, TTL = %q, %q, %s", sc.Name(), sc.Description(), sc.TTL())
	}
	if got, want := strings.Join(sc.Tools(), ","), "archive,github"; got != want {
		t.Fatalf("Tools() = %s, want %s", got, want)
	}
	if !sc.HasTool("archive") || sc.HasTool("issue_titles") {
		t.Fatalf("HasTool(archive), HasTool(issue_titles) = %v, %v; want true, false", sc.HasTool("archive"), sc.HasTool("issue_titles"))
	}
	if got, want := strings.Join(sc.Summary("github"), "|"), "GET /repos/acme/api/issues|GET /repos/acme/api/issues/*|POST /repos/acme/api/issues/*/comments"; got != want {
		t.Fatalf("Summary(github) = %s, want %s", got, want)
	}
	if got := sc.Summary("issue_titles"); got != nil {
		t.Fatalf("Summary(issue_titles) = %v, want nil", got)
	}
	if _, ok := p.Scope("nope"); ok {
		t.Fatal(`Scope("nope") found`)
	}
	// Callers cannot change the scope through what it returns.
	sc.Tools()[0] = "x"
	sc.Summary("github")[0] = "x"
	if sc.Tools()[0] != "archive" || sc.Summary("github")[0] != "GET /repos/acme/api/issues" {
		t.Fatal("Tools or Summary share memory with the scope")
	}
}

func TestDenialReasonListsAtMostTenGrants(t *testing.T) {
	var paths []string
	for i := range 12 {
		paths = append(paths, "/p"+string(rune('a'+i)))
	}
	p := mustCompile(t, map[string]ScopeConfig{"s": {Grants: []GrantConfig{{Tool: "github", Methods: []string{"GET"}, Paths: paths}}}})
	sc, _ := p.Scope("s")
	got := sc.Decide(get("/x")).Reason
	want := "GET /x is not granted to scope s; granted: GET /pa, GET /pb, GET /pc, GET /pd, GET /pe, GET /pf, GET /pg, GET /ph, GET /pi, GET /pj, and 2 more"
	if got != want {
		t.Fatalf("Decide(GET /x).Reason =\n %s\nwant\n %s", got, want)
	}
}

func TestScopeS3Grants(t *testing.T) {
	p := mustCompile(t, map[string]ScopeConfig{"s": {Grants: []GrantConfig{
		{Tool: "archive", Actions: []string{"get", "list"}, Prefixes: []string{"a/", "b/"}},
		{Tool: "archive", Actions: []string{"head"}, Prefixes: []string{"c/"}},
		{Tool: "archive", Actions: []string{"list", "get"}, Prefixes: []string{"b/", "d/"}},
		{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/x"}},
	}}})
	s, _ := p.Scope("s")
	got := s.S3Grants("archive")
	dir := func(px string) S3Prefix { return S3Prefix{Text: px, Under: px} }
	want := []S3Grant{
		{Actions: []string{"list", "get"}, Prefixes: []S3Prefix{dir("a/"), dir("b/"), dir("d/")}},
		{Actions: []string{"head"}, Prefixes: []S3Prefix{dir("c/")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("S3Grants(archive) = %v, want %v", got, want)
	}
	for _, tool := range []string{"github", "unknown"} {
		if got := s.S3Grants(tool); got != nil {
			t.Fatalf("S3Grants(%s) = %v, want nil", tool, got)
		}
	}
}
