package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// s3Seen records the request paths an S3 endpoint received.
type s3Seen struct {
	mu    sync.Mutex
	paths []string
	next  http.Handler
}

func (s *s3Seen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.paths = append(s.paths, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	s.mu.Unlock()
	s.next.ServeHTTP(w, r)
}

func (s *s3Seen) seen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.paths, "\n")
}

// hostileS3 answers every list with the same n keys, whatever max-keys
// asked, as issue 22's store did.
func hostileS3(n int) http.Handler {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>acme-archive</Name><IsTruncated>false</IsTruncated>`)
	for i := range n {
		fmt.Fprintf(&b, `<Contents><Key>reports/2026/export-%06d.csv</Key><Size>1</Size><ETag>"d41d8cd98f00b204e9800998ecf8427e"</ETag><LastModified>2026-03-02T10:00:00.000Z</LastModified></Contents>`, i)
	}
	b.WriteString("</ListBucketResult>")
	body := b.Bytes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.Write(body)
	})
}

const s3E2EConfig = `version: 1
tools:
  archive:
    kind: s3
    bucket: acme-archive
    region: us-east-1
    endpoint: %s
    path_style: true
    allow_private_network: true
    credential: {secret: aws_archive_ro, inject: aws_sigv4}
  hostile:
    kind: s3
    bucket: acme-archive
    region: us-east-1
    endpoint: %s
    path_style: true
    allow_private_network: true
    credential: {secret: aws_archive_ro, inject: aws_sigv4}
    max_keys: 5
    response: {max_bytes: 4096}
    timeout: 5m
scopes:
  report:
    ttl: 1h
    grants:
      - {tool: archive, actions: [list, get, head], prefixes: [reports/2026]}
      - {tool: hostile, actions: [list], prefixes: [reports/2026]}
`

// TestS3PrefixAndListingBoundsThroughTheBinary drives `keyhole stdio` over
// a real MCP client against gofakes3 and a hostile S3-compatible store:
// issue 22's prefix grant reaches no sibling (item 1), and a listing that
// ignores max-keys reaches the agent bounded (item 2).
func TestS3PrefixAndListingBoundsThroughTheBinary(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("acme-archive"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"reports/2026", "reports/2026/01.csv", "reports/2026/q1/summary.txt", "reports/2026-secret/payroll.csv", "reports/20260/x.csv"} {
		body := "contents of " + k
		if _, err := backend.PutObject("acme-archive", k, map[string]string{"Content-Type": "text/plain"}, strings.NewReader(body), int64(len(body)), nil); err != nil {
			t.Fatal(err)
		}
	}
	fake := &s3Seen{next: gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0)).Server()}
	fakeSrv := httptest.NewServer(fake)
	defer fakeSrv.Close()
	hostile := &s3Seen{next: hostileS3(10000)}
	hostileSrv := httptest.NewServer(hostile)
	defer hostileSrv.Close()

	h := newHome(t)
	h.ok("", "init")
	h.ok(`{"access_key_id":"AKIAKEYHOLEE2ETEST01","secret_access_key":"e2e/Secret+Key/ForTheBinaryTest000000XY"}`, "secret", "set", "aws_archive_ro")
	if err := os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), fmt.Appendf(nil, s3E2EConfig, fakeSrv.URL, hostileSrv.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid := h.brokerPIDOrZero(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	// config check states what each prefix grants.
	r := h.ok("", "config", "check")
	if want := "archive: list reports/2026 (the key reports/2026 and every key under reports/2026/)"; !strings.Contains(r.stdout, want) {
		t.Fatalf("config check = %q, want it to say %q", r.stdout, want)
	}

	c := h.stdioClient(t, "--scope", "report") // the last --scope wins
	defer c.Close()

	type step struct {
		args    map[string]any
		allowed bool
		want    string // in the result's text
	}
	for _, s := range []step{
		{map[string]any{"action": "get", "key": "reports/2026-secret/payroll.csv"}, false, "get reports/2026-secret/payroll.csv is not granted to scope report"},
		{map[string]any{"action": "get", "key": "reports/20260/x.csv"}, false, "is not granted"},
		{map[string]any{"action": "head", "key": "reports/2026-secret/payroll.csv"}, false, "is not granted"},
		{map[string]any{"action": "list", "prefix": "reports/2026"}, false, `list "reports/2026/"`},
		{map[string]any{"action": "list", "prefix": "reports/20"}, false, "is not granted"},
		{map[string]any{"action": "get", "key": `reports/2026\..\2026-secret\payroll.csv`}, false, "backslash"},
		{map[string]any{"action": "get", "key": "reports/2026"}, true, "contents of reports/2026"},
		{map[string]any{"action": "get", "key": "reports/2026/01.csv"}, true, "contents of reports/2026/01.csv"},
		{map[string]any{"action": "list", "prefix": "reports/2026/"}, true, "reports/2026/q1/summary.txt"},
	} {
		res := servertest.CallTool(t, c, "archive", s.args)
		text := servertest.ResultText(res)
		if res.IsError == s.allowed || !strings.Contains(text, s.want) {
			t.Errorf("archive %v = error %v %q; want allowed %v with %q", s.args, res.IsError, text, s.allowed, s.want)
		}
		if strings.Contains(text, "contents of reports/2026-secret") || strings.Contains(text, "payroll.csv\",\"size") {
			t.Errorf("archive %v returned a sibling of the grant: %s", s.args, text)
		}
	}
	if seen := fake.seen(); strings.Contains(seen, "2026-secret") || strings.Contains(seen, "20260") || strings.Contains(seen, `\`) {
		t.Fatalf("the store was asked for a sibling of the grant:\n%s", seen)
	}

	// A store that ignores max-keys: 10,000 entries for max_keys 5.
	res := servertest.CallTool(t, c, "hostile", map[string]any{"action": "list", "prefix": "reports/2026/"})
	if res.IsError {
		t.Fatalf("hostile list = %s", servertest.ResultText(res))
	}
	text := servertest.ResultText(res)
	structured, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if len(text) > 4096 || len(structured) > 4096 {
		t.Fatalf("hostile list reached the agent as %d bytes of text and %d of structured content; want each at most response.max_bytes 4096", len(text), len(structured))
	}
	var page struct {
		Objects []struct {
			Key string `json:"key"`
		} `json:"objects"`
		Token     string `json:"next_continuation_token"`
		Truncated bool   `json:"truncated"`
	}
	if err := json.Unmarshal(structured, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Objects) != 5 || !page.Truncated || page.Token == "" || page.Objects[4].Key != "reports/2026/export-000004.csv" {
		t.Fatalf("hostile list = %s; want the first 5 keys, truncated, with a continuation", structured)
	}
	res = servertest.CallTool(t, c, "hostile", map[string]any{"action": "list", "prefix": "reports/2026/", "continuation_token": page.Token})
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &page); err != nil || res.IsError || len(page.Objects) != 5 || page.Objects[0].Key != "reports/2026/export-000005.csv" {
		t.Fatalf("next hostile page = %s (%v); want keys 5 to 9", servertest.ResultText(res), err)
	}
	if seen := hostile.seen(); !strings.Contains(seen, "max-keys=5") || !strings.Contains(seen, "start-after=reports%2F2026%2Fexport-000004.csv") {
		t.Fatalf("hostile store was asked:\n%s\nwant max-keys=5, then start-after the fifth key", seen)
	}

	// The audit names the bucket of every s3 call the tool could describe
	// (refused arguments never became a request).
	r = h.ok("", "audit", "tail", "-n", "100", "--json")
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var rec struct {
			Tool   string `json:"tool"`
			Action string `json:"action"`
			Bucket string `json:"bucket"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if rec.Action != "" {
			n++
			if rec.Bucket != "acme-archive" {
				t.Errorf("audit record %s has bucket %q, want acme-archive", line, rec.Bucket)
			}
		}
	}
	if n != 10 {
		t.Fatalf("audit has %d described s3 records, want 10:\n%s", n, r.stdout)
	}
}
