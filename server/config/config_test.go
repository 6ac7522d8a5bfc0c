package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/tools"
)

// TestConfigFixtures loads every fixture in testdata/config and asserts
// the exact problems reported: position, key path and message.
func TestConfigFixtures(t *testing.T) {
	cases := map[string][]string{
		"valid.yaml":           nil,
		"unknown_key.yaml":     {"7:5: tools.github.retries: unknown key"},
		"wrong_type.yaml":      {"5:16: scopes.triage.max_calls: expected integer, but got string"},
		"bad_duration.yaml":    {`9:10: scopes.triage.ttl: "one hour" is not a duration; write a number and a unit, e.g. 30s, 15m, 1h or 7d`},
		"missing_tool.yaml":    {"11:16: scopes.triage.grants[1].tool: "},
		"broad_write.yaml":     {"12:17: scopes.triage.grants[0].paths[0]: "},
		"template_param.yaml":  {"tools.issues.path: "},
		"bad_secret_name.yaml": {"tools.github.credential.secret: "},
		"bad_rate.yaml":        {`9:11: scopes.triage.rate: "fast" is not a rate; write N/s, N/m or N/h`},
		"rate_words.yaml":      {`9:11: scopes.triage.rate: "5/sec" is not a rate; write N/s, N/m or N/h`},
		// One misspelling is one problem: no "missing credential", no
		// problem of the credential's secret.
		"misspelled_key.yaml":       {"6:5: tools.github.credentail: unknown key; did you mean credential?"},
		"misspelled_scope_key.yaml": {"10:5: scopes.triage.grnats: unknown key; did you mean grants?"},
		// A timeout of a day is too long for a tool; the days themselves parse.
		"days.yaml":          {"7:14: tools.github.timeout: must be at most 5m"},
		"many_problems.yaml": {"7:5: tools.github.colour: unknown key", "11:16: scopes.triage.grants[0].tool: tool \"nope\" is not defined"},
		"syntax.yaml":        {"keyhole.yaml"},
		"duplicate_key.yaml": {"4:1: "},
		"minted.yaml":        nil,
		"minted_bad.yaml": {
			"9:92: tools.slack.credential.oauth2.refresh: unknown key",
			"16:28: tools.github.credential.github_app.app_id: expected integer, but got string",
		},
		"minted_semantic.yaml": {
			"tools.slack.credential.oauth2.auth_url: is required with flow: authorization_code",
			"tools.slack.credential.oauth2.token_url: http is allowed only with allow_private_network",
		},
		"approval.yaml": nil,
		"bad_approval.yaml": {
			"9:14: scopes.triage.on_deny: ",
			"13:7: scopes.triage.approval.retries: unknown key",
			"11:13: scopes.triage.approval.wait: \"1h\" must be between 0 (answer at once) and 10m",
			"12:16: scopes.triage.approval.webhook: plain http is allowed only to a loopback host",
			"scopes.triage.approval.webhook_secret: required with webhook",
			"15:62: scopes.triage.grants[0].approve: expected boolean",
		},
	}
	for file, want := range cases {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join("testdata", "config", file)
			_, err := Load(path, tools.Env{})
			if want == nil {
				if err != nil {
					t.Fatalf("Load(%s) = %v, want no error", file, err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load(%s) = %v, want a *Error", file, err)
			}
			got := ce.Error()
			if file == "syntax.yaml" {
				want = []string{path + ":"}
			}
			for _, w := range want {
				if !strings.Contains(got, w) {
					t.Errorf("Load(%s) problems:\n%s\nwant one containing %q", file, got, w)
				}
			}
			if len(ce.Problems) != len(want) {
				t.Errorf("Load(%s) reported %d problems, want %d:\n%s", file, len(ce.Problems), len(want), got)
			}
			for _, line := range strings.Split(got, "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Errorf("problem %q does not start with the file name", line)
				}
			}
		})
	}
}

func TestStarterConfigIsValid(t *testing.T) {
	if _, err := Parse("starter.yaml", Starter, tools.Env{}); err != nil {
		t.Fatalf("the config keyhole init writes does not load: %v", err)
	}
}

// FuzzLoadConfig feeds arbitrary bytes to the config loader: it must
// return a config or an error, never panic.
func FuzzLoadConfig(f *testing.F) {
	entries, _ := os.ReadDir(filepath.Join("testdata", "config"))
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join("testdata", "config", e.Name()))
		f.Add(b)
	}
	f.Add(Starter)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, tools.Env{})
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", cfg != nil, err)
		}
	})
}

// TestDurationsAcceptDays: every duration of keyhole.yaml takes days.
func TestDurationsAcceptDays(t *testing.T) {
	text := `version: 1
tools:
  github:
    kind: http
    base_url: https://api.github.com
    credential: {secret: github_token, inject: bearer}
    timeout: 0.002d
scopes:
  week:
    ttl: 7d
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues/*]}
  longer:
    ttl: 1d12h
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues/*]}
audit:
  retention: 90d
`
	cfg, err := Parse("days.yaml", []byte(text), tools.Env{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for scope, want := range map[string]time.Duration{"week": 7 * 24 * time.Hour, "longer": 36 * time.Hour} {
		sc, _ := cfg.Policy.Scope(scope)
		if sc.TTL() != want {
			t.Errorf("scope %s ttl = %v, want %v", scope, sc.TTL(), want)
		}
	}
	if cfg.Retention != 90*24*time.Hour {
		t.Errorf("retention = %v, want 90 days", cfg.Retention)
	}
}
