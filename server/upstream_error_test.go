package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// erroringTracker answers the issue list of acme/gone with a 404 in the
// shape of GitHub's, acme/broken with a 500 whose long body echoes the
// credential, and everything else with a long list.
func erroringTracker(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/repos/acme/gone/issues":
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}`)
	case "/repos/acme/broken/issues":
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]string{"error": "bad key " + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), "trace": strings.Repeat("x", 20000)})
	default:
		body, _ := json.Marshal([]map[string]any{{"number": 1, "title": strings.Repeat("t", 500), "state": "open"}})
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}
}

const errorsConfig = baseConfig + `  errors:
    grants:
      - {tool: issue_titles, paths: [/repos/acme/*/issues]}
      - {tool: github, methods: [GET], paths: [/repos/acme/*/issues]}
`

// TestTemplatedToolUpstreamErrorIsAToolError: a templated tool with
// response.fields whose upstream answers 4xx or 5xx gives the agent a tool
// error with the status and the error body (scrubbed, capped), not an
// empty projection; and the content-length the agent sees is that of the
// body it gets.
func TestTemplatedToolUpstreamErrorIsAToolError(t *testing.T) {
	e := newEnvWith(t, strings.Replace(errorsConfig, "    timeout: 5s\n", "    timeout: 5s\n    response: {max_bytes: 300}\n", 1), erroringTracker)
	c, wire := e.connect("errors")

	res := servertest.CallTool(t, c, "issue_titles", map[string]any{"owner": "acme", "repo": "gone"})
	text := servertest.ResultText(res)
	if !res.IsError || !strings.Contains(text, "HTTP 404") || !strings.Contains(text, `"message":"Not Found"`) {
		t.Fatalf("a 404 of a projected tool = isError %v, %s; want a tool error with the status and the error body", res.IsError, text)
	}

	res = servertest.CallTool(t, c, "issue_titles", map[string]any{"owner": "acme", "repo": "broken"})
	text = servertest.ResultText(res)
	if !res.IsError || !strings.Contains(text, "HTTP 500") || !strings.Contains(text, "bad key") || len(text) > 4096+600 {
		t.Fatalf("a 500 of a projected tool = isError %v, %d bytes: %.300s; want a tool error with the body capped", res.IsError, len(text), text)
	}
	var view struct {
		Status    int  `json:"status"`
		Truncated bool `json:"truncated"`
	}
	raw, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(raw, &view); err != nil || view.Status != 500 || !view.Truncated {
		t.Fatalf("structured content = %s, want status 500, truncated", raw)
	}

	ok := servertest.CallTool(t, c, "issue_titles", map[string]any{"owner": "acme", "repo": "api"})
	if ok.IsError || !strings.Contains(servertest.ResultText(ok), `"number":1`) {
		t.Fatalf("a 200 of a projected tool = %s, want the projection", servertest.ResultText(ok))
	}

	// The generic tool's body is cut at 300 bytes: content-length says 300.
	cut := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	var shown struct {
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	}
	raw, _ = json.Marshal(cut.StructuredContent)
	if err := json.Unmarshal(raw, &shown); err != nil || shown.Headers["content-length"] != strconv.Itoa(len(shown.Body)) {
		t.Fatalf("content-length %q for a body of %d bytes the agent received (%v)", shown.Headers["content-length"], len(shown.Body), err)
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
}
