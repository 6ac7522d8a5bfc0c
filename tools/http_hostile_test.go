package tools

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// TestHTTPHostileArguments covers invariant 3 (the agent cannot choose where
// a credential goes) and invariant 8 (bad input changes nothing): every
// hostile input of THREATS.md is refused by Prepare with an *ArgError that
// echoes neither the value nor the secret, and the upstream receives
// nothing. The few inputs that are legitimately allowed as opaque bytes
// are sent, and the test asserts exactly what the upstream received.
func TestHTTPHostileArguments(t *testing.T) {
	up := servertest.NewUpstream(t, nil)
	generic := compileTest(t, Config{
		BaseURL:    up.URL + "/base",
		Credential: Credential{Inject: "query", Param: "api_key"},
	})
	headerTool := compileTest(t, Config{
		BaseURL:    up.URL,
		Credential: Credential{Inject: "header", Header: "X-Api-Key"},
	})
	templated := compileTest(t, Config{
		BaseURL: up.URL,
		Method:  "GET",
		Path:    "/repos/{owner}/issues",
		InputSchema: map[string]any{
			"type":       "object",
			"properties": map[string]any{"owner": map[string]any{"type": []any{"string", "number", "boolean"}}},
		},
	})

	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	many := `{"method":"GET","path":"/x","query":{` + manyParams(10000) + `}}`
	huge := `{"method":"POST","path":"/x","body":"` + strings.Repeat("A", 10<<20) + `"}`

	tests := []struct {
		name string
		tool *httpTool
		args string
		// sent is the request URI the upstream must receive; "" means the
		// call must be refused.
		sent string
	}{
		// Path traversal.
		{"traversal relative", generic, `{"method":"GET","path":"../../admin"}`, ""},
		{"traversal absolute", generic, `{"method":"GET","path":"/a/../../admin"}`, ""},
		{"traversal encoded slash", generic, `{"method":"GET","path":"/a/..%2f..%2fadmin"}`, ""},
		{"traversal encoded dots", generic, `{"method":"GET","path":"/%2e%2e/admin"}`, ""},
		{"traversal encoded dots upper", generic, `{"method":"GET","path":"/a/%2E%2E/admin"}`, ""},
		{"traversal dot", generic, `{"method":"GET","path":"/a/./admin"}`, ""},
		{"tomcat dotdot semicolon", generic, `{"method":"GET","path":"/..;/admin"}`, ""},
		{"tomcat inner dotdot semicolon", generic, `{"method":"GET","path":"/a/..;/admin"}`, ""},
		{"tomcat dot semicolon", generic, `{"method":"GET","path":"/.;/admin"}`, ""},
		{"backslash traversal", generic, `{"method":"GET","path":"/a\\..\\admin"}`, ""},
		{"encoded backslash", generic, `{"method":"GET","path":"/a/%5c../admin"}`, ""},
		{"encoded slash", generic, `{"method":"GET","path":"/a%2fb"}`, ""},
		{"overlong dot", generic, `{"method":"GET","path":"/%c0%ae%c0%ae/admin"}`, ""},
		{"empty segment", generic, `{"method":"GET","path":"/a//admin"}`, ""},
		{"trailing slash", generic, `{"method":"GET","path":"/a/"}`, ""},
		{"malformed escape", generic, `{"method":"GET","path":"/a%zz"}`, ""},
		{"truncated escape", generic, `{"method":"GET","path":"/a%4"}`, ""},
		{"double encoded dots are opaque", generic, `{"method":"GET","path":"/%252e%252e/admin"}`, "/base/%252e%252e/admin?api_key=" + testToken},
		{"full-width dots are opaque", generic, `{"method":"GET","path":"/．．／admin"}`, "/base/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin?api_key=" + testToken},
		// Not origin-form.
		{"scheme relative", generic, `{"method":"GET","path":"//evil.com/x"}`, ""},
		{"absolute URL", generic, `{"method":"GET","path":"http://evil.com"}`, ""},
		{"userinfo", generic, `{"method":"GET","path":"@evil.com"}`, ""},
		{"host and port", generic, `{"method":"GET","path":"evil.com:443/x"}`, ""},
		{"backslash host", generic, `{"method":"GET","path":"\\\\evil.com"}`, ""},
		{"slash backslash host", generic, `{"method":"GET","path":"/\\evil.com"}`, ""},
		{"empty path", generic, `{"method":"GET","path":""}`, ""},
		{"query in path", generic, `{"method":"GET","path":"/a?api_key=evil"}`, ""},
		{"fragment in path", generic, `{"method":"GET","path":"/a#evil"}`, ""},
		// Control bytes.
		{"CRLF in path", generic, `{"method":"GET","path":"/a\r\nX-Inj: 1"}`, ""},
		{"encoded CRLF in path", generic, `{"method":"GET","path":"/a%0d%0aX-Inj:%201"}`, ""},
		{"NUL in path", generic, `{"method":"GET","path":"/a%00b"}`, ""},
		{"CRLF in query key", generic, `{"method":"GET","path":"/x","query":{"a\r\nX-Inj":"1"}}`, ""},
		{"LF in query value", generic, `{"method":"GET","path":"/x","query":{"a":"v\nX-Inj: 1"}}`, ""},
		{"CRLF in header name", generic, `{"method":"GET","path":"/x","headers":{"X-A\r\nX-Inj":"1"}}`, ""},
		{"CRLF in header value", generic, `{"method":"GET","path":"/x","headers":{"X-A":"v\r\nX-Inj: 1"}}`, ""},
		{"NUL in header value", generic, `{"method":"GET","path":"/x","headers":{"X-A":"v\u0000"}}`, ""},
		// Headers the agent may not set.
		{"Authorization", generic, `{"method":"GET","path":"/x","headers":{"Authorization":"Bearer evil"}}`, ""},
		{"authorization lower case", generic, `{"method":"GET","path":"/x","headers":{"authorization":"Bearer evil"}}`, ""},
		{"Proxy-Authorization", generic, `{"method":"GET","path":"/x","headers":{"Proxy-Authorization":"Basic evil"}}`, ""},
		{"Proxy-Connection", generic, `{"method":"GET","path":"/x","headers":{"proxy-connection":"keep-alive"}}`, ""},
		{"Cookie", generic, `{"method":"GET","path":"/x","headers":{"Cookie":"session=evil"}}`, ""},
		{"Host", generic, `{"method":"GET","path":"/x","headers":{"HOST":"evil.com"}}`, ""},
		{"Connection", generic, `{"method":"GET","path":"/x","headers":{"Connection":"X-Api-Key"}}`, ""},
		{"Keep-Alive", generic, `{"method":"GET","path":"/x","headers":{"Keep-Alive":"timeout=5"}}`, ""},
		{"Transfer-Encoding", generic, `{"method":"POST","path":"/x","headers":{"Transfer-Encoding":"chunked"},"body":"x"}`, ""},
		{"Content-Length", generic, `{"method":"POST","path":"/x","headers":{"content-length":"0"},"body":"x"}`, ""},
		{"TE", generic, `{"method":"GET","path":"/x","headers":{"TE":"trailers"}}`, ""},
		{"Trailer", generic, `{"method":"GET","path":"/x","headers":{"Trailer":"X-Api-Key"}}`, ""},
		{"Upgrade", generic, `{"method":"GET","path":"/x","headers":{"Upgrade":"websocket"}}`, ""},
		{"Accept-Encoding", generic, `{"method":"GET","path":"/x","headers":{"Accept-Encoding":"gzip"}}`, ""},
		{"injection header", headerTool, `{"method":"GET","path":"/x","headers":{"X-Api-Key":"evil"}}`, ""},
		{"injection header other case", headerTool, `{"method":"GET","path":"/x","headers":{"x-API-key":"evil"}}`, ""},
		{"header twice in two cases", generic, `{"method":"GET","path":"/x","headers":{"X-A":"1","x-a":"2"}}`, ""},
		{"33 headers", generic, `{"method":"GET","path":"/x","headers":{` + manyParams(33) + `}}`, ""},
		// Method tricks.
		{"lower-case method", generic, `{"method":"get","path":"/x"}`, ""},
		{"method with trailing space", generic, `{"method":"GET ","path":"/x"}`, ""},
		{"CONNECT", generic, `{"method":"CONNECT","path":"/x"}`, ""},
		{"TRACE", generic, `{"method":"TRACE","path":"/x"}`, ""},
		{"empty method", generic, `{"method":"","path":"/x"}`, ""},
		{"body on GET", generic, `{"method":"GET","path":"/x","body":"evil"}`, ""},
		// Query tricks.
		{"credential shadowing", generic, `{"method":"GET","path":"/x","query":{"api_key":"evil"}}`, ""},
		{"credential shadowing other case", generic, `{"method":"GET","path":"/x","query":{"API_Key":"evil"}}`, ""},
		{"10000 parameters", generic, many, ""},
		{"bad escape in value is opaque", generic, `{"method":"GET","path":"/x","query":{"a":"%x"}}`, "/base/x?a=%25x&api_key=" + testToken},
		{"semicolon separator is opaque", generic, `{"method":"GET","path":"/x","query":{"a;api_key":"evil"}}`, "/base/x?a%3Bapi_key=evil&api_key=" + testToken},
		// Template parameters.
		{"template traversal", templated, `{"owner":"acme/../../admin"}`, ""},
		{"template dotdot", templated, `{"owner":".."}`, ""},
		{"template dot", templated, `{"owner":"."}`, ""},
		{"template empty", templated, `{"owner":""}`, ""},
		{"template backslash", templated, `{"owner":"a\\b"}`, ""},
		{"template newline", templated, `{"owner":"a\nX-Inj: 1"}`, ""},
		{"template boolean", templated, `{"owner":true}`, ""},
		{"template missing", templated, `{}`, ""},
		{"template encoded slash is opaque", templated, `{"owner":"a%2fb"}`, "/repos/a%252fb/issues"},
		// Size and shape.
		{"10 MiB string", generic, huge, ""},
		{"nested 10000 deep", generic, deep, ""},
		{"nested object 10000 deep", generic, strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000), ""},
		{"duplicate keys", generic, `{"method":"GET","path":"/x","method":"DELETE"}`, ""},
		{"duplicate nested keys", generic, `{"method":"GET","path":"/x","query":{"a":"1","a":"2"}}`, ""},
		{"key differing by case", generic, `{"method":"GET","path":"/x","Path":"/admin"}`, ""},
		{"key with long s", generic, `{"method":"GET","path":"/x","query":{},"ſ":"evil"}`, ""},
		{"key with kelvin sign", generic, `{"method":"GET","\u212aey":"x","path":"/x"}`, ""},
		{"not an object", generic, `["GET","/x"]`, ""},
		{"trailing data", generic, `{"method":"GET","path":"/x"} {"path":"/admin"}`, ""},
		{"invalid JSON", generic, `{"method":"GET","path":"/x"`, ""},
	}
	if len(tests) < 40 {
		t.Fatalf("hostile table has %d cases, want at least 40", len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.Requests())
			call, err := tc.tool.Prepare([]byte(tc.args))
			if tc.sent == "" {
				var ae *ArgError
				if !errors.As(err, &ae) {
					t.Fatalf("Prepare(%.80q) = %v, want *ArgError", tc.args, err)
				}
				msg := ae.Error()
				if strings.ContainsAny(msg, "\r\n\x00") || strings.Contains(msg, "X-Inj") || strings.Contains(msg, "evil") {
					t.Fatalf("Prepare(%.80q) error echoes the input: %q", tc.args, msg)
				}
				servertest.AssertNoSecret(t, "ArgError", msg, testToken)
				if got := len(up.Requests()); got != before {
					t.Fatalf("upstream received %d requests, want none", got-before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare(%.80q) = %v, want accepted as opaque", tc.args, err)
			}
			res, err := tc.tool.Execute(context.Background(), call, []byte(testToken), execEnv(tc.tool, []byte(testToken)))
			if err != nil {
				t.Fatalf("Execute(%.80q) = %v", tc.args, err)
			}
			servertest.AssertNoSecret(t, "result", agentView(t, res), testToken)
			got := up.Requests()
			if len(got) != before+1 {
				t.Fatalf("upstream received %d requests, want 1", len(got)-before)
			}
			if uri := got[before].RequestURI; uri != tc.sent {
				t.Fatalf("upstream received %q, want %q", uri, tc.sent)
			}
		})
	}
}

// manyParams renders n distinct JSON object members "pN":"v".
func manyParams(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"p`)
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`":"v"`)
	}
	return b.String()
}
