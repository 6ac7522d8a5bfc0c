package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

func BenchmarkCanonicalPath(b *testing.B) {
	const p = "/repos/acme/api/issues/1234/comments%20x/%E2%9C%93"
	for b.Loop() {
		if _, err := httpCanonicalPath(p, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProjection(b *testing.B) {
	items := make([]map[string]any, 100)
	for i := range items {
		items[i] = map[string]any{"number": i, "title": fmt.Sprintf("issue %d", i), "body": "long text here", "user": map[string]any{"login": "u", "id": i}}
	}
	body, _ := json.Marshal(items)
	tool := &httpTool{fields: []string{"#.number", "#.title", "#.user.login"}, eachFields: true}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		tool.project(body)
	}
}

func BenchmarkExecute(b *testing.B) {
	up := servertest.NewUpstream(b, nil)
	tool := compileTest(b, Config{BaseURL: up.URL})
	call := prepare(b, tool, `{"method":"GET","path":"/repos/acme/api/issues","query":{"state":"open"}}`)
	for b.Loop() {
		if _, err := tool.Execute(context.Background(), call, []byte(testToken), execEnv(tool, []byte(testToken))); err != nil {
			b.Fatal(err)
		}
	}
}
