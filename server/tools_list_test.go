package server

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

const optionsConfig = baseConfig + `  preflight:
    grants:
      - {tool: github, methods: [OPTIONS, GET], paths: [/repos/acme/api/issues]}
`

// TestToolsListNarrowsMethodToTheGrant: a generic http tool's schema in
// tools/list offers only the methods the session's scope grants on it.
func TestToolsListNarrowsMethodToTheGrant(t *testing.T) {
	e := newEnv(t, optionsConfig)
	for scope, want := range map[string][]string{"triage": {"GET", "POST"}, "tiny": {"GET"}, "preflight": {"GET", "OPTIONS"}} {
		// One stdio session at a time: each ends with its subtest.
		t.Run(scope, func(t *testing.T) {
			c, _ := e.connectFor(t, scope)
			list, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, tool := range list.Tools {
				if tool.Name != "github" {
					continue
				}
				var schema struct {
					Properties struct {
						Method struct {
							Enum []string `json:"enum"`
						} `json:"method"`
					} `json:"properties"`
				}
				raw, _ := json.Marshal(tool.InputSchema)
				if len(tool.RawInputSchema) > 0 {
					raw = tool.RawInputSchema
				}
				if err := json.Unmarshal(raw, &schema); err != nil || !slices.Equal(schema.Properties.Method.Enum, want) {
					t.Errorf("scope %s: github's method enum = %v (%v), want %v", scope, schema.Properties.Method.Enum, err, want)
				}
			}
		})
	}
}

// TestOptionsIsAllowedInPolicyArgumentsAndSchemaAlike: a grant of OPTIONS
// can be called: the arguments accept it and the upstream receives it.
func TestOptionsIsAllowedInPolicyArgumentsAndSchemaAlike(t *testing.T) {
	e := newEnv(t, optionsConfig)
	c, _ := e.connect("preflight")
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "OPTIONS", "path": "/repos/acme/api/issues"})
	if res.IsError {
		t.Fatalf("OPTIONS under an OPTIONS grant = %s, want it allowed", servertest.ResultText(res))
	}
	reqs := e.up.Requests()
	if len(reqs) != 1 || reqs[0].Method != "OPTIONS" {
		t.Fatalf("upstream received %+v, want one OPTIONS", reqs)
	}
	res = servertest.CallTool(t, c, "github", map[string]any{"method": "OPTIONS", "path": "/repos/acme/api/issues/1"})
	if !res.IsError || len(e.up.Requests()) != 1 {
		t.Fatalf("OPTIONS outside the grant = %s, want denied", servertest.ResultText(res))
	}
}
