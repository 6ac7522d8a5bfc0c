package tools

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// hostileList is an S3-compatible endpoint that answers every list with
// the same entries, in the order given, whatever max-keys, start-after or
// continuation-token asked, as issue 22's store did.
type hostileList struct {
	keys      []string // objects
	prefixes  []string // common prefixes
	truncated bool
	token     string // NextContinuationToken

	mu   sync.Mutex
	seen []url3
}

// url3 is what the hostile endpoint was asked.
type url3 struct{ prefix, maxKeys, startAfter, token string }

func (h *hostileList) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h.mu.Lock()
	h.seen = append(h.seen, url3{q.Get("prefix"), q.Get("max-keys"), q.Get("start-after"), q.Get("continuation-token")})
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/xml")
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>acme-archive</Name><KeyCount>%d</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>%v</IsTruncated>`, len(h.keys), h.truncated)
	if h.token != "" {
		fmt.Fprintf(&b, "<NextContinuationToken>%s</NextContinuationToken>", h.token)
	}
	for _, k := range h.keys {
		fmt.Fprintf(&b, `<Contents><Key>%s</Key><Size>1</Size><ETag>"d41d8cd98f00b204e9800998ecf8427e"</ETag><LastModified>2026-03-02T10:00:00.000Z</LastModified></Contents>`, xmlText(k))
	}
	for _, p := range h.prefixes {
		fmt.Fprintf(&b, "<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>", xmlText(p))
	}
	b.WriteString("</ListBucketResult>")
	w.Write([]byte(b.String()))
}

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (h *hostileList) requests() []url3 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

func newHostileList(t *testing.T, h *hostileList, maxKeys, maxBytes int) Tool {
	t.Helper()
	up := &sigv4Server{
		creds:   aws.Credentials{AccessKeyID: testAWSKeyID, SecretAccessKey: testAWSSecretKey, SessionToken: testAWSToken},
		service: "s3", region: "us-east-1", next: h,
	}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	cfg := s3TestConfig(srv.URL)
	cfg.MaxKeys = maxKeys
	cfg.Response.MaxBytes = maxBytes
	// Bounds on bytes and counts are under test, not deadlines: parsing
	// 15 MB of XML under -race on a busy machine takes seconds.
	cfg.Timeout = "5m"
	return compileS3Test(t, cfg)
}

// listPage runs one list call and checks the bounds every page keeps: at
// most maxKeys entries, and text and structured content each at most
// maxBytes. It returns the page.
func listPage(t *testing.T, tool Tool, args string, maxKeys, maxBytes int) S3ListResult {
	t.Helper()
	res, err := executeS3(t, tool, args, testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken))
	if err != nil {
		t.Fatalf("Execute(%.200s) = %v", args, err)
	}
	page := res.Structured.(S3ListResult)
	structured, err := json.Marshal(page)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(page.Objects) + len(page.CommonPrefixes); n > maxKeys {
		t.Fatalf("Execute(%.200s) returned %d entries, want at most %d", args, n, maxKeys)
	}
	if len(structured) > maxBytes || len(res.Text) > maxBytes {
		t.Fatalf("Execute(%.200s): structured content %d bytes, text %d bytes; want each at most response.max_bytes %d", args, len(structured), len(res.Text), maxBytes)
	}
	if page.Truncated != (page.NextContinuationToken != "") {
		t.Fatalf("Execute(%.200s): truncated %v with token %q", args, page.Truncated, page.NextContinuationToken)
	}
	return page
}

func listArgs(prefix, delimiter, token string, maxKeys int) string {
	m := map[string]any{"action": "list", "prefix": prefix}
	if delimiter != "" {
		m["delimiter"] = delimiter
	}
	if token != "" {
		m["continuation_token"] = token
	}
	if maxKeys > 0 {
		m["max_keys"] = maxKeys
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// pageAll lists every page and returns the entries in order (common
// prefixes marked with a trailing " (prefix)").
func pageAll(t *testing.T, tool Tool, prefix, delimiter string, askKeys, maxKeys, maxBytes int) (entries []string, pages int) {
	t.Helper()
	token := ""
	for pages = 1; ; pages++ {
		if pages > 10000 {
			t.Fatal("pagination does not end")
		}
		page := listPage(t, tool, listArgs(prefix, delimiter, token, askKeys), maxKeys, maxBytes)
		var got []string
		for _, o := range page.Objects {
			got = append(got, o.Key)
		}
		for _, p := range page.CommonPrefixes {
			got = append(got, p+" (prefix)")
		}
		slices.Sort(got)
		entries = append(entries, got...)
		if !page.Truncated {
			return entries, pages
		}
		token = page.NextContinuationToken
	}
}

// TestS3HostileListingIsBounded is issue 22's listing: a store that
// ignores max-keys answers 90,000 entries (14.9 MB of XML); with
// max_keys 5 and response.max_bytes 4096 the agent gets 5 entries in at
// most 4096 bytes, truncated, and the continuation goes on from there.
func TestS3HostileListingIsBounded(t *testing.T) {
	h := &hostileList{}
	for i := range 90000 {
		h.keys = append(h.keys, fmt.Sprintf("reports/2026/export-%06d.csv", i))
	}
	tool := newHostileList(t, h, 5, 4096)
	got := listPage(t, tool, listArgs("reports/2026/", "", "", 0), 5, 4096)
	var keys []string
	for _, o := range got.Objects {
		keys = append(keys, o.Key)
	}
	if !reflect.DeepEqual(keys, h.keys[:5]) || !got.Truncated {
		t.Fatalf("list = %q, truncated %v; want the first 5 keys %q, truncated", keys, got.Truncated, h.keys[:5])
	}
	// The continuation resumes after the last key returned. (Paging on
	// against such a store is TestS3ListCutsHostilePages, on smaller pages:
	// each page of this one costs seconds of XML parsing under -race.)
	at, ours, err := s3DecodeToken(got.NextContinuationToken)
	if err != nil || !ours || at != (s3Position{after: h.keys[4]}) {
		t.Fatalf("next_continuation_token %q = %+v, %v, %v; want keyhole's, after %q", got.NextContinuationToken, at, ours, err, h.keys[4])
	}
	if reqs := h.requests(); len(reqs) != 1 || reqs[0].maxKeys != "5" {
		t.Fatalf("upstream was asked %+v; want one list with max-keys 5", reqs)
	}
}

func TestS3ListCutsHostilePages(t *testing.T) {
	long := func(i int) string { return fmt.Sprintf("r/%03d-%s", i, strings.Repeat("x", 200)) }
	var longKeys []string
	for i := range 40 {
		longKeys = append(longKeys, long(i))
	}
	tests := map[string]struct {
		list      *hostileList
		maxKeys   int
		maxBytes  int
		askKeys   int
		delimiter string
		want      []string // every entry, across all pages
	}{
		"ignores max-keys": {
			list:    &hostileList{keys: []string{"r/a", "r/b", "r/c", "r/d", "r/e", "r/f", "r/g"}},
			maxKeys: 3, maxBytes: 4096,
			want: []string{"r/a", "r/b", "r/c", "r/d", "r/e", "r/f", "r/g"},
		},
		"the agent's smaller max_keys": {
			list:    &hostileList{keys: []string{"r/a", "r/b", "r/c", "r/d", "r/e"}},
			maxKeys: 1000, maxBytes: 4096, askKeys: 2,
			want: []string{"r/a", "r/b", "r/c", "r/d", "r/e"},
		},
		"cut by bytes": {
			list:    &hostileList{keys: longKeys},
			maxKeys: 1000, maxBytes: 2048,
			want: longKeys,
		},
		"out of order, repeated and outside the prefix": {
			list:    &hostileList{keys: []string{"r/e", "r/a", "private/payroll.csv", "r/c", "r/a", "r/b", "r/d", "q/x"}},
			maxKeys: 2, maxBytes: 4096,
			want: []string{"r/a", "r/b", "r/c", "r/d", "r/e"},
		},
		"common prefixes among the keys": {
			list:    &hostileList{keys: []string{"r/a", "r/c", "r/e"}, prefixes: []string{"r/b/", "r/d/", "private/"}},
			maxKeys: 2, maxBytes: 4096, delimiter: "/",
			want: []string{"r/a", "r/b/ (prefix)", "r/c", "r/d/ (prefix)", "r/e"},
		},
		"truncated without a token": {
			list:    &hostileList{keys: []string{"r/a", "r/b"}, truncated: true},
			maxKeys: 5, maxBytes: 4096,
			// Every page says truncated; the agent moves on past r/b and
			// then gets an empty page that ends the listing.
			want: []string{"r/a", "r/b"},
		},
		"a token too long to send back": {
			list:    &hostileList{keys: []string{"r/a", "r/b"}, truncated: true, token: strings.Repeat("t", 9000)},
			maxKeys: 5, maxBytes: 64 << 10,
			want: []string{"r/a", "r/b"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			tool := newHostileList(t, tt.list, tt.maxKeys, tt.maxBytes)
			limit := tt.maxKeys
			if tt.askKeys > 0 {
				limit = tt.askKeys
			}
			got, _ := pageAll(t, tool, "r/", tt.delimiter, tt.askKeys, limit, tt.maxBytes)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("all pages = %q, want %q", got, tt.want)
			}
			for _, r := range tt.list.requests() {
				if r.prefix != "r/" || strings.HasPrefix(r.token, s3TokenPrefix) || strings.HasPrefix(r.startAfter, s3TokenPrefix) {
					t.Fatalf("upstream was asked %+v: prefix r/ and never keyhole's own token", r)
				}
			}
		})
	}
}

func TestS3ListEntryLargerThanMaxBytes(t *testing.T) {
	h := &hostileList{keys: []string{"r/" + strings.Repeat("<", 1000)}}
	tool := newHostileList(t, h, 10, 4096) // the key is 6,000 bytes of JSON
	_, err := executeS3(t, tool, listArgs("r/", "", "", 0), testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken))
	var ee *ExecError
	if !errors.As(err, &ee) || !strings.Contains(ee.Msg, "does not fit in response.max_bytes (4096 bytes)") {
		t.Fatalf("Execute(list) = %v, want an ExecError saying the entry does not fit", err)
	}
}

// TestS3ListPagesCutByBytesAgainstGofakes3 pages a real S3 protocol
// server with pages cut by response.max_bytes, with and without a
// delimiter: every entry arrives once, in order, and every page is
// bounded.
func TestS3ListPagesCutByBytesAgainstGofakes3(t *testing.T) {
	fixture := map[string]s3TestObject{}
	var wantFlat []string
	for i := range 30 {
		for _, k := range []string{
			fmt.Sprintf("reports/2026/%02d-%s.csv", i, strings.Repeat("n", 40)),
			fmt.Sprintf("reports/2026/d%02d/a.csv", i),
			fmt.Sprintf("reports/2026/d%02d/b.csv", i),
		} {
			fixture[k] = s3TestObject{body: []byte("x"), contentType: "text/csv"}
			wantFlat = append(wantFlat, k)
		}
	}
	fixture["reports/2026-secret/payroll.csv"] = s3TestObject{body: []byte("x")}
	slices.Sort(wantFlat)
	var wantDelim []string
	for i := range 30 {
		wantDelim = append(wantDelim, fmt.Sprintf("reports/2026/%02d-%s.csv", i, strings.Repeat("n", 40)), fmt.Sprintf("reports/2026/d%02d/ (prefix)", i))
	}
	slices.Sort(wantDelim)

	up, srv := newS3Upstream(t, fixture)
	for name, tt := range map[string]struct {
		maxKeys, maxBytes, askKeys int
		delimiter                  string
		want                       []string
	}{
		"flat, cut by bytes":          {1000, 1500, 0, "", wantFlat},
		"flat, cut by max_keys":       {7, 1 << 20, 0, "", wantFlat},
		"delimiter, cut by bytes":     {1000, 700, 0, "/", wantDelim},
		"delimiter, cut by max_keys":  {4, 1 << 20, 0, "/", wantDelim},
		"delimiter, agent's max_keys": {1000, 1 << 20, 3, "/", wantDelim},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := s3TestConfig(srv.URL)
			cfg.MaxKeys, cfg.Response.MaxBytes = tt.maxKeys, tt.maxBytes
			tool := compileS3Test(t, cfg)
			limit := tt.maxKeys
			if tt.askKeys > 0 {
				limit = tt.askKeys
			}
			got, pages := pageAll(t, tool, "reports/2026/", tt.delimiter, tt.askKeys, limit, tt.maxBytes)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("all pages (%d) = %q\nwant %q", pages, got, tt.want)
			}
			if pages < 3 {
				t.Fatalf("%d pages; the test wants the listing cut several times", pages)
			}
		})
	}
	for _, r := range up.requests() {
		if r.Query.Get("prefix") != "reports/2026/" {
			t.Fatalf("upstream was asked prefix %q", r.Query.Get("prefix"))
		}
	}
}

func TestS3ListContinuationToken(t *testing.T) {
	tool := compileS3Test(t, s3TestConfig("http://127.0.0.1:9"))
	for name, at := range map[string]s3Position{
		"start-after":              {after: "reports/2026/é 01.csv"},
		"upstream token":           {after: "reports/2026/d01/", upstream: "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="},
		"upstream token, no entry": {upstream: "cmVwb3J0cy8yMDI2L2QwMS9hLmNzdg=="},
		"longest":                  {after: strings.Repeat("é", 512), upstream: strings.Repeat("t", s3MaxUpstreamToken)},
	} {
		tok := at.encode()
		if len(tok) > s3MaxTokenBytes {
			t.Fatalf("%s: token of %d bytes, longer than an agent may send back", name, len(tok))
		}
		call := prepareS3(t, tool, listArgs("reports/2026/", "", tok, 0))
		if call.s3.at != at || call.s3.token != "" || call.Request.Key != "reports/2026/" {
			t.Fatalf("%s: Prepare(list, keyhole token) = at %+v, token %q, request %v; want %+v, no token of the agent's, the prefix", name, call.s3.at, call.s3.token, call.Request, at)
		}
	}
	call := prepareS3(t, tool, listArgs("reports/2026/", "", "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=", 0))
	if call.s3.at != (s3Position{}) || call.s3.token != "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=" {
		t.Fatalf("Prepare(list, S3 token) = at %+v token %q; want the token passed on", call.s3.at, call.s3.token)
	}
	for name, tok := range map[string]string{
		"not base64":          s3TokenPrefix + "!!!",
		"empty":               s3TokenPrefix,
		"no position":         s3Position{}.encode(),
		"length past the end": s3TokenPrefix + "BWE",
		"invalid utf8 key":    s3Position{after: "\xff"}.encode(),
		"key too long":        s3Position{after: strings.Repeat("k", 1025)}.encode(),
		"upstream too long":   s3Position{upstream: strings.Repeat("t", s3MaxUpstreamToken+1)}.encode(),
		"control in upstream": s3Position{upstream: "a\nb"}.encode(),
	} {
		_, err := tool.Prepare(json.RawMessage(listArgs("reports/2026/", "", tok, 0)))
		var ae *ArgError
		if !errors.As(err, &ae) || !strings.Contains(ae.Msg, "continuation_token is not one keyhole issued") {
			t.Errorf("Prepare(list, %s token) = %v, want an ArgError", name, err)
		}
	}
}
