package tools

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

func TestCompileHTTPErrors(t *testing.T) {
	good := func() Config {
		return Config{Kind: "http", BaseURL: "https://api.example.com", Credential: Credential{Secret: "tok", Inject: "bearer"}}
	}
	tests := map[string]struct {
		edit  func(c *Config)
		paths []string
	}{
		"missing base_url":      {func(c *Config) { c.BaseURL = "" }, []string{"base_url"}},
		"relative base_url":     {func(c *Config) { c.BaseURL = "api.example.com/v1" }, []string{"base_url"}},
		"http without opt-in":   {func(c *Config) { c.BaseURL = "http://api.example.com" }, []string{"base_url"}},
		"ftp":                   {func(c *Config) { c.BaseURL = "ftp://api.example.com" }, []string{"base_url"}},
		"userinfo":              {func(c *Config) { c.BaseURL = "https://u:p@api.example.com" }, []string{"base_url"}},
		"query":                 {func(c *Config) { c.BaseURL = "https://api.example.com/?a=1" }, []string{"base_url"}},
		"fragment":              {func(c *Config) { c.BaseURL = "https://api.example.com/#x" }, []string{"base_url"}},
		"dot base path":         {func(c *Config) { c.BaseURL = "https://api.example.com/v1/../admin" }, []string{"base_url"}},
		"bad port":              {func(c *Config) { c.BaseURL = "https://api.example.com:99999" }, []string{"base_url"}},
		"bad secret name":       {func(c *Config) { c.Credential.Secret = "Tok!" }, []string{"credential.secret"}},
		"bad inject":            {func(c *Config) { c.Credential.Inject = "cookie" }, []string{"credential.inject"}},
		"header without name":   {func(c *Config) { c.Credential.Inject = "header" }, []string{"credential.header"}},
		"header is Host":        {func(c *Config) { c.Credential = Credential{Secret: "tok", Inject: "header", Header: "Host"} }, []string{"credential.header"}},
		"header not a token":    {func(c *Config) { c.Credential = Credential{Secret: "tok", Inject: "header", Header: "X A"} }, []string{"credential.header"}},
		"prefix without header": {func(c *Config) { c.Credential.Prefix = "Token " }, []string{"credential.prefix"}},
		"query without param":   {func(c *Config) { c.Credential.Inject = "query" }, []string{"credential.param"}},
		"param with bearer":     {func(c *Config) { c.Credential.Param = "k" }, []string{"credential.param"}},
		"aws without block":     {func(c *Config) { c.Credential.Inject = "aws_sigv4" }, []string{"aws"}},
		"aws with bearer":       {func(c *Config) { c.AWS = &AWS{Service: "s3", Region: "us-east-1"} }, []string{"aws"}},
		"s3 fields": {func(c *Config) { c.Bucket, c.Region, c.Endpoint, c.PathStyle, c.MaxKeys = "b", "r", "e", true, 5 },
			[]string{"bucket", "endpoint", "max_keys", "path_style", "region"}},
		"timeout not a duration": {func(c *Config) { c.Timeout = "10" }, []string{"timeout"}},
		"timeout too long":       {func(c *Config) { c.Timeout = "6m" }, []string{"timeout"}},
		"max_bytes too large":    {func(c *Config) { c.Response.MaxBytes = 65<<20 + 1 }, []string{"response.max_bytes"}},
		"bad fields": {func(c *Config) { c.Response.Fields = []string{"", "a..b", "@this", "a[", "ok", "ok"} },
			[]string{"response.fields[0]", "response.fields[1]", "response.fields[2]", "response.fields[3]", "response.fields[5]"}},
		"follow_redirects":    {func(c *Config) { c.FollowRedirects = "always" }, []string{"follow_redirects"}},
		"method without path": {func(c *Config) { c.Method = "GET" }, []string{"method"}},
		"bad template": {func(c *Config) {
			c.Method, c.Path = "FETCH", "/repos/{owner}/x{repo}/{missing}"
			c.InputSchema = map[string]any{"type": "object", "properties": map[string]any{"owner": map[string]any{"type": "string"}}}
		}, []string{"method", "path", "path"}},
		"schema not an object": {func(c *Config) {
			c.Method, c.Path, c.InputSchema = "GET", "/x", map[string]any{"type": "string"}
		}, []string{"input_schema.type"}},
		"schema does not compile": {func(c *Config) {
			c.Method, c.Path, c.InputSchema = "GET", "/x", map[string]any{"type": "object", "properties": map[string]any{"a": map[string]any{"type": "nope"}}}
		}, []string{"input_schema"}},
		"schema with remote ref": {func(c *Config) {
			c.Method, c.Path, c.InputSchema = "GET", "/x", map[string]any{"type": "object", "properties": map[string]any{"a": map[string]any{"$ref": "http://169.254.169.254/s.json"}}}
		}, []string{"input_schema"}},
		"template property shadows the credential param": {func(c *Config) {
			c.Credential = Credential{Secret: "tok", Inject: "query", Param: "api_key"}
			c.Method, c.Path, c.InputSchema = "GET", "/x", map[string]any{"type": "object", "properties": map[string]any{"API_KEY": map[string]any{"type": "string"}}}
		}, []string{"input_schema.properties.API_KEY"}},
		"input_schema on a generic tool": {func(c *Config) { c.InputSchema = map[string]any{"type": "object"} }, []string{"input_schema"}},
		"missing ca_file":                {func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, []string{"ca_file"}},
		"bad proxy":                      {func(c *Config) { c.Proxy = "ftp://proxy" }, []string{"proxy"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := good()
			tc.edit(&cfg)
			tool, errs := Compile("gh", cfg, Env{})
			if tool != nil {
				t.Fatalf("Compile returned a tool, want errors at %v", tc.paths)
			}
			var got []string
			for _, err := range errs {
				var fe *policy.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("error %v is not a *policy.FieldError", err)
				}
				got = append(got, strings.TrimPrefix(fe.Path, "tools.gh."))
			}
			sort.Strings(got)
			want := slices.Clone(tc.paths)
			sort.Strings(want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("Compile errors at %v (%v), want %v", got, errs, want)
			}
		})
	}
}

func TestCompileHTTPNormalizes(t *testing.T) {
	tests := map[string]struct {
		base     string
		wantHost string
		wantSegs []string
	}{
		"case and trailing dot": {"https://API.Example.COM./v1/", "api.example.com", []string{"v1"}},
		"IDNA":                  {"https://Bücher.example/", "xn--bcher-kva.example", nil},
		"port kept":             {"https://api.example.com:8443/a/b", "api.example.com:8443", []string{"a", "b"}},
		"IPv6":                  {"https://[::1]:8443", "[::1]:8443", nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tool, errs := Compile("api", Config{Kind: "http", BaseURL: tc.base, Credential: Credential{Secret: "tok", Inject: "bearer"}}, Env{})
			if len(errs) > 0 {
				t.Fatalf("Compile(%s) = %v", tc.base, errs)
			}
			ht := tool.(*httpTool)
			if ht.origin.Host != tc.wantHost || !slices.Equal(ht.baseSegs, tc.wantSegs) {
				t.Fatalf("Compile(%s): host %q segs %q, want %q %q", tc.base, ht.origin.Host, ht.baseSegs, tc.wantHost, tc.wantSegs)
			}
			if info := tool.Info(); info.Kind != "http" || info.Method != "" || info.Host != tc.wantHost {
				t.Fatalf("Info() = %+v", info)
			}
		})
	}
}

func TestCompileHTTPCAFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a cert"), 0o600)
	_, errs := Compile("api", Config{Kind: "http", BaseURL: "https://x.example", CAFile: bad, Credential: Credential{Secret: "tok", Inject: "bearer"}}, Env{})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "tools.api.ca_file: holds no PEM certificate") {
		t.Fatalf("Compile(bad ca_file) = %v", errs)
	}
}

func TestHTTPTemplated(t *testing.T) {
	up := servertest.NewUpstream(t, nil)
	tool := compileTest(t, Config{
		BaseURL: up.URL + "/api",
		Method:  "GET",
		Path:    "/repos/{owner}/{repo}/issues",
		InputSchema: map[string]any{
			"type":     "object",
			"required": []any{"owner", "repo"},
			"properties": map[string]any{
				"owner":  map[string]any{"type": "string"},
				"repo":   map[string]any{"type": []any{"string", "integer"}},
				"state":  map[string]any{"type": "string", "enum": []any{"open", "closed"}},
				"labels": map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
			},
		},
	})
	if info := tool.Info(); info.Method != "GET" || info.Path != "/repos/{owner}/{repo}/issues" {
		t.Fatalf("Info() = %+v", info)
	}
	if !strings.Contains(tool.Description(), "GET /repos/{owner}/{repo}/issues") {
		t.Fatalf("Description() = %q", tool.Description())
	}
	call := prepare(t, tool, `{"owner":"ac me","repo":42,"state":"open","labels":["bug","p1"]}`)
	if got := call.Request.String(); got != "GET /repos/ac me/42/issues" {
		t.Fatalf("Request = %s, want GET /repos/ac me/42/issues", got)
	}
	if _, err := tool.Execute(t.Context(), call, []byte(testToken), execEnv(tool, []byte(testToken))); err != nil {
		t.Fatalf("Execute = %v", err)
	}
	if got := up.Requests()[0].RequestURI; got != "/api/repos/ac%20me/42/issues?labels=bug&labels=p1&state=open" {
		t.Fatalf("upstream received %q", got)
	}
	_, err := tool.Prepare([]byte(`{"owner":"acme","repo":"api","state":"all"}`))
	var ae *ArgError
	if !errors.As(err, &ae) || !strings.HasPrefix(ae.Msg, "arguments/state: ") {
		t.Fatalf("Prepare(state=all) = %v, want a schema *ArgError at /state", err)
	}
}
