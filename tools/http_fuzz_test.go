package tools

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCanonicalPath: whatever path Prepare accepts, the URL sent upstream
// stays under the base path, and re-parsing it yields exactly the segments
// policy decided on, none of them a dot segment or holding a "/".
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/a/b", "/../admin", "/a/..%2fadmin", "/%252e%252e", "/．．／x", "/a%20b;c", "//evil.com", "/%c0%ae", "/..;/x", "/a%2F"} {
		f.Add(s)
	}
	tool := compileTest(f, Config{BaseURL: "http://127.0.0.1:1/base%20dir/v1"})
	f.Fuzz(func(t *testing.T, path string) {
		call, err := tool.Prepare(argsJSON(t, map[string]any{"method": "GET", "path": path}))
		if err != nil {
			var ae *ArgError
			if !errors.As(err, &ae) {
				t.Fatalf("Prepare(%q) = %T %v, want *ArgError", path, err, err)
			}
			return
		}
		segs := call.Request.Segments
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\") {
				t.Fatalf("Prepare(%q) accepted segment %q", path, s)
			}
		}
		sent := tool.upstreamURL(segs, "").String()
		u, err := url.Parse(sent)
		if err != nil {
			t.Fatalf("upstream URL %q does not parse: %v", sent, err)
		}
		if u.Host != "127.0.0.1:1" || u.Scheme != "http" {
			t.Fatalf("Prepare(%q) sends to %s://%s", path, u.Scheme, u.Host)
		}
		esc := u.EscapedPath()
		const base = "/base%20dir/v1"
		if esc != base && !strings.HasPrefix(esc, base+"/") {
			t.Fatalf("Prepare(%q) sends path %q, not under %s", path, esc, base)
		}
		var got []string
		if rest := strings.TrimPrefix(esc, base); rest != "" {
			for _, raw := range strings.Split(rest[1:], "/") {
				s, err := url.PathUnescape(raw)
				if err != nil {
					t.Fatalf("segment %q does not unescape: %v", raw, err)
				}
				got = append(got, s)
			}
		}
		if !slices.Equal(got, segs) {
			t.Fatalf("Prepare(%q): policy saw %q, upstream gets %q", path, segs, got)
		}
	})
}

// FuzzQuery: the credential's query parameter reaches the upstream exactly
// once, with the secret, whatever query the agent sends.
func FuzzQuery(f *testing.F) {
	for _, kv := range [][2]string{{"a", "1"}, {"api_key", "evil"}, {"API_KEY", "x"}, {"a;api_key", "x"}, {"api_key\x00", "x"}, {"a", "%x&api_key=evil"}, {"api%5fkey", "x"}} {
		f.Add(kv[0], kv[1])
	}
	tool := compileTest(f, Config{BaseURL: "http://127.0.0.1:1", Credential: Credential{Inject: "query", Param: "api_key"}})
	f.Fuzz(func(t *testing.T, key, value string) {
		call, err := tool.Prepare(argsJSON(t, map[string]any{"method": "GET", "path": "/x", "query": map[string]string{key: value}}))
		if err != nil {
			return
		}
		hop := httpHop{method: call.Request.Method, segs: call.Request.Segments, query: call.http.query}
		req, err := tool.newRequest(context.Background(), hop, call.http.header, []byte(testToken))
		if err != nil {
			t.Fatalf("newRequest: %v", err)
		}
		q, err := url.ParseQuery(req.URL.RawQuery)
		if err != nil {
			t.Fatalf("sent query %q does not parse: %v", req.URL.RawQuery, err)
		}
		n := 0
		for k, vs := range q {
			if strings.EqualFold(k, "api_key") {
				n += len(vs)
				if vs[0] != testToken {
					t.Fatalf("query %q carries api_key=%q", req.URL.RawQuery, vs[0])
				}
			}
		}
		if n != 1 {
			t.Fatalf("query %q carries the credential parameter %d times", req.URL.RawQuery, n)
		}
	})
}

// FuzzHeaders: a header the agent may not set never passes, and no header
// that passes carries CR, LF or NUL.
func FuzzHeaders(f *testing.F) {
	for _, kv := range [][2]string{{"X-A", "1"}, {"Authorization", "x"}, {"x-api-key", "x"}, {"Proxy-Foo", "x"}, {"X-A", "v\r\nX-Inj: 1"}, {"Host", "evil"}, {"Content-Length", "0"}, {"X\nA", "1"}} {
		f.Add(kv[0], kv[1])
	}
	tool := compileTest(f, Config{BaseURL: "http://127.0.0.1:1", Credential: Credential{Inject: "header", Header: "X-Api-Key"}})
	forbidden := []string{"authorization", "cookie", "host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade", "x-api-key"}
	f.Fuzz(func(t *testing.T, name, value string) {
		call, err := tool.Prepare(argsJSON(t, map[string]any{"method": "GET", "path": "/x", "headers": map[string]string{name: value}}))
		if err != nil {
			return
		}
		lower := strings.ToLower(name)
		if slices.Contains(forbidden, lower) || strings.HasPrefix(lower, "proxy-") {
			t.Fatalf("header %q passed", name)
		}
		for k, vs := range call.http.header {
			if strings.ContainsAny(k, "\r\n\x00") || strings.ContainsAny(strings.Join(vs, ""), "\r\n\x00") {
				t.Fatalf("header %q: %q passed with control bytes", k, vs)
			}
		}
		hop := httpHop{method: call.Request.Method, segs: call.Request.Segments, query: call.http.query}
		req, err := tool.newRequest(context.Background(), hop, call.http.header, []byte(testToken))
		if err != nil {
			t.Fatalf("newRequest: %v", err)
		}
		if got := req.Header.Values("X-Api-Key"); len(got) != 1 || got[0] != testToken {
			t.Fatalf("X-Api-Key = %q, want the secret once", got)
		}
		// Invalid UTF-8 becomes U+FFFD in the JSON arguments, so only a valid
		// value must arrive byte for byte.
		if got := req.Header.Values(http.CanonicalHeaderKey(name)); len(got) != 1 || utf8.ValidString(value) && got[0] != value {
			t.Fatalf("header %q = %q, want [%q]", name, got, value)
		}
	})
}
