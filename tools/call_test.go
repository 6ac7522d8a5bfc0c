package tools

import (
	"reflect"
	"testing"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

func TestCallAuditFields(t *testing.T) {
	up := servertest.NewUpstream(t, nil)
	httpTool := compileTest(t, Config{BaseURL: up.URL + "/v1"})
	s3Tool := compileS3Test(t, s3TestConfig("https://s3.example.com"))
	tests := map[string]struct {
		tool Tool
		args string
		want AuditFields
	}{
		"http, query names only, sorted and escaped": {httpTool, `{"method":"GET","path":"/a/b","query":{"z":"1","a b":"secret-value"}}`,
			AuditFields{Kind: "http", Method: "GET", Host: up.Listener.Addr().String(), Path: "/a/b", QueryNames: []string{"a+b", "z"}}},
		"s3 list names bucket and prefix": {s3Tool, `{"action":"list","prefix":"reports/2026/"}`,
			AuditFields{Kind: "s3", Bucket: s3TestBucket, Action: "list", Key: "reports/2026/"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			call, err := tt.tool.Prepare([]byte(tt.args))
			if err != nil {
				t.Fatalf("Prepare(%s) = %v", tt.args, err)
			}
			if got := call.AuditFields(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Prepare(%s).AuditFields() = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}

// TestCallCanonical: the canonical form holds everything that is sent,
// and two calls that send the same request have the same form.
func TestCallCanonical(t *testing.T) {
	up := servertest.NewUpstream(t, nil)
	httpTool := compileTest(t, Config{BaseURL: up.URL + "/v1"})
	s3Tool := compileS3Test(t, s3TestConfig("https://s3.example.com"))
	host := up.Listener.Addr().String()
	tests := map[string]struct {
		tool Tool
		args string
		want Canonical
	}{
		"http with query, headers and a JSON body": {httpTool,
			`{"method":"POST","path":"/a/b%20c","query":{"z":"1","a b":"x&y"},"headers":{"x-trace":"t1"},"body":{"b":2,"a":1}}`,
			Canonical{
				AuditFields: AuditFields{Kind: "http", Method: "POST", Host: host, Path: "/a/b c", QueryNames: []string{"a+b", "z"}},
				Query:       []Param{{"a b", "x&y"}, {"z", "1"}},
				Headers:     []Param{{"Content-Type", "application/json"}, {"X-Trace", "t1"}},
				HasBody:     true, Body: []byte(`{"a":1,"b":2}`),
			}},
		"http with an empty string body": {httpTool, `{"method":"PUT","path":"/a","body":""}`,
			Canonical{AuditFields: AuditFields{Kind: "http", Method: "PUT", Host: host, Path: "/a"}, Headers: nil, HasBody: true, Body: []byte{}}},
		"s3 list with its parameters": {s3Tool, `{"action":"list","prefix":"reports/","delimiter":"/","max_keys":5,"continuation_token":"upstream-token"}`,
			Canonical{AuditFields: AuditFields{Kind: "s3", Bucket: s3TestBucket, Action: "list", Key: "reports/"}, Delimiter: "/", MaxKeys: 5, ContinuationToken: "upstream-token"}},
		"s3 get": {s3Tool, `{"action":"get","key":"reports/a.csv"}`,
			Canonical{AuditFields: AuditFields{Kind: "s3", Bucket: s3TestBucket, Action: "get", Key: "reports/a.csv"}, MaxKeys: 1000}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			call, err := tt.tool.Prepare([]byte(tt.args))
			if err != nil {
				t.Fatalf("Prepare(%s) = %v", tt.args, err)
			}
			got := call.Canonical()
			if got.Body == nil && tt.want.Body != nil && len(tt.want.Body) == 0 {
				got.Body = []byte{}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Prepare(%s).Canonical() =\n%+v\nwant\n%+v", tt.args, got, tt.want)
			}
		})
	}
	a, _ := httpTool.Prepare([]byte(`{"method":"POST","path":"/a","body":{"a":1,"b":2}}`))
	b, _ := httpTool.Prepare([]byte(`{ "body": {"b":2, "a":1}, "path":"/a", "method":"POST" }`))
	if !reflect.DeepEqual(a.Canonical(), b.Canonical()) {
		t.Fatalf("the same request in other JSON has another canonical form:\n%+v\n%+v", a.Canonical(), b.Canonical())
	}
}
