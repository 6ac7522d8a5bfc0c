package tools

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/tools/scrub"
	"github.com/keyhole-dev/keyhole/tools/scrub/scrubtest"
)

// attackToken is shaped like the 33-character bearer token of the red-team
// finding (issue 14, item 1).
const attackToken = "SKtokA1b2C3d4E5f6G7h8I9j0KlMnOpqR"

// echoUpstream answers every request as httpbin's /anything does: a JSON
// object of its query, request headers and URL. last holds the body of the
// latest answer, so a test knows where max_bytes cut it.
type echoUpstream struct {
	*servertest.Upstream
	mu   sync.Mutex
	last []byte
}

func newEchoUpstream(t *testing.T) *echoUpstream {
	e := &echoUpstream{}
	e.Upstream = servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		args := map[string]string{}
		for k, vs := range r.URL.Query() {
			args[k] = vs[0]
		}
		hdr := map[string]string{}
		for k, vs := range r.Header {
			hdr[k] = strings.Join(vs, ",")
		}
		body, _ := json.Marshal(map[string]any{"args": args, "headers": hdr, "url": "http://" + r.Host + r.URL.RequestURI()})
		e.mu.Lock()
		e.last = body
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	return e
}

func (e *echoUpstream) lastBody() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// agentFrame is the JSON-RPC frame that carries res to an MCP client, as
// server/mcp.go builds it.
func agentFrame(t testing.TB, res *Result) []byte {
	t.Helper()
	frame, err := json.Marshal(mcp.JSONRPCResponse{JSONRPC: "2.0", ID: mcp.NewRequestId(1), Result: mcp.NewToolResultStructured(res.Structured, res.Text)})
	if err != nil {
		t.Fatalf("marshal frame: %v", err)
	}
	return frame
}

// assertValidResult fails unless every byte the agent would receive of res
// is valid UTF-8 and valid JSON: the structured content, the text and the
// frame carrying both (issue 22, item 4).
func assertValidResult(t testing.TB, what string, res *Result) {
	t.Helper()
	js, err := json.Marshal(res.Structured)
	if err != nil || !utf8.Valid(js) || !json.Valid(js) {
		t.Fatalf("%s: structured content %q is not valid UTF-8 JSON (%v)", what, js, err)
	}
	if !utf8.ValidString(res.Text) {
		t.Fatalf("%s: text %q is not valid UTF-8", what, res.Text)
	}
	if frame := agentFrame(t, res); !utf8.Valid(frame) || !json.Valid(frame) {
		t.Fatalf("%s: frame %q is not valid UTF-8 JSON", what, frame)
	}
}

// assertExposesAtMost fails if a client reading any byte of res, in any
// decoded view, could read more than max characters of secret in a row.
func assertExposesAtMost(t testing.TB, what string, res *Result, secret string, max int) int {
	t.Helper()
	n, view := scrubtest.Exposed([]byte(secret), []byte(agentView(t, res)))
	if n > max {
		t.Fatalf("%s: the agent can read %d characters of the secret in a row (view %s), want at most %d:\n%s", what, n, view, max, agentView(t, res))
	}
	return n
}

// TestHTTPCutAttackInvariant9 is invariant 9 against the two-step attack of
// issue 14, item 1, step one: an agent with one granted GET on an endpoint
// that echoes request headers pads a query parameter so that
// response.max_bytes cuts the body at every byte of the echoed
// Authorization value in turn. Whatever the padding, no response lets it
// read more than seven characters of the token (scrubbing runs before the
// cut), with the whole body or with response.fields.
func TestHTTPCutAttackInvariant9(t *testing.T) {
	up := newEchoUpstream(t)
	const maxBytes = 240
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"whole body", nil},
		{"response.fields", []string{"headers.Authorization", "args.pad", "url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := compileTest(t, Config{BaseURL: up.URL, Response: Response{MaxBytes: maxBytes, Fields: tc.fields}})
			sc := tool.Scrubber([]byte(attackToken))
			cutInside, worst := 0, 0
			for pad := 0; pad < maxBytes; pad++ {
				args := argsJSON(t, map[string]any{"method": "GET", "path": "/anything", "query": map[string]string{"pad": strings.Repeat("a", pad)}})
				call, err := tool.Prepare(args)
				if err != nil {
					t.Fatalf("Prepare(pad %d) = %v", pad, err)
				}
				if ArgsCarrySecret(sc, args) || call.CarriesSecret(sc) {
					t.Fatalf("padding of %d is taken for a credential", pad)
				}
				res, err := tool.Execute(context.Background(), call, []byte(attackToken), CallEnv{Scrubber: sc})
				if err != nil {
					t.Fatalf("Execute(pad %d) = %v", pad, err)
				}
				if i := bytes.Index(up.lastBody(), []byte(attackToken)); i >= 0 && i < maxBytes && maxBytes < i+len(attackToken) {
					cutInside++
				}
				assertValidResult(t, fmt.Sprintf("pad %d", pad), res)
				worst = max(worst, assertExposesAtMost(t, fmt.Sprintf("pad %d", pad), res, attackToken, 7))
			}
			if cutInside < len(attackToken)-1 {
				t.Fatalf("max_bytes fell inside the echoed token for %d paddings, want every one of its %d inner positions: the test does not test the attack", cutInside, len(attackToken)-1)
			}
			// Matching parts alone would leave up to seven characters before
			// the cut; scrubbing before the cut leaves none beyond chance.
			if worst > 3 {
				t.Fatalf("the agent could read %d characters of the token in a row at some cut, want none beyond chance (3): the body was cut before it was scrubbed", worst)
			}
			t.Logf("%d paddings put the cut inside the token; the agent could read at most %d characters of it in a row", cutInside, worst)
		})
	}
}

// TestHTTPGuessOracleInvariant9 is step two of the attack: knowing (at best)
// seven characters, the agent sends each candidate for the eighth and
// watches whether the echo comes back redacted. Every candidate that is a
// part of the token is refused before anything goes upstream (the server
// then ends the session), in whichever argument and encoding it is sent;
// every wrong one is sent and echoed back unchanged, so the response
// teaches nothing.
func TestHTTPGuessOracleInvariant9(t *testing.T) {
	up := newEchoUpstream(t)
	plain := compileTest(t, Config{BaseURL: up.URL})
	fields := compileTest(t, Config{BaseURL: up.URL, Response: Response{Fields: []string{"args.q", "headers.X-Guess"}}})
	known := attackToken[1:8]
	right := attackToken[8]
	encodings := []struct {
		name string
		args func(guess string) map[string]any
	}{
		{"query", func(g string) map[string]any {
			return map[string]any{"method": "GET", "path": "/anything", "query": map[string]string{"q": g}}
		}},
		{"path", func(g string) map[string]any { return map[string]any{"method": "GET", "path": "/anything/" + g} }},
		{"percent-encoded path", func(g string) map[string]any {
			return map[string]any{"method": "GET", "path": "/anything/%" + hex.EncodeToString([]byte{g[0]}) + g[1:]}
		}},
		{"header", func(g string) map[string]any {
			return map[string]any{"method": "GET", "path": "/anything", "headers": map[string]string{"X-Guess": g}}
		}},
		{"body", func(g string) map[string]any {
			return map[string]any{"method": "POST", "path": "/anything", "body": map[string]string{"q": g}}
		}},
		{"base64 body", func(g string) map[string]any {
			// Eight base64 characters are six bytes: five known and the guess.
			return map[string]any{"method": "POST", "path": "/anything", "body": base64.StdEncoding.EncodeToString([]byte(g[2:]))}
		}},
	}
	for _, tool := range []*httpTool{plain, fields} {
		sc := tool.Scrubber([]byte(attackToken))
		for _, enc := range encodings {
			t.Run(fmt.Sprintf("fields=%v/%s", tool.fields != nil, enc.name), func(t *testing.T) {
				var refused []byte
				for _, c := range []byte("ABCabc0189" + string(right)) {
					guess := known + string(c)
					args := argsJSON(t, enc.args(guess))
					before := len(up.Requests())
					call, err := tool.Prepare(args)
					if err != nil {
						t.Fatalf("Prepare(%s) = %v", args, err)
					}
					if ArgsCarrySecret(sc, args) || call.CarriesSecret(sc) {
						refused = append(refused, c)
						continue // the server refuses the call and ends the session
					}
					res, err := tool.Execute(context.Background(), call, []byte(attackToken), CallEnv{Scrubber: sc})
					if err != nil {
						t.Fatalf("Execute(%s) = %v", args, err)
					}
					if got := len(up.Requests()) - before; got != 1 {
						t.Fatalf("upstream received %d requests for guess %q, want 1", got, guess)
					}
					assertExposesAtMost(t, "guess "+guess, res, attackToken, 7)
					if enc.name == "query" || enc.name == "header" {
						if !strings.Contains(agentView(t, res), guess) {
							t.Fatalf("wrong guess %q was not echoed back as sent:\n%s", guess, agentView(t, res))
						}
					}
				}
				if string(refused) != string(right) {
					t.Fatalf("refused guesses ending in %q, want exactly the right one %q", refused, right)
				}
			})
		}
	}
}

// TestS3GuessOracleInvariant9 is the oracle through an s3 key (issue 22,
// item 5): a key, prefix or continuation token that carries the access
// key id, or eight characters of it, is refused before the call is made.
func TestS3GuessOracleInvariant9(t *testing.T) {
	tool := compileS3Test(t, s3TestConfig("http://127.0.0.1:1"))
	sc := tool.Scrubber(testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken))
	tests := []struct {
		args string
		want bool
	}{
		{`{"action":"get","key":"reports/` + testAWSKeyID + `"}`, true},
		{`{"action":"get","key":"reports/` + testAWSKeyID[:8] + `.csv"}`, true},
		{`{"action":"head","key":"reports/` + testAWSSecretKey[10:18] + `"}`, true},
		{`{"action":"list","prefix":"reports/` + testAWSKeyID[4:12] + `/"}`, true},
		{`{"action":"list","prefix":"reports/","continuation_token":"` + base64.StdEncoding.EncodeToString([]byte(testAWSKeyID)) + `"}`, true},
		{`{"action":"get","key":"reports/` + testAWSKeyID[:7] + `.csv"}`, false},
		{`{"action":"list","prefix":"reports/2026/"}`, false},
	}
	for _, tc := range tests {
		call, err := tool.Prepare(json.RawMessage(tc.args))
		if err != nil {
			t.Fatalf("Prepare(%s) = %v", tc.args, err)
		}
		if got := ArgsCarrySecret(sc, []byte(tc.args)) || call.CarriesSecret(sc); got != tc.want {
			t.Fatalf("ArgsCarrySecret || CarriesSecret(%s) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestS3CutInvariant9 cuts an object that echoes the secret access key at
// every byte of it: what comes back holds nothing of it.
func TestS3CutInvariant9(t *testing.T) {
	const maxBytes = 64
	objects := map[string]s3TestObject{}
	for pad := 0; pad < maxBytes; pad++ {
		objects[fmt.Sprintf("dump/%02d.txt", pad)] = s3TestObject{body: []byte(strings.Repeat("x", pad) + "secret=" + testAWSSecretKey + " end"), contentType: "text/plain"}
	}
	_, srv := newS3Upstream(t, objects)
	cfg := s3TestConfig(srv.URL)
	cfg.Response.MaxBytes = maxBytes
	tool := compileS3Test(t, cfg)
	for pad := 0; pad < maxBytes; pad++ {
		res, err := executeS3(t, tool, fmt.Sprintf(`{"action":"get","key":"dump/%02d.txt"}`, pad), testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken))
		if err != nil {
			t.Fatalf("get dump/%02d.txt: %v", pad, err)
		}
		assertValidResult(t, fmt.Sprintf("pad %d", pad), res)
		// Scrubbed before the cut: nothing of the key beyond chance, not
		// even the seven characters a part match at the cut would leave.
		assertExposesAtMost(t, fmt.Sprintf("pad %d", pad), res, testAWSSecretKey, 3)
	}
}

// TestHTTPEncodedEchoesInvariant9 covers issue 14, item 2 through the http
// tool: an upstream echoes the token in forms a client decodes. The agent
// never gets eight characters of it in a row in any view, the body is
// withheld (with the reason) where a form cannot be cut out in place, and
// the result stays valid JSON.
func TestHTTPEncodedEchoesInvariant9(t *testing.T) {
	tok := attackToken
	b64 := base64.StdEncoding.EncodeToString([]byte("Authorization: Bearer " + tok + "\r\nAccept: */*\r\n"))
	every := func(s string, n int, format string) string {
		var b strings.Builder
		for i, r := range s {
			if i%n == 0 {
				fmt.Fprintf(&b, format, r)
			} else {
				b.WriteRune(r)
			}
		}
		return b.String()
	}
	tests := []struct {
		name, contentType, body string
		withheld                bool
	}{
		{"json first char escaped", "application/json", `{"token":"\u0053` + tok[1:] + `"}`, false},
		{"json every other char escaped", "application/json", `{"token":"` + every(tok, 2, `\u%04X`) + `"}`, true},
		{"json every char escaped", "application/json", `{"token":"` + every(tok, 1, `\u%04x`) + `"}`, false},
		{"percent single bytes", "text/plain", "token=" + every(tok, 2, "%%%02x"), true},
		{"percent every byte mixed case", "text/plain", "token=%53%4b%74%6F%6b" + every(tok[5:], 1, "%%%02X"), false},
		{"base64 at 76 CRLF", "text/plain", wrapAt(b64, 76, "\r\n"), false},
		{"base64 at 3 LF", "text/plain", wrapAt(b64, 3, "\n"), true},
		{"base64 in a JSON string at 5", "application/json", `{"blob":"` + wrapAt(b64, 5, `\n`) + `"}`, true},
		{"hex colons", "text/plain", "fp=" + hexJoin(tok, ":"), false},
		{"hex spaces upper", "text/plain", strings.ToUpper(hexJoin(tok, " ")), false},
		{"html references", "text/html", "<p>" + every(tok, 2, "&#%d;") + "</p>", true},
		{"utf16le", "text/plain; charset=utf-16le", "\xff\xfe" + utf16LE("token="+tok), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.Write([]byte(tc.body))
			})
			tool := compileTest(t, Config{BaseURL: up.URL})
			res, err := tool.Execute(context.Background(), mustPrepare(t, tool, `{"method":"GET","path":"/x"}`), []byte(tok), execEnv(tool, []byte(tok)))
			if err != nil {
				t.Fatalf("Execute = %v", err)
			}
			assertValidResult(t, tc.name, res)
			assertExposesAtMost(t, tc.name, res, tok, 7)
			if !res.Scrubbed {
				t.Fatalf("Result.Scrubbed = false for a body echoing the token")
			}
			v := res.Structured.(httpView)
			if res.Withheld != tc.withheld || v.Withheld != tc.withheld {
				t.Fatalf("Result.Withheld = %v (view %v), want %v:\n%s", res.Withheld, v.Withheld, tc.withheld, agentView(t, res))
			}
			if tc.withheld && (v.Body != nil || v.Note != scrub.WithheldNote || !strings.Contains(res.Text, scrub.WithheldNote)) {
				t.Fatalf("withheld body = %v, note %q; want null and %q in the result and its text", v.Body, v.Note, scrub.WithheldNote)
			}
		})
	}
}

// TestHTTPFramesValidUTF8 covers issue 22, item 4: an upstream answering
// application/json with raw 0xFF 0xFE bytes in a string (and other invalid
// UTF-8) never produces an invalid frame or invalid structured content;
// invalid sequences in a JSON body are replaced and the result says so.
func TestHTTPFramesValidUTF8(t *testing.T) {
	tests := []struct {
		name, contentType, header, body string
		fields                          []string
		maxBytes                        int
		// replaced: the result must say invalid UTF-8 was replaced.
		replaced bool
	}{
		{name: "issue example", contentType: "application/json", body: "{\"title\":\"a\xff\xfeb\"}", replaced: true},
		{name: "in a key", contentType: "application/json", body: "{\"k\xff\":1}", replaced: true},
		{name: "nested array", contentType: "application/json", body: "[{\"a\":[\"\xc3\",\"\xed\xa0\x80\"]}]", replaced: true},
		{name: "lone continuation bytes", contentType: "application/json", body: "\"\x80\x80\x80\"", replaced: true},
		{name: "with a projection", contentType: "application/json", body: "[{\"number\":1,\"title\":\"x\xff\xfe\"}]", fields: []string{"#.title"}, replaced: true},
		{name: "with the token next to it", contentType: "application/json", body: "{\"h\":\"Bearer " + attackToken + "\xff\"}", replaced: true},
		{name: "json cut inside a character", contentType: "application/json", body: "{\"t\":\"" + strings.Repeat("é", 40) + "\"}", maxBytes: 20},
		{name: "text with invalid bytes", contentType: "text/plain", body: "abc\xff\xfedef"},
		{name: "invalid header value", contentType: "application/json", header: "v\xff1", body: `{"ok":true}`, replaced: true},
		{name: "json served as text", contentType: "text/plain", body: "{\"a\":\"\xfe\"}", replaced: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				if tc.header != "" {
					w.Header().Set("X-Request-Id", tc.header)
				}
				w.Write([]byte(tc.body))
			})
			tool := compileTest(t, Config{BaseURL: up.URL, Response: Response{Fields: tc.fields, MaxBytes: tc.maxBytes}})
			res, err := tool.Execute(context.Background(), mustPrepare(t, tool, `{"method":"GET","path":"/x"}`), []byte(attackToken), execEnv(tool, []byte(attackToken)))
			if err != nil {
				t.Fatalf("Execute = %v", err)
			}
			assertValidResult(t, tc.name, res)
			assertExposesAtMost(t, tc.name, res, attackToken, 7)
			v := res.Structured.(httpView)
			if v.InvalidUTF8 != tc.replaced {
				t.Fatalf("invalid_utf8_replaced = %v, want %v:\n%s", v.InvalidUTF8, tc.replaced, agentView(t, res))
			}
			if tc.replaced && !strings.Contains(res.Text, "U+FFFD") {
				t.Fatalf("text does not say invalid UTF-8 was replaced:\n%s", res.Text)
			}
		})
	}
}

// TestHTTPRoutingHeaders covers issue 14, item 9 (invariant 3): headers
// that move the method, path or host are refused unless the tool allows
// one by name, and agent header names are compared after folding case and
// "_" to "-", against forbidden and injection headers alike. It asserts on
// what the upstream received.
func TestHTTPRoutingHeaders(t *testing.T) {
	up := servertest.NewUpstream(t, nil)
	bearer := compileTest(t, Config{BaseURL: up.URL})
	apiKey := compileTest(t, Config{BaseURL: up.URL, Credential: Credential{Inject: "header", Header: "X-Api-Key"}})
	allowProto := compileTest(t, Config{BaseURL: up.URL, AllowHeaders: []string{"x-forwarded-proto", "X_HTTP_Method_Override"}})
	tests := []struct {
		name    string
		tool    *httpTool
		headers map[string]string
		// sent is the header the upstream must receive; nil means refused.
		sent map[string]string
	}{
		{"method override", bearer, map[string]string{"X-HTTP-Method-Override": "DELETE"}, nil},
		{"method override lower case", bearer, map[string]string{"x-http-method-override": "DELETE"}, nil},
		{"method override underscores", bearer, map[string]string{"X_HTTP_Method_Override": "DELETE"}, nil},
		{"X-HTTP-Method", bearer, map[string]string{"X-HTTP-Method": "DELETE"}, nil},
		{"X-Method-Override", bearer, map[string]string{"X-Method-Override": "PUT"}, nil},
		{"X-Original-URL", bearer, map[string]string{"X-Original-URL": "/admin"}, nil},
		{"X-Rewrite-URL", bearer, map[string]string{"X-Rewrite-Url": "/admin"}, nil},
		{"X-Forwarded-Host", bearer, map[string]string{"X-Forwarded-Host": "evil.example"}, nil},
		{"X-Forwarded-Proto", bearer, map[string]string{"X-Forwarded-Proto": "http"}, nil},
		{"Forwarded", bearer, map[string]string{"Forwarded": "host=evil.example;proto=http"}, nil},
		{"X-Host", bearer, map[string]string{"X-HOST": "evil.example"}, nil},
		{"X-Forwarded-Prefix", bearer, map[string]string{"X-Forwarded-Prefix": "/admin"}, nil},
		{"X-Forwarded-For", bearer, map[string]string{"x_forwarded_for": "127.0.0.1"}, nil},
		{"injection header folded", apiKey, map[string]string{"X_Api_Key": "evil"}, nil},
		{"injection header lower folded", apiKey, map[string]string{"x_api_key": "evil"}, nil},
		{"injection header mixed", apiKey, map[string]string{"X-API_key": "evil"}, nil},
		{"authorization folded", bearer, map[string]string{"Authorization": "Bearer evil"}, nil},
		{"proxy authorization folded", bearer, map[string]string{"Proxy_Authorization": "Basic evil"}, nil},
		{"transfer encoding folded", bearer, map[string]string{"Transfer_Encoding": "chunked"}, nil},
		{"one header in two spellings", bearer, map[string]string{"X-Trace": "1", "x_trace": "2"}, nil},
		{"routing header another tool allows", bearer, map[string]string{"X-HTTP-Method-Override": "GET"}, nil},
		{"allowed routing header", allowProto, map[string]string{"X-Forwarded-Proto": "https"}, map[string]string{"X-Forwarded-Proto": "https"}},
		{"allowed routing header by its other spelling", allowProto, map[string]string{"X-HTTP-Method-Override": "GET"}, map[string]string{"X-Http-Method-Override": "GET"}},
		{"not allowed on the same tool", allowProto, map[string]string{"X-Forwarded-Host": "evil.example"}, nil},
		{"ordinary header", bearer, map[string]string{"X-Request-Id": "abc"}, map[string]string{"X-Request-Id": "abc"}},
		{"ordinary underscore header", apiKey, map[string]string{"X_Trace_Id": "abc"}, map[string]string{"X_trace_id": "abc"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := argsJSON(t, map[string]any{"method": "GET", "path": "/x", "headers": tc.headers})
			before := len(up.Requests())
			call, err := tc.tool.Prepare(args)
			if tc.sent == nil {
				var ae *ArgError
				if !errors.As(err, &ae) {
					t.Fatalf("Prepare(%s) = %v, want *ArgError", args, err)
				}
				if strings.Contains(ae.Msg, "evil") || strings.Contains(ae.Msg, "DELETE") {
					t.Fatalf("Prepare(%s) error echoes the value: %q", args, ae.Msg)
				}
				if got := len(up.Requests()); got != before {
					t.Fatalf("upstream received %d requests, want none", got-before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare(%s) = %v, want accepted", args, err)
			}
			if _, err := tc.tool.Execute(context.Background(), call, []byte(testToken), execEnv(tc.tool, []byte(testToken))); err != nil {
				t.Fatalf("Execute(%s) = %v", args, err)
			}
			got := up.Requests()
			if len(got) != before+1 {
				t.Fatalf("upstream received %d requests, want 1", len(got)-before)
			}
			for k, v := range tc.sent {
				if vs := got[before].Header[k]; len(vs) != 1 || vs[0] != v {
					t.Fatalf("upstream received %s = %q, want %q (headers %v)", k, vs, v, got[before].Header)
				}
			}
			if got[before].Method != "GET" || got[before].RequestURI != "/x" {
				t.Fatalf("upstream received %s %s, want GET /x", got[before].Method, got[before].RequestURI)
			}
		})
	}
}

// TestHTTPCompileAllowHeaders checks allow_headers: only routing headers,
// once each, on generic http tools.
func TestHTTPCompileAllowHeaders(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" means it compiles
	}{
		{"routing header", Config{AllowHeaders: []string{"X-Forwarded-Proto"}}, ""},
		{"any spelling", Config{AllowHeaders: []string{"x_forwarded_host", "FORWARDED"}}, ""},
		{"authorization", Config{AllowHeaders: []string{"Authorization"}}, "tools.api.allow_headers[0]"},
		{"ordinary header", Config{AllowHeaders: []string{"X-Forwarded-Proto", "X-Custom"}}, "tools.api.allow_headers[1]"},
		{"twice", Config{AllowHeaders: []string{"X-Forwarded-Proto", "x-forwarded-proto"}}, "tools.api.allow_headers[1]"},
		{"templated tool", Config{Method: "GET", Path: "/x", InputSchema: map[string]any{"type": "object"}, AllowHeaders: []string{"X-Forwarded-Proto"}}, "tools.api.allow_headers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Kind, cfg.BaseURL, cfg.AllowPrivateNetwork = "http", "http://127.0.0.1:1", true
			cfg.Credential = Credential{Secret: "api_token", Inject: "bearer"}
			_, errs := Compile("api", cfg, Env{})
			if tc.field == "" {
				if len(errs) > 0 {
					t.Fatalf("Compile(%v) = %v, want no error", tc.cfg.AllowHeaders, errs)
				}
				return
			}
			if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), tc.field+":") {
				t.Fatalf("Compile(%v) = %v, want one error at %s", tc.cfg.AllowHeaders, errs, tc.field)
			}
		})
	}
	s3 := s3TestConfig("http://127.0.0.1:1")
	s3.AllowHeaders = []string{"X-Forwarded-Proto"}
	if _, errs := Compile("archive_bucket", s3, Env{}); len(errs) != 1 || !strings.Contains(errs[0].Error(), "allow_headers") {
		t.Fatalf("Compile(s3 with allow_headers) = %v, want one error at allow_headers", errs)
	}
}

// TestScrubValuesKeepPublicParts: since any eight-byte part of a scrubbed
// value is redacted, a value must hold nothing public. A basic-auth user
// name shorter than eight bytes, the JSON field names of an aws_sigv4
// secret and a role ARN stay readable (and pass the argument check); the
// password and the keys do not.
func TestScrubValuesKeepPublicParts(t *testing.T) {
	basic := compileTest(t, Config{BaseURL: "http://127.0.0.1:1", Credential: Credential{Inject: "basic"}})
	sigv4 := compileTest(t, Config{BaseURL: "http://127.0.0.1:1", Credential: Credential{Inject: "aws_sigv4"}, AWS: &AWS{Service: "execute-api", Region: "eu-west-1"}})
	role := `{"role_arn":"arn:aws:iam::123456789012:role/archive-reader","access_key_id":"` + testAWSKeyID + `","secret_access_key":"` + testAWSSecretKey + `"}`
	tests := []struct {
		name, secret, body, want string
	}{
		{"basic user name stays", "alice:pa55w0rd-Zq9-xyzzy", `{"login":"alice:","note":"alice:pa55w0rd-Zq9-xyzzy"}`, `{"login":"alice:","note":"alice:[REDACTED]"}`},
		{"basic base64 keeps the user's characters", "alice:pa55w0rd-Zq9-xyzzy", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pa55w0rd-Zq9-xyzzy")), "Basic YWxpY2U6[REDACTED]"},
		{"aws field names stay", role, `{"access_key_id":"` + testAWSKeyID + `","role":"arn:aws:iam::123456789012:role/archive-reader"}`, `{"access_key_id":"[REDACTED]","role":"arn:aws:iam::123456789012:role/archive-reader"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tool := basic
			if strings.HasPrefix(tc.secret, "{") {
				tool = sigv4
			}
			sc := tool.Scrubber([]byte(tc.secret))
			if got, _ := sc.String(tc.body); got != tc.want {
				t.Fatalf("scrub(%s) = %s, want %s", tc.body, got, tc.want)
			}
			if ArgsCarrySecret(sc, []byte(`{"method":"GET","path":"/users/alice:","query":{"role":"arn:aws:iam::123456789012:role/archive-reader","f":"{\"access_key_id\":1}"}}`)) {
				t.Fatalf("the argument check refuses public parts of %s", tc.name)
			}
		})
	}
}

func mustPrepare(t testing.TB, tool Tool, args string) *Call {
	t.Helper()
	call, err := tool.Prepare(json.RawMessage(args))
	if err != nil {
		t.Fatalf("Prepare(%s) = %v", args, err)
	}
	return call
}

func wrapAt(s string, width int, eol string) string {
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width] + eol)
		s = s[width:]
	}
	b.WriteString(s)
	return b.String()
}

func hexJoin(s, sep string) string {
	parts := make([]string, len(s))
	for i := range len(s) {
		parts[i] = hex.EncodeToString([]byte{s[i]})
	}
	return strings.Join(parts, sep)
}

func utf16LE(s string) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return string(b)
}
