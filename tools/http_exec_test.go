package tools

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

func prepare(t testing.TB, tool *httpTool, args string) *Call {
	t.Helper()
	call, err := tool.Prepare([]byte(args))
	if err != nil {
		t.Fatalf("Prepare(%s) = %v", args, err)
	}
	return call
}

// TestHTTPInjection covers invariant 1 on the way out: the upstream receives
// exactly the credential, once, where the tool says, and the agent sees no
// form of it.
func TestHTTPInjection(t *testing.T) {
	const basic = "alice:pa55w0rd-Zq9-xyzzy"
	tests := map[string]struct {
		cred   Credential
		secret string
		check  func(t *testing.T, r servertest.Request)
	}{
		"bearer": {
			cred: Credential{Inject: "bearer"}, secret: testToken,
			check: func(t *testing.T, r servertest.Request) {
				if got := r.Header["Authorization"]; len(got) != 1 || got[0] != "Bearer "+testToken {
					t.Fatalf("Authorization = %q, want exactly one Bearer token", got)
				}
			},
		},
		"header with prefix": {
			cred: Credential{Inject: "header", Header: "X-Api-Key", Prefix: "Token "}, secret: testToken,
			check: func(t *testing.T, r servertest.Request) {
				if got := r.Header["X-Api-Key"]; len(got) != 1 || got[0] != "Token "+testToken {
					t.Fatalf("X-Api-Key = %q, want exactly [Token <secret>]", got)
				}
				if r.Header.Get("Authorization") != "" {
					t.Fatalf("Authorization set for a header credential")
				}
			},
		},
		"basic": {
			cred: Credential{Inject: "basic"}, secret: basic,
			check: func(t *testing.T, r servertest.Request) {
				want := "Basic " + base64.StdEncoding.EncodeToString([]byte(basic))
				if got := r.Header["Authorization"]; len(got) != 1 || got[0] != want {
					t.Fatalf("Authorization = %q, want [%s]", got, want)
				}
			},
		},
		"query": {
			cred: Credential{Inject: "query", Param: "api_key"}, secret: testToken,
			check: func(t *testing.T, r servertest.Request) {
				u, _ := url.Parse(r.RequestURI)
				q := u.Query()
				if got := q["api_key"]; len(got) != 1 || got[0] != testToken {
					t.Fatalf("api_key = %q, want exactly the secret once", got)
				}
				if got := q.Get("page"); got != "2" {
					t.Fatalf("page = %q, want 2", got)
				}
				if r.Header.Get("Authorization") != "" {
					t.Fatalf("Authorization set for a query credential")
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			up := servertest.NewUpstream(t, nil)
			tool := compileTest(t, Config{BaseURL: up.URL + "/v1", Credential: tc.cred})
			call := prepare(t, tool, `{"method":"GET","path":"/items","query":{"page":"2"}}`)
			res, err := tool.Execute(context.Background(), call, []byte(tc.secret), execEnv(tool, []byte(tc.secret)))
			if err != nil {
				t.Fatalf("Execute = %v", err)
			}
			got := up.Requests()
			if len(got) != 1 {
				t.Fatalf("upstream received %d requests, want 1", len(got))
			}
			if !strings.HasPrefix(got[0].RequestURI, "/v1/items?") {
				t.Fatalf("upstream path %q, want /v1/items?...", got[0].RequestURI)
			}
			tc.check(t, got[0])
			if res.Status != 200 || res.Structured.(httpView).Body != "ok" {
				t.Fatalf("result = %+v, want 200 ok", res.Structured)
			}
			secrets := []string{tc.secret}
			if tc.cred.Inject == "basic" {
				secrets = append(secrets, "pa55w0rd-Zq9-xyzzy")
			}
			servertest.AssertNoSecret(t, "result", agentView(t, res), secrets...)
		})
	}
}

// TestHTTPInjectionAWS: aws_sigv4 signs the request, and the agent cannot
// send its own signing headers.
func TestHTTPInjectionAWS(t *testing.T) {
	secret := `{"access_key_id":"AKIDEXAMPLE","secret_access_key":"wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"}`
	up := servertest.NewUpstream(t, nil)
	tool := compileTest(t, Config{BaseURL: up.URL, Credential: Credential{Inject: "aws_sigv4"}, AWS: &AWS{Service: "execute-api", Region: "eu-west-1"}})
	if _, err := tool.Prepare([]byte(`{"method":"GET","path":"/x","headers":{"X-Amz-Date":"20200101T000000Z"}}`)); err == nil {
		t.Fatalf("Prepare with X-Amz-Date succeeded, want *ArgError")
	}
	res, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"POST","path":"/x","body":{"a":1}}`), []byte(secret), execEnv(tool, []byte(secret)))
	if err != nil {
		t.Fatalf("Execute = %v", err)
	}
	r := up.Requests()[0]
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") || !strings.Contains(auth, "/eu-west-1/execute-api/") {
		t.Fatalf("Authorization = %q, want a SigV4 signature for eu-west-1/execute-api", auth)
	}
	if string(r.Body) != `{"a":1}` {
		t.Fatalf("body = %q, want {\"a\":1}", r.Body)
	}
	servertest.AssertNoSecret(t, "upstream request", fmt.Sprint(r.Header)+string(r.Body), "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY")
	servertest.AssertNoSecret(t, "result", agentView(t, res), "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY", secret)
}

// TestHTTPEchoScrubbed covers invariant 1 on the way back: an upstream that
// echoes the credential in every form gets all of them replaced.
func TestHTTPEchoScrubbed(t *testing.T) {
	up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Location", "https://elsewhere.example/cb?token="+url.QueryEscape(tok))
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", token="`+tok+`"`)
		w.Header().Set("X-Request-Id", base64.StdEncoding.EncodeToString([]byte(tok)))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		headers, _ := json.Marshal(r.Header)
		json.NewEncoder(w).Encode(map[string]any{
			"headers": json.RawMessage(headers),
			"b64":     []string{base64.StdEncoding.EncodeToString([]byte(tok)), base64.StdEncoding.EncodeToString([]byte("x" + tok)), base64.RawURLEncoding.EncodeToString([]byte("xy" + tok))},
			"hex":     hex.EncodeToString([]byte(tok)),
			"error":   "token " + tok + " is invalid",
			"escaped": strings.ReplaceAll(tok, "-", `\u002d`),
		})
	})
	tool := compileTest(t, Config{BaseURL: up.URL})
	res, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/anything"}`), []byte(testToken), execEnv(tool, []byte(testToken)))
	if err != nil {
		t.Fatalf("Execute = %v", err)
	}
	view := agentView(t, res)
	servertest.AssertNoSecret(t, "result", view, testToken)
	if !res.Scrubbed {
		t.Fatalf("Scrubbed = false, want true")
	}
	h := res.Structured.(httpView).Headers
	if h["location"] != "https://elsewhere.example/cb?token=[REDACTED]" {
		t.Fatalf("location = %q, want the token redacted", h["location"])
	}
	if _, ok := h["www-authenticate"]; ok {
		t.Fatalf("www-authenticate reached the agent")
	}
	if res.Status != 401 || !strings.Contains(view, "[REDACTED]") {
		t.Fatalf("status %d, view %s", res.Status, view)
	}
}

// TestHTTPExecErrorsScrubbed: a *url.Error quotes the URL with the
// query-injected key; the agent gets a generic message and the audit a
// scrubbed detail.
func TestHTTPExecErrorsScrubbed(t *testing.T) {
	up := servertest.NewUpstream(t, nil)
	base := up.URL
	up.Close()
	tool := compileTest(t, Config{BaseURL: base, Credential: Credential{Inject: "query", Param: "api_key"}})
	_, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/x"}`), []byte(testToken), execEnv(tool, []byte(testToken)))
	var ee *ExecError
	if !errors.As(err, &ee) {
		t.Fatalf("Execute to a closed server = %v, want *ExecError", err)
	}
	if ee.Msg != "upstream unreachable" {
		t.Fatalf("Msg = %q, want upstream unreachable", ee.Msg)
	}
	if !strings.Contains(ee.Detail, "api_key=[REDACTED]") {
		t.Fatalf("Detail = %q, want the URL with the key redacted", ee.Detail)
	}
	servertest.AssertNoSecret(t, "ExecError", ee.Msg+ee.Detail, testToken)
}

// TestHTTPCredentialErrors: a credential that cannot be injected safely
// fails without quoting it.
func TestHTTPCredentialErrors(t *testing.T) {
	tests := map[string]struct {
		cred   Credential
		secret string
		want   string
	}{
		"bearer with CRLF":    {Credential{Inject: "bearer"}, "tok\r\nX-Inj: 1", "credential could not be applied: credential is not a valid header value"},
		"basic without colon": {Credential{Inject: "basic"}, "justatoken123", `credential could not be applied: basic credential must be "user:password"`},
		"empty":               {Credential{Inject: "bearer"}, "", "credential is empty"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			up := servertest.NewUpstream(t, nil)
			tool := compileTest(t, Config{BaseURL: up.URL, Credential: tc.cred})
			_, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/x"}`), []byte(tc.secret), execEnv(tool, []byte(tc.secret)))
			var ee *ExecError
			if !errors.As(err, &ee) || ee.Msg != tc.want {
				t.Fatalf("Execute = %v, want *ExecError %q", err, tc.want)
			}
			if len(up.Requests()) != 0 {
				t.Fatalf("upstream received a request")
			}
			if tc.secret != "" {
				servertest.AssertNoSecret(t, "ExecError", ee.Msg+ee.Detail, tc.secret)
			}
		})
	}
}

// TestHTTPRedirects covers invariant 3 for redirects: nothing carrying the
// credential goes to another origin, and same-origin hops are followed only
// when re-authorized.
func TestHTTPRedirects(t *testing.T) {
	other := servertest.NewUpstream(t, nil)
	tests := map[string]struct {
		follow   string
		recheck  func(policy.Request) error
		location func(self string) string
		// wantHops is the request URIs the origin must receive.
		wantHops   []string
		wantStatus int
	}{
		"another host not followed by default": {
			location: func(string) string { return other.URL + "/steal" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
		"another host with same_origin": {
			follow: "same_origin", location: func(string) string { return strings.Replace(other.URL, "127.0.0.1", "localhost", 1) + "/base/steal" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
		"another scheme": {
			follow: "same_origin", location: func(self string) string { return "https://" + strings.TrimPrefix(self, "http://") + "/next" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
		"another port": {
			follow: "same_origin", location: func(self string) string { return other.URL + "/base/next" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
		"metadata address": {
			follow: "same_origin", location: func(string) string { return "http://169.254.169.254/latest/meta-data/" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
		"same origin then another host": {
			follow: "same_origin", location: func(string) string { return "/base/hop" }, wantHops: []string{"/start", "/hop"}, wantStatus: 302,
		},
		"same origin denied by recheck": {
			follow: "same_origin", recheck: func(policy.Request) error { return errors.New("denied") },
			location: func(string) string { return "/base/hop" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
		"same origin outside base path": {
			follow: "same_origin", location: func(string) string { return "/elsewhere/hop" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
		"same origin with traversal": {
			follow: "same_origin", location: func(string) string { return "/base/%2e%2e/admin" }, wantHops: []string{"/start"}, wantStatus: 302,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := len(other.Requests())
			var origin *servertest.Upstream
			origin = servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/base/start":
					w.Header().Set("Location", tc.location(origin.URL))
				case "/base/hop":
					w.Header().Set("Location", other.URL+"/steal")
				}
				w.WriteHeader(http.StatusFound)
			})
			tool := compileTest(t, Config{BaseURL: origin.URL + "/base", FollowRedirects: tc.follow})
			call := prepare(t, tool, `{"method":"GET","path":"/start"}`)
			var rechecked []string
			env := execEnv(tool, []byte(testToken))
			env.Authorize = func(r policy.Request) error {
				rechecked = append(rechecked, r.String())
				if tc.recheck != nil {
					return tc.recheck(r)
				}
				return nil
			}
			res, err := tool.Execute(context.Background(), call, []byte(testToken), env)
			if err != nil {
				t.Fatalf("Execute = %v", err)
			}
			if res.Status != tc.wantStatus {
				t.Fatalf("status %d, want %d", res.Status, tc.wantStatus)
			}
			var hops []string
			for _, r := range origin.Requests() {
				hops = append(hops, strings.TrimPrefix(r.RequestURI, "/base"))
				if r.Header.Get("Authorization") != "Bearer "+testToken {
					t.Fatalf("hop %s lacked the credential", r.RequestURI)
				}
			}
			if fmt.Sprint(hops) != fmt.Sprint(tc.wantHops) {
				t.Fatalf("origin received %v, want %v (rechecked %v)", hops, tc.wantHops, rechecked)
			}
			if got := other.Requests(); len(got) != before {
				t.Fatalf("another origin received %d requests, want none", len(got)-before)
			}
			servertest.AssertNoSecret(t, "result", agentView(t, res), testToken)
		})
	}
}

// TestHTTPRedirectLimits: a same-origin loop stops after 5 hops, a 303
// turns POST into GET without body, and no Authorize means no following;
// each hop followed is listed in the result.
func TestHTTPRedirectLimits(t *testing.T) {
	up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/loop":
			w.Header().Set("Location", "/loop")
			w.WriteHeader(http.StatusTemporaryRedirect)
		case "/post":
			w.Header().Set("Location", "/done")
			w.WriteHeader(http.StatusSeeOther)
		default:
			io.WriteString(w, "done")
		}
	})
	tool := compileTest(t, Config{BaseURL: up.URL, FollowRedirects: "same_origin"})
	allow := func(policy.Request) error { return nil }

	call := prepare(t, tool, `{"method":"GET","path":"/loop"}`)
	env := execEnv(tool, []byte(testToken))
	env.Authorize = allow
	res, err := tool.Execute(context.Background(), call, []byte(testToken), env)
	if err != nil || res.Status != 307 {
		t.Fatalf("Execute(loop) = %v, %v; want 307", res, err)
	}
	if n := len(up.Requests()); n != 1+httpMaxRedirects {
		t.Fatalf("loop: upstream received %d requests, want %d", n, 1+httpMaxRedirects)
	}
	if len(res.Hops) != httpMaxRedirects || res.Hops[0] != (Hop{Method: "GET", Path: "/loop", Status: 307}) {
		t.Fatalf("loop: Result.Hops = %+v, want %d hops of GET /loop answered 307", res.Hops, httpMaxRedirects)
	}

	call = prepare(t, tool, `{"method":"POST","path":"/post","body":"payload"}`)
	var hop policy.Request
	env.Authorize = func(r policy.Request) error { hop = r; return nil }
	res, err = tool.Execute(context.Background(), call, []byte(testToken), env)
	if err != nil || res.Status != 200 {
		t.Fatalf("Execute(post) = %v, %v; want 200", res, err)
	}
	if hop.String() != "GET /done" {
		t.Fatalf("Authorize got %s, want GET /done", hop)
	}
	if want := []Hop{{Method: "GET", Path: "/done", Status: 200}}; !slices.Equal(res.Hops, want) {
		t.Fatalf("post: Result.Hops = %+v, want %+v", res.Hops, want)
	}
	last := up.Requests()[len(up.Requests())-1]
	if last.Method != "GET" || len(last.Body) != 0 {
		t.Fatalf("303 hop sent %s with %d body bytes, want GET without body", last.Method, len(last.Body))
	}

	n := len(up.Requests())
	call = prepare(t, tool, `{"method":"GET","path":"/loop"}`)
	if res, err = tool.Execute(context.Background(), call, []byte(testToken), execEnv(tool, []byte(testToken))); err != nil || res.Status != 307 {
		t.Fatalf("Execute(no Authorize) = %v, %v; want 307", res, err)
	}
	if got := len(up.Requests()) - n; got != 1 {
		t.Fatalf("without Authorize the upstream received %d requests, want 1", got)
	}
}

func TestHTTPResponseLimits(t *testing.T) {
	bomb := func() []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(make([]byte, 10<<20))
		zw.Close()
		return b.Bytes()
	}()
	up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/bomb":
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(bomb)
		case "/drip":
			w.WriteHeader(200)
			for i := 0; i < 50; i++ {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				w.Write([]byte("x"))
				w.(http.Flusher).Flush()
			}
		case "/headers":
			for i := 0; i < 150; i++ {
				w.Header().Set(fmt.Sprintf("X-H-%d", i), "v")
			}
		}
	})
	tool := compileTest(t, Config{BaseURL: up.URL, Timeout: "300ms", Response: Response{MaxBytes: 1024}})

	res, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/bomb"}`), []byte(testToken), execEnv(tool, []byte(testToken)))
	if err != nil {
		t.Fatalf("Execute(bomb) = %v", err)
	}
	v := res.Structured.(httpView)
	if body, _ := v.Body.(string); !res.Truncated || !v.Truncated || body != string(make([]byte, 1024)) {
		t.Fatalf("bomb: truncated=%v body %d bytes, want truncated at 1024 zero bytes", res.Truncated, len(body))
	}

	_, err = tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/drip"}`), []byte(testToken), execEnv(tool, []byte(testToken)))
	var ee *ExecError
	if !errors.As(err, &ee) || ee.Msg != "upstream timed out after 300ms" {
		t.Fatalf("Execute(drip) = %v, want timed out after 300ms", err)
	}

	_, err = tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/headers"}`), []byte(testToken), execEnv(tool, []byte(testToken)))
	if !errors.As(err, &ee) || !strings.Contains(ee.Msg, "more than 100 header fields") {
		t.Fatalf("Execute(150 headers) = %v, want too many header fields", err)
	}
}

func TestHTTPResponseShape(t *testing.T) {
	up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("ETag", `"v1"`)
		h.Set("X-RateLimit-Remaining", "42")
		h.Set("RateLimit-Reset", "7")
		h.Add("Link", "<a>")
		h.Add("Link", "<b>")
		h.Set("Set-Cookie", "session=abc")
		h.Set("WWW-Authenticate", "Basic")
		h.Set("Server", "nginx")
		h.Set("X-Internal", "1")
		switch r.URL.Path {
		case "/list":
			io.WriteString(w, `[{"number":1,"title":"a","secret_field":"x","user":{"login":"u1"}},{"number":2,"title":"b","user":{"login":"u2"}}]`)
		case "/obj":
			io.WriteString(w, `{"total_count":2,"items":[{"title":"a","body":"x"},{"title":"b"}],"private":"y"}`)
		case "/binary":
			h.Set("Content-Type", "application/octet-stream")
			w.Write([]byte{0xff, 0xfe, 0x00, 0x01})
		case "/html":
			h.Set("Content-Type", "text/html")
			io.WriteString(w, "<html>hi</html>")
		}
	})
	tests := map[string]struct {
		fields []string
		path   string
		want   string
	}{
		"no projection":     {nil, "/obj", `{"total_count":2,"items":[{"title":"a","body":"x"},{"title":"b"}],"private":"y"}`},
		"each element":      {[]string{"#.number", "#.title", "#.user.login"}, "/list", `[{"number":1,"title":"a","user.login":"u1"},{"number":2,"title":"b","user.login":"u2"}]`},
		"keyed by path":     {[]string{"total_count", "items.#.title", "missing"}, "/obj", `{"total_count":2,"items.#.title":["a","b"]}`},
		"each on object":    {[]string{"#.title"}, "/obj", `null`},
		"text body":         {nil, "/html", `"<html>hi</html>"`},
		"binary body":       {nil, "/binary", `"//4AAQ=="`},
		"withheld non-JSON": {[]string{"title"}, "/html", `null`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tool := compileTest(t, Config{BaseURL: up.URL, Response: Response{Fields: tc.fields}})
			res, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"`+tc.path+`"}`), []byte(testToken), execEnv(tool, []byte(testToken)))
			if err != nil {
				t.Fatalf("Execute = %v", err)
			}
			v := res.Structured.(httpView)
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.Encode(v.Body)
			if body := strings.TrimSpace(buf.String()); body != tc.want {
				t.Fatalf("body = %s, want %s", body, tc.want)
			}
			wantHeaders := map[string]string{"etag": `"v1"`, "x-ratelimit-remaining": "42", "ratelimit-reset": "7", "link": "<a>, <b>"}
			for k, want := range wantHeaders {
				if v.Headers[k] != want {
					t.Fatalf("header %s = %q, want %q", k, v.Headers[k], want)
				}
			}
			for _, k := range []string{"set-cookie", "www-authenticate", "server", "x-internal", "date"} {
				if _, ok := v.Headers[k]; ok {
					t.Fatalf("header %s reached the agent", k)
				}
			}
			if !strings.HasPrefix(res.Text, "HTTP 200\ncontent-length: ") {
				t.Fatalf("Text = %q, want HTTP 200 and sorted headers", res.Text)
			}
		})
	}
}

// TestHTTPEgressRefused covers invariant 4: without allow_private_network a
// loopback upstream is refused at dial time and receives nothing.
func TestHTTPEgressRefused(t *testing.T) {
	up := servertest.NewUpstream(t, nil)
	tool, errs := Compile("api", Config{Kind: "http", BaseURL: up.URL, AllowInsecureHTTP: true, Credential: Credential{Secret: "tok", Inject: "bearer"}}, Env{})
	if len(errs) > 0 {
		t.Fatalf("Compile = %v", errs)
	}
	call, err := tool.Prepare([]byte(`{"method":"GET","path":"/x"}`))
	if err != nil {
		t.Fatalf("Prepare = %v", err)
	}
	_, err = tool.Execute(context.Background(), call, []byte(testToken), execEnv(tool, []byte(testToken)))
	var ee *ExecError
	if !errors.As(err, &ee) || ee.Msg != "upstream request refused: address not allowed by egress policy" {
		t.Fatalf("Execute to loopback = %v, want refused by egress policy", err)
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("upstream received %d requests, want none", n)
	}
	servertest.AssertNoSecret(t, "ExecError", ee.Msg+ee.Detail, testToken)
}

// TestHTTPBasicKeyInUserNameIsScrubbed: APIs such as Stripe take the key as
// the basic-auth user name with an empty password; an upstream echoing the
// user name alone must not hand the key to the agent.
func TestHTTPBasicKeyInUserNameIsScrubbed(t *testing.T) {
	const key = "rk_live_51HxYzAbCdEfGhIjKlMnOp"
	up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		user, _, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"error":"key %s is restricted"}`, user)
	})
	tool := compileTest(t, Config{BaseURL: up.URL, Credential: Credential{Inject: "basic"}})
	res, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/customers"}`), []byte(key+":"), execEnv(tool, []byte(key+":")))
	if err != nil {
		t.Fatalf("Execute = %v", err)
	}
	req := http.Request{Header: up.Requests()[0].Header}
	if user, _, ok := req.BasicAuth(); !ok || user != key {
		t.Fatalf("upstream basic-auth user = %q, want the key", user)
	}
	view := agentView(t, res)
	servertest.AssertNoSecret(t, "result", view, key)
	if !res.Scrubbed || !strings.Contains(view, "[REDACTED]") {
		t.Fatalf("result = %s, want the echoed key redacted", view)
	}
}
