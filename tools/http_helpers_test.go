package tools

import (
	"encoding/json"
	"testing"
)

// testToken is the secret the http tests inject; it must never reach the agent.
const testToken = "khtest-S3cr3tT0ken-0123456789abcdef"

// compileTest compiles an http tool named "api" that may reach loopback.
func compileTest(t testing.TB, cfg Config) *httpTool {
	t.Helper()
	cfg.Kind = "http"
	cfg.AllowPrivateNetwork = true
	if cfg.Credential.Secret == "" {
		cfg.Credential.Secret = "api_token"
	}
	if cfg.Credential.Inject == "" {
		cfg.Credential.Inject = "bearer"
	}
	tool, errs := Compile("api", cfg, Env{})
	if len(errs) > 0 {
		t.Fatalf("Compile(%+v) errors: %v", cfg, errs)
	}
	return tool.(*httpTool)
}

// agentView is every byte of a result the agent may receive.
func agentView(t testing.TB, res *Result) string {
	t.Helper()
	js, err := json.Marshal(res.Structured)
	if err != nil {
		t.Fatalf("marshal Structured: %v", err)
	}
	return string(js) + "\n" + res.Text
}

// argsJSON marshals arguments for Prepare.
func argsJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal args: %v", err)
	}
	return b
}

// execEnv is the CallEnv a broker passes, with no redirect authorized.
func execEnv(tool Tool, secret []byte) CallEnv {
	return CallEnv{Scrubber: tool.Scrubber(secret)}
}
