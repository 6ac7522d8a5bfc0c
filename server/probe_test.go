package server

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/tools/scrub/scrubtest"
)

// echoAnything answers as httpbin's /anything does: the request's query,
// headers and URL as JSON, credentials included.
func echoAnything(w http.ResponseWriter, r *http.Request) {
	args := map[string]string{}
	for k, vs := range r.URL.Query() {
		args[k] = vs[0]
	}
	hdr := map[string]string{}
	for k, vs := range r.Header {
		hdr[k] = strings.Join(vs, ",")
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"args": args, "headers": hdr, "url": "http://" + r.Host + r.URL.RequestURI()})
}

const s3AccessKeyID = "AKIAIOSFODNN7EXAMPLE"

const probeConfig = `version: 1
tools:
  echo:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
    response: {max_bytes: 240}
  echo_fields:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
    response: {max_bytes: 240, fields: [headers.Authorization, args.pad, args.q, url]}
  archive:
    kind: s3
    bucket: acme-archive
    region: us-east-1
    endpoint: %UPSTREAM%
    path_style: true
    allow_private_network: true
    credential: {secret: aws_archive_ro, inject: aws_sigv4}
scopes:
  cut:
    max_denials: 0
    grants:
      - {tool: echo, methods: [GET], paths: [/anything, /anything/*]}
      - {tool: echo_fields, methods: [GET], paths: [/anything, /anything/*]}
  probe:
    grants:
      - {tool: echo, methods: [GET, POST], paths: [/anything, /anything/*]}
      - {tool: echo_fields, methods: [GET], paths: [/anything, /anything/*]}
  archive:
    grants:
      - {tool: archive, actions: [list, get, head], prefixes: [reports]}
`

func newProbeEnv(t *testing.T) *env {
	e := newEnvWith(t, probeConfig, echoAnything)
	secret, _ := json.Marshal(map[string]string{"access_key_id": s3AccessKeyID, "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
	if err := e.vault.Set("aws_archive_ro", secret, "test"); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestInvariant9_TheTwoStepAttackRecoversAtMostSevenCharacters is issue
// 14's attack through the real MCP server. Step one pads a query so that
// response.max_bytes cuts the echoed Authorization header at every
// position (with the whole body and with response.fields): the agent
// reads at most seven characters of the token in a row, in any view a
// client decodes. Step two sends guesses of the next character: a wrong
// one is echoed back unchanged, the right one (eight characters of the
// token) is refused before it goes upstream and ends the session at once,
// with its own code.
func TestInvariant9_TheTwoStepAttackRecoversAtMostSevenCharacters(t *testing.T) {
	e := newProbeEnv(t)
	for _, tool := range []string{"echo", "echo_fields"} {
		t.Run("cut/"+tool, func(t *testing.T) {
			c, wire := e.connectFor(t, "cut")
			for pad := 0; pad < 240; pad++ {
				res := servertest.CallTool(t, c, tool, map[string]any{"method": "GET", "path": "/anything", "query": map[string]any{"pad": strings.Repeat("a", pad)}})
				if res.IsError {
					t.Fatalf("pad %d: %s", pad, servertest.ResultText(res))
				}
			}
			if n, view := scrubtest.Exposed([]byte(testSecret), wire.Bytes()); n > 7 {
				t.Fatalf("the agent read %d characters of the token in a row (%s view) over 240 cuts, want at most 7", n, view)
			}
		})
	}
	known := testSecret[:7]
	for _, tool := range []string{"echo", "echo_fields"} {
		t.Run("oracle/"+tool, func(t *testing.T) {
			c, wire := e.connectFor(t, "probe")
			before := len(e.up.Requests())
			tripped := false
			for _, ch := range "ABCabc0189_" + string(testSecret[7]) {
				guess := known + string(ch)
				res := servertest.CallTool(t, c, tool, map[string]any{"method": "GET", "path": "/anything", "query": map[string]any{"q": guess}})
				text := servertest.ResultText(res)
				if tripped {
					if !res.IsError || !strings.Contains(text, "ask the user for a new session") {
						t.Fatalf("a call after the trip = %s, want the ended session named", text)
					}
					continue
				}
				if guess == testSecret[:8] {
					if !res.IsError || !strings.Contains(text, "carried a credential") {
						t.Fatalf("the right guess = %s, want it refused and the session ended", text)
					}
					tripped = true
					continue
				}
				if res.IsError || !strings.Contains(text, guess) {
					t.Fatalf("wrong guess %q = %s, want it echoed back unchanged", guess, text)
				}
			}
			if !tripped {
				t.Fatal("the right guess did not end the session")
			}
			for _, r := range e.up.Requests()[before:] {
				if strings.Contains(r.Query, testSecret[:8]) {
					t.Fatalf("the upstream received the right guess: %s", r.Query)
				}
			}
			if n, view := scrubtest.Exposed([]byte(testSecret), wire.Bytes()); n > 7 {
				t.Fatalf("the agent read %d characters of the token in a row (%s view), want at most the 7 it knew", n, view)
			}
			last := e.records()[len(e.records())-1]
			if last.Code != policy.CodeSecretInArguments || strings.Contains(string(last.Args), testSecret[:8]) {
				t.Fatalf("the trip's record = code %q args %s, want %s and the guess scrubbed", last.Code, last.Args, policy.CodeSecretInArguments)
			}
		})
	}
}

// TestInvariant9_ArgumentsCarryingASecretEndTheSession: any form of a
// credential, or eight characters of one, anywhere in the arguments of a
// call to any tool of the scope, is refused before anything goes upstream
// and ends the session; a shorter overlap is an ordinary call.
func TestInvariant9_ArgumentsCarryingASecretEndTheSession(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte(testSecret))
	hexed := fmt.Sprintf("%x", testSecret)
	cases := []struct {
		name, scope, tool string
		args              map[string]any
		trips             bool
	}{
		{"raw in the query", "probe", "echo", map[string]any{"method": "GET", "path": "/anything", "query": map[string]any{"q": testSecret}}, true},
		{"eight characters in the path", "probe", "echo", map[string]any{"method": "GET", "path": "/anything/" + testSecret[10:18]}, true},
		{"percent-encoded in the path", "probe", "echo", map[string]any{"method": "GET", "path": "/anything/%" + fmt.Sprintf("%x", testSecret[0]) + testSecret[1:12]}, true},
		{"base64 in a body", "probe", "echo", map[string]any{"method": "POST", "path": "/anything", "body": b64}, true},
		{"hex in a header", "probe", "echo", map[string]any{"method": "GET", "path": "/anything", "headers": map[string]any{"X-Note": hexed}}, true},
		{"in an argument the schema refuses", "probe", "echo", map[string]any{"method": "GET", "path": "/anything", "url": testSecret}, true},
		{"in a path no grant allows", "probe", "echo", map[string]any{"method": "GET", "path": "/admin/" + testSecret}, true},
		{"s3 key carrying the access key id", "archive", "archive", map[string]any{"action": "get", "key": "reports/" + s3AccessKeyID}, true},
		{"s3 prefix carrying eight of its characters", "archive", "archive", map[string]any{"action": "list", "prefix": "reports/" + s3AccessKeyID[4:12] + "/"}, true},
		{"s3 continuation token carrying it in base64", "archive", "archive", map[string]any{"action": "list", "prefix": "reports/", "continuation_token": base64.StdEncoding.EncodeToString([]byte(s3AccessKeyID))}, true},
		{"s3 key with seven of its characters", "archive", "archive", map[string]any{"action": "head", "key": "reports/" + s3AccessKeyID[:7] + ".csv"}, false},
		{"seven characters of the token", "probe", "echo", map[string]any{"method": "GET", "path": "/anything", "query": map[string]any{"q": testSecret[:7]}}, false},
	}
	e := newProbeEnv(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, wire := e.connectFor(t, tc.scope)
			before := len(e.up.Requests())
			res := servertest.CallTool(t, c, tc.tool, tc.args)
			text := servertest.ResultText(res)
			sent := len(e.up.Requests()) - before
			if !tc.trips {
				if strings.Contains(text, "carried a credential") || sent == 0 {
					t.Fatalf("= %s (upstream got %d), want an ordinary call", text, sent)
				}
				return
			}
			if !res.IsError || !strings.Contains(text, "carried a credential") || sent != 0 {
				t.Fatalf("= %s (upstream got %d), want it refused before the upstream", text, sent)
			}
			nextArgs := map[string]any{"method": "GET", "path": "/anything"}
			if tc.tool == "archive" {
				nextArgs = map[string]any{"action": "list", "prefix": "reports/"}
			}
			next := servertest.CallTool(t, c, tc.tool, nextArgs)
			if !next.IsError || !strings.Contains(servertest.ResultText(next), "ask the user for a new session") || len(e.up.Requests()) != before {
				t.Fatalf("the next call = %s, want the session over", servertest.ResultText(next))
			}
			recs := e.records()
			trip := recs[len(recs)-2]
			if trip.Code != policy.CodeSecretInArguments {
				t.Fatalf("the trip's record has code %q, want %s", trip.Code, policy.CodeSecretInArguments)
			}
			raw, _ := json.Marshal(trip)
			assertNoSecret(t, "the trip's record", raw)
			assertNoSecret(t, "bytes the agent received", wire.Bytes())
		})
	}
}
