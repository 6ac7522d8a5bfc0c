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
