package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// token's base64 uses both '+' and '/' (from ">>>" and "???"), so the
// standard and URL alphabets differ.
const token = "ghp_s3cr3T>>>???tok"

func TestBytesEncodings(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	tests := map[string]struct {
		secret, body string
	}{
		"raw":                {token, "token=" + token + "&x=1"},
		"raw at start":       {token, token + " tail"},
		"raw at end":         {token, "head " + token},
		"raw only":           {token, token},
		"base64 std":         {token, "x " + b64([]byte(token)) + " y"},
		"base64 std raw":     {token, base64.RawStdEncoding.EncodeToString([]byte(token))},
		"base64 url":         {token, "x " + base64.URLEncoding.EncodeToString([]byte(token)) + " y"},
		"base64 url raw":     {token, base64.RawURLEncoding.EncodeToString([]byte(token))},
		"hex lower":          {token, "id " + hex.EncodeToString([]byte(token))},
		"hex upper":          {token, "ID " + strings.ToUpper(hex.EncodeToString([]byte(token)))},
		"query escaped":      {token, "?k=" + url.QueryEscape(token)},
		"query escaped lc":   {token, "?k=" + strings.NewReplacer("%3E", "%3e", "%3F", "%3f").Replace(url.QueryEscape(token))},
		"path escaped":       {"a b/c?d>e", "/v1/" + url.PathEscape("a b/c?d>e") + "/x"},
		"query space plus":   {"se cret/x", "q=" + url.QueryEscape("se cret/x")},
		"every byte escaped": {"secret", "q=%73%65%63%72%65%74"},
		"every byte lc":      {"s+e:", "q=%73%2b%65%3a"},
		"json go":            {`p"<>&\x`, `{"v":"` + jsonInner(t, `p"<>&\x`) + `"}`},
		"json plain":         {`p"<>&\x`, `{"v":"p\"<>&\\x"}`},
		"json u00 lower":     {`p"<>&\x`, `{"v":"p\u0022\u003c\u003e\u0026\u005cx"}`},
		"json u00 upper":     {`p"<>&\x`, `{"v":"p\u0022\u003C\u003E\u0026\u005Cx"}`},
		"json u00 slash":     {`a/b'c"d`, `{"v":"a\u002fb\u0027c\u0022d"}`},
		"json all u":         {"tok1", `{"v":"\u0074\u006f\u006b\u0031"}`},
		"json slash":         {"a/b/c", `{"v":"a\/b\/c"}`},
		"json non-ascii":     {"päss😀w", `{"v":"\u0070\u00e4\u0073\u0073\ud83d\ude00\u0077"}`},
		"invalid utf8":       {"\xff\xfesecret\x80", "a\xff\xfesecret\x80b\xc3"},
		"short secret raw":   {"ab", "xxabyy"},
		"one byte secret":    {"z", "zaz"},
		"basic auth":         {"user:" + token, "Authorization: Basic " + b64([]byte("user:"+token))},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := New([]byte(tc.secret))
			got, ok := s.Bytes([]byte(tc.body))
			if !ok {
				t.Fatalf("Bytes(%q) reported no match; want a match", tc.body)
			}
			if !bytes.Contains(got, []byte(Redacted)) {
				t.Fatalf("Bytes(%q) = %q, want %q in it", tc.body, got, Redacted)
			}
			if bytes.Contains(got, []byte(tc.secret)) {
				t.Fatalf("Bytes(%q) = %q still holds the secret", tc.body, got)
			}
			again, changed := s.Bytes(got)
			if changed || !bytes.Equal(again, got) {
				t.Fatalf("Bytes(%q) = %q, %v; want %q unchanged (idempotent)", got, again, changed, got)
			}
		})
	}
}

func TestBytesExactOutput(t *testing.T) {
	tests := map[string]struct {
		secrets []string
		body    string
		want    string
	}{
		"two occurrences":       {[]string{"s3cret"}, "a s3cret b s3cret c", "a [REDACTED] b [REDACTED] c"},
		"adjacent merge":        {[]string{"s3cret"}, "s3crets3cret", "[REDACTED]"},
		"overlapping merge":     {[]string{"abcab"}, "xabcabcabx", "x[REDACTED]x"},
		"longest of two":        {[]string{"tok", "token123"}, "a token123 b", "a [REDACTED] b"},
		"both secrets":          {[]string{"alpha1", "beta22"}, "alpha1 beta22", "[REDACTED] [REDACTED]"},
		"nested overlap":        {[]string{"abcdef", "defghi"}, "abcdefghi!", "[REDACTED]!"},
		"empty secret ignored":  {[]string{"", "s3cret"}, "s3cret", "[REDACTED]"},
		"hex":                   {[]string{"key!"}, "6b657921", "[REDACTED]"},
		"marker edge absorbed":  {[]string{"D]ab"}, "D]abab", "[REDACTED]"},
		"secret is marker":      {[]string{"[REDACTED]"}, "x[REDACTED]y", "x[REDACTED]y"},
		"secret inside marker":  {[]string{"EDAC"}, "EDAC and [REDACTED]", "[REDACTED] and [REDACTED]"},
		"secret spans markers":  {[]string{"]x[R"}, "]x[R]x[R", "[REDACTED]"},
		"marker chain withheld": {[]string{"REDACTED]ab"}, "keep REDACTED]ab" + strings.Repeat("ab", 100), "[REDACTED]"},
		"partial chain in one":  {[]string{"D]ab"}, "keep D]ab" + strings.Repeat("ab", 100), "keep [REDACTED]"},
		"short chain resolved":  {[]string{"D]ab"}, "keep D]ab" + strings.Repeat("ab", 3) + " end", "keep [REDACTED] end"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var secrets [][]byte
			for _, s := range tc.secrets {
				secrets = append(secrets, []byte(s))
			}
			got, _ := New(secrets...).String(tc.body)
			if got != tc.want {
				t.Fatalf("String(%q) with secrets %q = %q, want %q", tc.body, tc.secrets, got, tc.want)
			}
		})
	}
}

// TestBytesBase64Alignments embeds the secret at every offset inside a
// larger base64 stream and checks that at most the characters it shares with
// its neighbours survive: the output is a prefix of the encoding, the marker,
// and a suffix of the encoding, and neither keeps a character the secret
// alone determines.
func TestBytesBase64Alignments(t *testing.T) {
	for _, enc := range []struct {
		name string
		e    *base64.Encoding
	}{
		{"std", base64.StdEncoding}, {"url", base64.URLEncoding},
		{"rawstd", base64.RawStdEncoding}, {"rawurl", base64.RawURLEncoding},
	} {
		for _, prefix := range []string{"", "u", "us", "user:", "Authorization: Bearer ", "Bearer "} {
			for _, suffix := range []string{"", "x", "xy", "xyz", "\r\nAccept: */*"} {
				name := fmt.Sprintf("%s/%q/%q", enc.name, prefix, suffix)
				t.Run(name, func(t *testing.T) {
					plain := prefix + token + suffix
					encoded := enc.e.EncodeToString([]byte(plain))
					got, ok := New([]byte(token)).String(encoded)
					if !ok {
						t.Fatalf("String(%q) found nothing", encoded)
					}
					before, after, found := strings.Cut(got, Redacted)
					if !found || strings.Contains(after, Redacted) {
						t.Fatalf("String(%q) = %q, want exactly one %s", encoded, got, Redacted)
					}
					if !strings.HasPrefix(encoded, before) || !strings.HasSuffix(encoded, after) {
						t.Fatalf("String(%q) = %q, want a prefix and suffix of the input around the marker", encoded, got)
					}
					firstOwn := (8*len(prefix) + 5) / 6          // first char with only secret bits
					endOwn := 8 * (len(prefix) + len(token)) / 6 // end of chars with only secret bits
					if len(before) > firstOwn || len(encoded)-len(after) < endOwn {
						t.Fatalf("String(%q) = %q keeps characters determined by the secret alone (own range [%d,%d))", encoded, got, firstOwn, endOwn)
					}
				})
			}
		}
	}
}

func TestBytesEchoedHeaders(t *testing.T) {
	secret := "ghp_abcDEF123456789xyz"
	body := fmt.Sprintf(`{"args":{},"headers":{"Accept":"*/*","Authorization":"Bearer %s","X-Basic":"Basic %s","X-Forwarded":"%s"},"url":"https://httpbin.org/anything?key=%s"}`,
		secret, base64.StdEncoding.EncodeToString([]byte("me:"+secret)), hex.EncodeToString([]byte(secret)), url.QueryEscape(secret))
	s := New([]byte(secret), []byte("me:"+secret))
	got, ok := s.String(body)
	want := `{"args":{},"headers":{"Accept":"*/*","Authorization":"Bearer [REDACTED]","X-Basic":"Basic [REDACTED]","X-Forwarded":"[REDACTED]"},"url":"https://httpbin.org/anything?key=[REDACTED]"}`
	if !ok || got != want {
		t.Fatalf("String(echo) = %q, %v\nwant %q, true", got, ok, want)
	}
}

func TestBytesNoMatchReturnsSameSlice(t *testing.T) {
	tests := map[string]string{
		"text":        "nothing to see here, just public data",
		"empty":       "",
		"one byte":    "g",
		"seven of it": token[:7],
		"marker":      "already [REDACTED] here",
		"invalid":     "\xff\xfe\xfd\x80",
		"hex prefix":  hex.EncodeToString([]byte(token))[:6],
	}
	s := New([]byte(token))
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			in := []byte(body)
			got, ok := s.Bytes(in)
			if ok {
				t.Fatalf("Bytes(%q) = %q, true; want no match", body, got)
			}
			if len(in) > 0 && &got[0] != &in[0] || len(got) != len(in) {
				t.Fatalf("Bytes(%q) returned a different slice; want the input itself", body)
			}
			str, ok := s.String(body)
			if ok || str != body {
				t.Fatalf("String(%q) = %q, %v; want the input, false", body, str, ok)
			}
		})
	}
}

func TestNewPatterns(t *testing.T) {
	tests := map[string]struct {
		secrets []string
		min     int
	}{
		"none":        {nil, 0},
		"empty":       {[]string{""}, 0},
		"token":       {[]string{token}, 20},
		"duplicates":  {[]string{token, token}, 20},
		"short":       {[]string{"ab"}, 1},
		"two secrets": {[]string{token, "other-secret"}, 35},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var secrets [][]byte
			for _, s := range tc.secrets {
				secrets = append(secrets, []byte(s))
			}
			s := New(secrets...)
			if got := s.Patterns(); got < tc.min || (tc.min == 0 && got != 0) {
				t.Fatalf("New(%q).Patterns() = %d, want at least %d", tc.secrets, got, tc.min)
			}
		})
	}
	if a, b := New([]byte(token)).Patterns(), New([]byte(token), []byte(token)).Patterns(); a != b {
		t.Fatalf("Patterns() = %d for one secret and %d for it twice, want equal", a, b)
	}
	for _, p := range forms([]byte("ab")) {
		if len(p) < minDerived && string(p) != "ab" {
			t.Fatalf("forms(%q) holds derived pattern %q shorter than %d", "ab", p, minDerived)
		}
	}
}

func TestScrubberConcurrent(t *testing.T) {
	s := New([]byte(token))
	body := []byte("a " + token + " b")
	done := make(chan string)
	for range 8 {
		go func() {
			got, _ := s.Bytes(body)
			done <- string(got)
		}()
	}
	for range 8 {
		if got := <-done; got != "a [REDACTED] b" {
			t.Fatalf("concurrent Bytes = %q, want %q", got, "a [REDACTED] b")
		}
	}
}

func jsonInner(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[1 : len(b)-1])
}

// benchBody returns n bytes of JSON-like text, the shape of a typical API
// response, that contains none of the benchmark secrets.
func benchBody(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"id", "title", "state", "open", "closed", "number", "user", "login", "url", "https://api.example.com/repos/acme/api/issues/", "labels", "bug", "comments", "created_at", "2026-01-02T03:04:05Z", "body", "The quick brown fox jumps over the lazy dog."}
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, `{"%s":"%s%d","%s":%d},`, words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(100000), words[r.IntN(len(words))], r.Int64())
	}
	return b.Bytes()[:n]
}

func BenchmarkScrub(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"4KiB", 4 << 10}, {"256KiB", 256 << 10}} {
		for _, count := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/%dsecrets", size.name, count), func(b *testing.B) {
				var secrets [][]byte
				for i := range count {
					secrets = append(secrets, []byte(fmt.Sprintf("ghp_%02dR4nd0mT0k3nV4lu3xYz0123456789", i)))
				}
				s := New(secrets...)
				body := benchBody(size.n)
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, ok := s.Bytes(body); ok {
						b.Fatal("benchmark body matched a secret")
					}
				}
			})
		}
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		New([]byte(token))
	}
}

// TestWipeFailsClosed: a wiped Scrubber keeps nothing of its secret —
// none of its forms' bytes — and withholds and reports every input, so a
// use after a cache dropped it cannot let a secret through.
func TestWipeFailsClosed(t *testing.T) {
	sc := New([]byte(token))
	forms := sc.m.forms
	sc.Wipe()
	for _, f := range forms {
		if bytes.ContainsFunc(f.b, func(r rune) bool { return r != 0 }) {
			t.Fatalf("after Wipe a form holds %d non-zero bytes, want none", len(f.b))
		}
	}
	for _, in := range []string{"", "nothing here", "x " + token + " y"} {
		if out, o := sc.Scrub([]byte(in)); o != Withheld || string(out) != Redacted {
			t.Errorf("wiped Scrub(%q) = %q, %v; want %q, withheld", in, out, o, Redacted)
		}
		if !sc.Contains([]byte(in)) {
			t.Errorf("wiped Contains(%q) = false, want true", in)
		}
	}
	sc.Wipe() // a second Wipe does nothing
}

// TestStringLeavesItsInputAlone: String and ContainsString read the
// string's bytes in place; scrubbing never writes to them.
func TestStringLeavesItsInputAlone(t *testing.T) {
	sc := New([]byte(token))
	for _, in := range []string{"x " + token + " y", "nothing", "a %" + strings.ToUpper(hex.EncodeToString([]byte(token)))} {
		heap := strings.Clone(in)
		out, _ := sc.String(heap)
		if heap != in {
			t.Fatalf("String(%q) changed its input to %q", in, heap)
		}
		if strings.Contains(out, token) || !sc.ContainsString(heap) && strings.Contains(in, token) {
			t.Fatalf("String(%q) = %q", in, out)
		}
	}
}
