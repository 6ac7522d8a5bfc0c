package tools

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"go.yaml.in/yaml/v3"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// Test credentials: distinctive, so any leak in any encoding is findable.
const (
	testAWSKeyID     = "AKIAKEYHOLETEST7Q2Z9"
	testAWSSecretKey = "kH/s3cr3t+Acc3ssK3y/ForKeyholeTests0000XY"
	testAWSToken     = "IQoJb3JpZ2luX2VjEKH//keyhole+session/token0123456789abcdef=="
)

func testAWSSecret(t testing.TB, akid, secret, token string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"access_key_id": akid, "secret_access_key": secret, "session_token": token})
	if err != nil {
		t.Fatal(err)
	}
	if token == "" {
		b, _ = json.Marshal(map[string]string{"access_key_id": akid, "secret_access_key": secret})
	}
	return b
}

// sigv4Request is what the verifying server saw of one request.
type sigv4Request struct {
	Method string
	Path   string // decoded
	Query  url.Values
	Header http.Header
	Body   []byte
	Status int // what the verifier answered; 0 when passed on
}

// sigv4Server is an upstream that verifies every request's SigV4
// signature: it re-signs a clone of the request (the signed headers only,
// at the time of X-Amz-Date) with the expected credentials and compares the
// Authorization header, and checks that a hex payload hash is the SHA-256 of
// the body. A request that fails gets 403 SignatureDoesNotMatch; one that
// passes goes to next.
type sigv4Server struct {
	creds   aws.Credentials
	service string
	region  string
	next    http.Handler
	// deny, when set, answers 403 AccessDenied to requests it picks (after
	// the signature checked out), as a bucket policy would.
	deny func(*http.Request) bool

	mu   sync.Mutex
	reqs []sigv4Request
}

func (v *sigv4Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := sigv4Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body}
	if err := v.verify(r, body); err != nil {
		rec.Status = http.StatusForbidden
		v.record(rec)
		s3WriteError(w, r, http.StatusForbidden, "SignatureDoesNotMatch", err.Error())
		return
	}
	if v.deny != nil && v.deny(r) {
		rec.Status = http.StatusForbidden
		v.record(rec)
		s3WriteError(w, r, http.StatusForbidden, "AccessDenied", "Access Denied")
		return
	}
	v.record(rec)
	r.Body = io.NopCloser(bytes.NewReader(body))
	v.next.ServeHTTP(w, r)
}

func (v *sigv4Server) record(r sigv4Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reqs = append(v.reqs, r)
}

// requests returns what arrived so far.
func (v *sigv4Server) requests() []sigv4Request {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]sigv4Request(nil), v.reqs...)
}

func s3WriteError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
	}
}

func (v *sigv4Server) verify(r *http.Request, body []byte) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return errors.New("not a SigV4 Authorization header")
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ", ") {
		k, val, _ := strings.Cut(part, "=")
		fields[k] = val
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[0] != v.creds.AccessKeyID || scope[2] != v.region || scope[3] != v.service {
		return errors.New("credential scope does not match")
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return errors.New("bad X-Amz-Date")
	}
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if payloadHash == "" {
		return errors.New("no X-Amz-Content-Sha256")
	}
	if payloadHash != "UNSIGNED-PAYLOAD" {
		sum := sha256.Sum256(body)
		if payloadHash != hex.EncodeToString(sum[:]) {
			return errors.New("payload hash does not match the body")
		}
	}
	u := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	clone, err := http.NewRequest(r.Method, u.String(), nil)
	if err != nil {
		return err
	}
	clone.URL = u
	clone.Host = r.Host
	for h := range strings.SplitSeq(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			clone.ContentLength = r.ContentLength
		default:
			clone.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = v.service == "s3" })
	if err := signer.SignHTTP(context.Background(), v.creds, clone, payloadHash, v.service, v.region, when); err != nil {
		return err
	}
	if got := clone.Header.Get("Authorization"); got != auth {
		return errors.New("signature does not match")
	}
	return nil
}

// s3TestBucket is the bucket every s3 test tool names.
const s3TestBucket = "acme-archive"

// newS3Upstream starts gofakes3 behind the verifying server, with the test
// credentials (and session token), and seeds the bucket.
func newS3Upstream(t *testing.T, objects map[string]s3TestObject) (*sigv4Server, *httptest.Server) {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(s3TestBucket); err != nil {
		t.Fatal(err)
	}
	for key, o := range objects {
		meta := map[string]string{"Last-Modified": "Mon, 02 Mar 2026 10:00:00 GMT"}
		if o.contentType != "" {
			meta["Content-Type"] = o.contentType
		}
		for k, v := range o.meta {
			meta[k] = v
		}
		if _, err := backend.PutObject(s3TestBucket, key, meta, bytes.NewReader(o.body), int64(len(o.body)), nil); err != nil {
			t.Fatal(err)
		}
	}
	faker := gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0))
	v := &sigv4Server{
		creds:   aws.Credentials{AccessKeyID: testAWSKeyID, SecretAccessKey: testAWSSecretKey, SessionToken: testAWSToken},
		service: "s3",
		region:  "us-east-1",
		next:    faker.Server(),
	}
	srv := httptest.NewServer(v)
	t.Cleanup(srv.Close)
	return v, srv
}

type s3TestObject struct {
	body        []byte
	contentType string
	meta        map[string]string
}

// s3TestConfig is an s3 tool on the test server.
func s3TestConfig(endpoint string) Config {
	return Config{
		Kind:                "s3",
		Bucket:              s3TestBucket,
		Region:              "us-east-1",
		Endpoint:            endpoint,
		PathStyle:           true,
		AllowPrivateNetwork: true,
		Credential:          Credential{Secret: "aws_archive_ro", Inject: "aws_sigv4"},
		Timeout:             "5s",
	}
}

func compileS3Test(t testing.TB, c Config) Tool {
	t.Helper()
	tool, errs := Compile("archive_bucket", c, Env{})
	if len(errs) > 0 {
		t.Fatalf("Compile(archive_bucket) = %v", errs)
	}
	return tool
}

// assertNoAWSSecret fails if s holds any form of a test key value.
func assertNoAWSSecret(t *testing.T, where, s string) {
	t.Helper()
	servertest.AssertNoSecret(t, where, s, testAWSKeyID, testAWSSecretKey, testAWSToken)
}

// s3AgentBytes is everything of an Execute outcome the agent or the audit
// could see.
func s3AgentBytes(t *testing.T, res *Result, err error) string {
	t.Helper()
	var b strings.Builder
	if res != nil {
		js, jerr := json.Marshal(res.Structured)
		if jerr != nil {
			t.Fatal(jerr)
		}
		b.Write(js)
		b.WriteString(res.Text)
	}
	if err != nil {
		b.WriteString(err.Error())
		var ee *ExecError
		if errors.As(err, &ee) {
			b.WriteString(ee.Msg + ee.Detail)
		}
	}
	return b.String()
}

func prepareS3(t *testing.T, tool Tool, args string) *Call {
	t.Helper()
	call, err := tool.Prepare(json.RawMessage(args))
	if err != nil {
		t.Fatalf("Prepare(%s) = %v", args, err)
	}
	return call
}

func executeS3(t *testing.T, tool Tool, args string, secret []byte) (*Result, error) {
	t.Helper()
	res, err := tool.Execute(context.Background(), prepareS3(t, tool, args), secret, execEnv(tool, secret))
	assertNoAWSSecret(t, "Execute("+args+")", s3AgentBytes(t, res, err))
	return res, err
}

var s3Fixture = map[string]s3TestObject{
	"reports/2026/01.csv":          {body: []byte("month,total\n01,100\n"), contentType: "text/csv"},
	"reports/2026/02.csv":          {body: []byte("month,total\n02,200\n"), contentType: "text/csv"},
	"reports/2026/03.csv":          {body: []byte("month,total\n03,300\n"), contentType: "text/csv"},
	"reports/2026/q1/summary.txt":  {body: []byte("Q1 was fine.\n"), contentType: "text/plain", meta: map[string]string{"X-Amz-Meta-Owner": "finance"}},
	"reports/2026/q2/summary.txt":  {body: []byte("Q2 was better.\n"), contentType: "text/plain"},
	"reports/2026/logo.png":        {body: []byte{0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe}, contentType: "image/png"},
	"reports/2026/big.txt":         {body: []byte(strings.Repeat("é", 100)), contentType: "text/plain"},
	"reports/2026/leak.txt":        {body: []byte("debug dump: secret=" + testAWSSecretKey + " id=" + testAWSKeyID), contentType: "text/plain"},
	"reports/2025/12.csv":          {body: []byte("month,total\n12,1\n"), contentType: "text/csv"},
	"private/payroll.csv":          {body: []byte("name,salary\n"), contentType: "text/csv"},
	"reports/2026/with space ü.md": {body: []byte("# odd key\n"), contentType: "text/markdown"},
}

func TestS3ListInsidePrefix(t *testing.T) {
	up, srv := newS3Upstream(t, s3Fixture)
	tool := compileS3Test(t, s3TestConfig(srv.URL))
	secret := testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken)

	res, err := executeS3(t, tool, `{"action":"list","prefix":"reports/2026/","delimiter":"/"}`, secret)
	if err != nil {
		t.Fatalf("Execute(list reports/2026/) = %v", err)
	}
	got := res.Structured.(S3ListResult)
	var keys []string
	for _, o := range got.Objects {
		keys = append(keys, o.Key)
		if _, err := time.Parse(time.RFC3339, o.LastModified); err != nil || o.ETag == "" {
			t.Errorf("object %s: last_modified %q etag %q, want an RFC 3339 time and an etag", o.Key, o.LastModified, o.ETag)
		}
	}
	wantKeys := []string{"reports/2026/01.csv", "reports/2026/02.csv", "reports/2026/03.csv", "reports/2026/big.txt", "reports/2026/leak.txt", "reports/2026/logo.png", "reports/2026/with space ü.md"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("list keys = %q, want %q", keys, wantKeys)
	}
	if want := []string{"reports/2026/q1/", "reports/2026/q2/"}; !reflect.DeepEqual(got.CommonPrefixes, want) {
		t.Errorf("common_prefixes = %q, want %q", got.CommonPrefixes, want)
	}
	if got.Objects[0].Size != int64(len("month,total\n01,100\n")) {
		t.Errorf("size of %s = %d", got.Objects[0].Key, got.Objects[0].Size)
	}
	if got.Truncated || got.NextContinuationToken != "" || res.Status != 200 {
		t.Errorf("truncated %v token %q status %d, want false, none, 200", got.Truncated, got.NextContinuationToken, res.Status)
	}
	var fromText S3ListResult
	if err := json.Unmarshal([]byte(res.Text), &fromText); err != nil || !reflect.DeepEqual(fromText, got) {
		t.Errorf("Text = %s, want the structured result as JSON (%v)", res.Text, err)
	}

	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != "GET" || r.Path != "/"+s3TestBucket || r.Query.Get("list-type") != "2" || r.Query.Get("prefix") != "reports/2026/" || r.Query.Get("delimiter") != "/" || r.Query.Get("max-keys") != "1000" {
		t.Errorf("upstream got %s %s ?%s, want GET /%s with list-type=2, prefix, delimiter, max-keys=1000", r.Method, r.Path, r.Query.Encode(), s3TestBucket)
	}
	if got := r.Header.Get("X-Amz-Security-Token"); got != testAWSToken {
		t.Errorf("X-Amz-Security-Token = %q, want the session token", got)
	}
	if !strings.Contains(r.Header.Get("Authorization"), "x-amz-security-token") {
		t.Errorf("the session token header is not signed: %s", r.Header.Get("Authorization"))
	}
}

func TestS3ListPagination(t *testing.T) {
	up, srv := newS3Upstream(t, s3Fixture)
	up.creds.SessionToken = "" // long-term keys: no token is sent
	cfg := s3TestConfig(srv.URL)
	cfg.MaxKeys = 3
	tool := compileS3Test(t, cfg)
	secret := testAWSSecret(t, testAWSKeyID, testAWSSecretKey, "")

	var all []string
	token := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		args := `{"action":"list","prefix":"reports/2026/","max_keys":50}`
		if token != "" {
			args = fmt.Sprintf(`{"action":"list","prefix":"reports/2026/","max_keys":50,"continuation_token":%q}`, token)
		}
		res, err := executeS3(t, tool, args, secret)
		if err != nil {
			t.Fatalf("Execute(list page %d) = %v", page, err)
		}
		got := res.Structured.(S3ListResult)
		if len(got.Objects) > 3 {
			t.Errorf("page %d has %d objects, want at most the tool's max_keys 3", page, len(got.Objects))
		}
		for _, o := range got.Objects {
			all = append(all, o.Key)
		}
		if got.Truncated != (got.NextContinuationToken != "") {
			t.Errorf("page %d: truncated %v with token %q", page, got.Truncated, got.NextContinuationToken)
		}
		if !got.Truncated {
			break
		}
		token = got.NextContinuationToken
	}
	var want []string
	for k := range s3Fixture {
		if strings.HasPrefix(k, "reports/2026/") {
			want = append(want, k)
		}
	}
	sort.Strings(want)
	if !reflect.DeepEqual(all, want) {
		t.Errorf("all pages = %q, want %q", all, want)
	}
	for i, r := range up.requests() {
		if r.Query.Get("max-keys") != "3" {
			t.Errorf("request %d: max-keys=%q, want the cap 3", i, r.Query.Get("max-keys"))
		}
		if i > 0 && r.Query.Get("continuation-token") == "" {
			t.Errorf("request %d carries no continuation-token", i)
		}
		if r.Header.Get("X-Amz-Security-Token") != "" {
			t.Errorf("request %d sends a session token the secret does not have", i)
		}
	}

	// A smaller max_keys than the tool's is honoured.
	res, err := executeS3(t, tool, `{"action":"list","prefix":"reports/","max_keys":1}`, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Structured.(S3ListResult); len(got.Objects) != 1 || !got.Truncated {
		t.Errorf("list max_keys 1 = %d objects, truncated %v; want 1, true", len(got.Objects), got.Truncated)
	}
}

func TestS3GetAndHead(t *testing.T) {
	_, srv := newS3Upstream(t, s3Fixture)
	cfg := s3TestConfig(srv.URL)
	cfg.Response.MaxBytes = 51 // big.txt is 100 × "é" (200 bytes): the cut falls inside a character
	tool := compileS3Test(t, cfg)
	secret := testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken)
	png := s3Fixture["reports/2026/logo.png"].body
	str := func(s string) *string { return &s }

	tests := map[string]struct {
		args      string
		want      S3ObjectResult
		truncated bool
	}{
		"get text": {
			args: `{"action":"get","key":"reports/2026/01.csv"}`,
			want: S3ObjectResult{Key: "reports/2026/01.csv", Size: 19, ContentType: "text/csv", Encoding: "text", Body: str("month,total\n01,100\n")},
		},
		"get binary as base64 with its content type": {
			args: `{"action":"get","key":"reports/2026/logo.png"}`,
			want: S3ObjectResult{Key: "reports/2026/logo.png", Size: int64(len(png)), ContentType: "image/png", Encoding: "base64", Body: str(base64.StdEncoding.EncodeToString(png))},
		},
		"get capped at max_bytes on a character boundary": {
			args:      `{"action":"get","key":"reports/2026/big.txt"}`,
			want:      S3ObjectResult{Key: "reports/2026/big.txt", Size: 200, ContentType: "text/plain", Encoding: "text", Body: str(strings.Repeat("é", 25)), Truncated: true},
			truncated: true,
		},
		"get of a key with a space and non-ASCII": {
			args: `{"action":"get","key":"reports/2026/with space ü.md"}`,
			want: S3ObjectResult{Key: "reports/2026/with space ü.md", Size: 10, ContentType: "text/markdown", Encoding: "text", Body: str("# odd key\n")},
		},
		"head": {
			args: `{"action":"head","key":"reports/2026/q1/summary.txt"}`,
			want: S3ObjectResult{Key: "reports/2026/q1/summary.txt", Size: 13, ContentType: "text/plain", Metadata: map[string]string{"owner": "finance"}},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := executeS3(t, tool, tt.args, secret)
			if err != nil {
				t.Fatalf("Execute(%s) = %v", tt.args, err)
			}
			got := res.Structured.(S3ObjectResult)
			if got.ETag == "" || got.LastModified != "2026-03-02T10:00:00Z" {
				t.Errorf("etag %q last_modified %q, want set", got.ETag, got.LastModified)
			}
			got.ETag, got.LastModified = "", ""
			if !reflect.DeepEqual(got, tt.want) {
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(tt.want)
				t.Errorf("Execute(%s) = %s, want %s", tt.args, gj, wj)
			}
			if res.Truncated != tt.truncated {
				t.Errorf("Result.Truncated = %v, want %v", res.Truncated, tt.truncated)
			}
		})
	}
}

func TestS3ScrubsKeysFromObjects(t *testing.T) {
	_, srv := newS3Upstream(t, s3Fixture)
	tool := compileS3Test(t, s3TestConfig(srv.URL))
	res, err := executeS3(t, tool, `{"action":"get","key":"reports/2026/leak.txt"}`, testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Scrubbed {
		t.Error("Result.Scrubbed = false for an object holding the secret key")
	}
	if body := *res.Structured.(S3ObjectResult).Body; !strings.Contains(body, "debug dump: secret=") {
		t.Errorf("body = %q, want the object with the key values removed", body)
	}
}

func TestS3Errors(t *testing.T) {
	up, srv := newS3Upstream(t, s3Fixture)
	up.deny = func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/private/") }
	tool := compileS3Test(t, s3TestConfig(srv.URL))
	good := testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken)

	tests := map[string]struct {
		args    string
		secret  []byte
		wantMsg string
	}{
		"get of a missing key":  {`{"action":"get","key":"reports/2026/nope.csv"}`, good, "no such key"},
		"head of a missing key": {`{"action":"head","key":"reports/2026/nope.csv"}`, good, "no such key"},
		"access denied":         {`{"action":"get","key":"private/payroll.csv"}`, good, "upstream denied access"},
		"wrong secret key": {
			`{"action":"get","key":"reports/2026/01.csv"}`,
			testAWSSecret(t, testAWSKeyID, "wrong"+testAWSSecretKey[5:], testAWSToken),
			"upstream denied access (SignatureDoesNotMatch)",
		},
		"wrong secret on head (no error body)": {
			`{"action":"head","key":"reports/2026/01.csv"}`,
			testAWSSecret(t, testAWSKeyID, "wrong"+testAWSSecretKey[5:], testAWSToken),
			"upstream denied access",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := executeS3(t, tool, tt.args, tt.secret)
			var ee *ExecError
			if !errors.As(err, &ee) {
				t.Fatalf("Execute(%s) = %v, %v; want an *ExecError", tt.args, res, err)
			}
			if ee.Msg != tt.wantMsg {
				t.Errorf("Execute(%s).Msg = %q, want %q", tt.args, ee.Msg, tt.wantMsg)
			}
			if ee.Detail == "" || strings.Contains(ee.Msg, "127.0.0.1") {
				t.Errorf("Execute(%s): Detail %q (want set), Msg %q (want no address)", tt.args, ee.Detail, ee.Msg)
			}
		})
	}
}

func TestS3MalformedSecret(t *testing.T) {
	up, srv := newS3Upstream(t, s3Fixture)
	tool := compileS3Test(t, s3TestConfig(srv.URL))
	tests := map[string][]byte{
		"not JSON":           []byte(testAWSSecretKey),
		"raw pair":           []byte(testAWSKeyID + ":" + testAWSSecretKey),
		"missing secret key": []byte(`{"access_key_id":"` + testAWSKeyID + `"}`),
		"wrong field names":  []byte(`{"AccessKeyId":"` + testAWSKeyID + `","SecretAccessKey":"` + testAWSSecretKey + `"}`),
		"truncated JSON":     []byte(`{"access_key_id":"` + testAWSKeyID + `","secret_access_key":"` + testAWSSecretKey),
	}
	for name, secret := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := executeS3(t, tool, `{"action":"list","prefix":"reports/2026/"}`, secret)
			var ee *ExecError
			if !errors.As(err, &ee) {
				t.Fatalf("Execute with a malformed secret = %v, %v; want an *ExecError", res, err)
			}
			if !strings.Contains(ee.Msg, "credential of tool archive_bucket is malformed") || !strings.Contains(ee.Detail, "aws_sigv4 secret must be JSON") {
				t.Errorf("Execute: Msg %q Detail %q, want a clear malformed-credential error", ee.Msg, ee.Detail)
			}
		})
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream got %d requests with a malformed secret, want 0", n)
	}
}

func TestS3PrepareRefuses(t *testing.T) {
	up, srv := newS3Upstream(t, s3Fixture)
	tool := compileS3Test(t, s3TestConfig(srv.URL))
	tests := map[string]struct {
		args    string
		wantMsg string // a substring of the ArgError
	}{
		"bucket in arguments":              {`{"action":"list","bucket":"prod-db-backups"}`, "additionalProperties 'bucket' not allowed"},
		"delete action":                    {`{"action":"delete","key":"reports/2026/01.csv"}`, `value must be one of "list", "get", "head"`},
		"put action":                       {`{"action":"put","key":"reports/2026/x","body":"x"}`, `value must be one of`},
		"no action":                        {`{"prefix":"reports/"}`, "missing properties: 'action'"},
		"get without key":                  {`{"action":"get"}`, "missing properties: 'key'"},
		"empty key":                        {`{"action":"get","key":""}`, "length must be >= 1"},
		"key for list":                     {`{"action":"list","key":"reports/"}`, `"key" applies to get and head`},
		"prefix for get":                   {`{"action":"get","key":"a","prefix":"b"}`, `"prefix" applies to list only`},
		"newline in key":                   {`{"action":"get","key":"reports/2026/a\nb"}`, "key contains a control character"},
		"NUL in key":                       {`{"action":"head","key":"reports/2026/a\u0000"}`, "key contains a control character"},
		"CR in prefix":                     {`{"action":"list","prefix":"reports/\r2026/"}`, "prefix contains a control character"},
		"C1 control in key":                {`{"action":"get","key":"reports/\u0085x"}`, "key contains a control character"},
		"DEL in delimiter":                 {`{"action":"list","delimiter":"\u007f"}`, "delimiter contains a control character"},
		"control in token":                 {`{"action":"list","continuation_token":"a\tb"}`, "continuation_token contains a control character"},
		"lone surrogate in key":            {`{"action":"get","key":"reports/\ud800"}`, "key is not valid UTF-8"},
		"dot-dot segment":                  {`{"action":"get","key":"reports/2026/../secret"}`, `"." or ".." segment`},
		"dot segment":                      {`{"action":"get","key":"reports/2026/./a"}`, `"." or ".." segment`},
		"leading dot-dot":                  {`{"action":"get","key":"../a"}`, `"." or ".." segment`},
		"dot-dot prefix":                   {`{"action":"list","prefix":"reports/2026/.."}`, `"." or ".." segment`},
		"backslash traversal in key":       {`{"action":"get","key":"reports/2026\\..\\..\\private/payroll.csv"}`, "key contains a backslash"},
		"backslash in key":                 {`{"action":"get","key":"reports/2026/a\\b.csv"}`, "key contains a backslash"},
		"backslash in head key":            {`{"action":"head","key":"reports\\2026/01.csv"}`, "key contains a backslash"},
		"backslash in prefix":              {`{"action":"list","prefix":"reports/2026\\"}`, "prefix contains a backslash"},
		"escaped backslash in prefix":      {`{"action":"list","prefix":"reports/\u005c2026/"}`, "prefix contains a backslash"},
		"key too long":                     {`{"action":"get","key":"` + strings.Repeat("é", 600) + `"}`, "longer than 1024 bytes"},
		"max_keys zero":                    {`{"action":"list","max_keys":0}`, "must be >= 1"},
		"max_keys not an integer":          {`{"action":"list","max_keys":1.5}`, "expected integer"},
		"prefix not a string":              {`{"action":"list","prefix":["a"]}`, "expected string"},
		"duplicate key argument":           {`{"action":"get","key":"reports/2026/01.csv","key":"private/payroll.csv"}`, "appears more than once"},
		"case-folded name":                 {`{"action":"get","KEY":"private/payroll.csv","key":"reports/a"}`, "additionalProperties 'KEY' not allowed"},
		"not an object":                    {`["list"]`, "must be a JSON object"},
		"trailing data":                    {`{"action":"list"} {"action":"get"}`, "data after the JSON object"},
		"invalid JSON":                     {`{"action":"list",}`, "not valid JSON"},
		"empty arguments":                  {``, "missing properties: 'action'"},
		"larger than 1 MiB":                {`{"action":"list","prefix":"` + strings.Repeat("a", 1<<20) + `"}`, "larger than 1 MiB"},
		"invalid UTF-8 bytes in arguments": {"{\"action\":\"get\",\"key\":\"a\xffb\"}", "not valid UTF-8"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			call, err := tool.Prepare(json.RawMessage(tt.args))
			var ae *ArgError
			if !errors.As(err, &ae) {
				t.Fatalf("Prepare(%.80q) = %+v, %v; want an *ArgError", tt.args, call, err)
			}
			if !strings.Contains(ae.Msg, tt.wantMsg) {
				t.Errorf("Prepare(%.80q) = %q, want it to say %q", tt.args, ae.Msg, tt.wantMsg)
			}
			if strings.ContainsAny(ae.Msg, "\n\r\x00") {
				t.Errorf("Prepare(%.80q) error holds a control byte: %q", tt.args, ae.Msg)
			}
		})
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream got %d requests from refused arguments, want 0", n)
	}
}

func TestS3PrepareRequest(t *testing.T) {
	tool := compileS3Test(t, s3TestConfig("http://127.0.0.1:9"))
	tests := map[string]struct {
		args string
		want policy.Request
	}{
		"list with prefix":     {`{"action":"list","prefix":"reports/2026/"}`, policy.Request{Tool: "archive_bucket", Action: "list", Key: "reports/2026/"}},
		"list of the bucket":   {`{"action":"list"}`, policy.Request{Tool: "archive_bucket", Action: "list", Key: ""}},
		"get":                  {`{"action":"get","key":"reports/2026/01.csv"}`, policy.Request{Tool: "archive_bucket", Action: "get", Key: "reports/2026/01.csv"}},
		"head":                 {`{"action":"head","key":"reports/2026/01.csv"}`, policy.Request{Tool: "archive_bucket", Action: "head", Key: "reports/2026/01.csv"}},
		"key bytes kept exact": {`{"action":"get","key":"reports//2026/Ａ.csv"}`, policy.Request{Tool: "archive_bucket", Action: "get", Key: "reports//2026/Ａ.csv"}},
		"dots inside a name":   {`{"action":"get","key":"reports/2026/..hidden/a..b"}`, policy.Request{Tool: "archive_bucket", Action: "get", Key: "reports/2026/..hidden/a..b"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			call := prepareS3(t, tool, tt.args)
			if !reflect.DeepEqual(call.Request, tt.want) {
				t.Errorf("Prepare(%s).Request = %#v, want %#v", tt.args, call.Request, tt.want)
			}
			if string(call.Args) != tt.args {
				t.Errorf("Prepare(%s).Args = %s", tt.args, call.Args)
			}
		})
	}
}

func TestS3EgressRefusedWithoutPrivateNetwork(t *testing.T) {
	up, srv := newS3Upstream(t, s3Fixture)
	cfg := s3TestConfig(srv.URL)
	cfg.AllowPrivateNetwork = false
	cfg.AllowInsecureHTTP = true
	tool := compileS3Test(t, cfg)
	_, err := executeS3(t, tool, `{"action":"list","prefix":"reports/"}`, testAWSSecret(t, testAWSKeyID, testAWSSecretKey, ""))
	var ee *ExecError
	if !errors.As(err, &ee) || ee.Msg != "the upstream address is refused by the tool's network policy" {
		t.Fatalf("Execute against loopback without allow_private_network = %v, want the egress refusal", err)
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream got %d requests, want 0", n)
	}
}

func TestS3IgnoresAWSEnvironment(t *testing.T) {
	up, srv := newS3Upstream(t, s3Fixture)
	t.Setenv("AWS_ENDPOINT_URL", "http://169.254.169.254")
	t.Setenv("AWS_ENDPOINT_URL_S3", "http://169.254.169.254")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY00")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
	t.Setenv("AWS_REGION", "eu-central-1")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	tool := compileS3Test(t, s3TestConfig(srv.URL))
	if _, err := executeS3(t, tool, `{"action":"head","key":"reports/2026/01.csv"}`, testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken)); err != nil {
		t.Fatalf("Execute(head) with AWS_* set = %v, want the tool's own endpoint and keys", err)
	}
	if n := len(up.requests()); n != 1 {
		t.Errorf("upstream got %d requests, want 1", n)
	}
}

func TestS3Compile(t *testing.T) {
	base := s3TestConfig("")
	base.AllowPrivateNetwork = false
	tests := map[string]struct {
		edit  func(*Config)
		paths []string // the FieldError paths, in order
	}{
		"minimal AWS tool": {func(c *Config) {}, nil},
		"endpoint over https with path style": {func(c *Config) {
			c.Endpoint, c.PathStyle = "https://minio.internal:9000", true
		}, nil},
		"R2 with auto region": {func(c *Config) {
			c.Endpoint, c.Region = "https://0123abcd.r2.cloudflarestorage.com/", "auto"
		}, nil},
		"everything missing": {func(c *Config) { *c = Config{Kind: "s3"} }, []string{
			"tools.t.bucket", "tools.t.region", "tools.t.credential.inject", "tools.t.credential.secret",
		}},
		"http-only fields": {func(c *Config) {
			c.BaseURL, c.Method, c.Path, c.FollowRedirects = "https://x", "GET", "/a", "same_origin"
			c.InputSchema = map[string]any{"type": "object"}
			c.AWS = &AWS{Service: "s3", Region: "us-east-1"}
			c.Response.Fields = []string{"a"}
			c.Credential.Header = "X-Key"
		}, []string{
			"tools.t.base_url", "tools.t.method", "tools.t.path", "tools.t.input_schema",
			"tools.t.follow_redirects", "tools.t.aws", "tools.t.response.fields", "tools.t.credential.header",
		}},
		"bearer inject":                   {func(c *Config) { c.Credential.Inject = "bearer" }, []string{"tools.t.credential.inject"}},
		"bad secret name":                 {func(c *Config) { c.Credential.Secret = "AWS Key" }, []string{"tools.t.credential.secret"}},
		"bucket with upper case":          {func(c *Config) { c.Bucket = "Acme-Archive" }, []string{"tools.t.bucket"}},
		"bucket too short":                {func(c *Config) { c.Bucket = "ab" }, []string{"tools.t.bucket"}},
		"bucket as IP":                    {func(c *Config) { c.Bucket = "192.168.1.1" }, []string{"tools.t.bucket"}},
		"bucket with ..":                  {func(c *Config) { c.Bucket = "acme..archive" }, []string{"tools.t.bucket"}},
		"bucket ending in -":              {func(c *Config) { c.Bucket = "acme-" }, []string{"tools.t.bucket"}},
		"bucket with a slash":             {func(c *Config) { c.Bucket = "acme/archive" }, []string{"tools.t.bucket"}},
		"bucket xn--":                     {func(c *Config) { c.Bucket = "xn--acme" }, []string{"tools.t.bucket"}},
		"bucket -s3alias":                 {func(c *Config) { c.Bucket = "acme-s3alias" }, []string{"tools.t.bucket"}},
		"region with a dot":               {func(c *Config) { c.Region = "us-east-1.evil.com" }, []string{"tools.t.region"}},
		"endpoint with userinfo":          {func(c *Config) { c.Endpoint = "https://user:pw@minio.internal" }, []string{"tools.t.endpoint"}},
		"endpoint with query":             {func(c *Config) { c.Endpoint = "https://minio.internal/?x=1" }, []string{"tools.t.endpoint"}},
		"endpoint with fragment":          {func(c *Config) { c.Endpoint = "https://minio.internal/#x" }, []string{"tools.t.endpoint"}},
		"endpoint with path":              {func(c *Config) { c.Endpoint = "https://minio.internal/s3" }, []string{"tools.t.endpoint"}},
		"endpoint relative":               {func(c *Config) { c.Endpoint = "minio.internal:9000" }, []string{"tools.t.endpoint"}},
		"endpoint ftp":                    {func(c *Config) { c.Endpoint = "ftp://minio.internal" }, []string{"tools.t.endpoint"}},
		"endpoint http without allowance": {func(c *Config) { c.Endpoint = "http://minio.internal" }, []string{"tools.t.endpoint"}},
		"endpoint http with allow_insecure_http": {func(c *Config) {
			c.Endpoint, c.AllowInsecureHTTP = "http://minio.internal", true
		}, nil},
		"max_keys too large":  {func(c *Config) { c.MaxKeys = 1001 }, []string{"tools.t.max_keys"}},
		"max_keys negative":   {func(c *Config) { c.MaxKeys = -1 }, []string{"tools.t.max_keys"}},
		"max_bytes negative":  {func(c *Config) { c.Response.MaxBytes = -1 }, []string{"tools.t.response.max_bytes"}},
		"bad timeout":         {func(c *Config) { c.Timeout = "soon" }, []string{"tools.t.timeout"}},
		"zero timeout":        {func(c *Config) { c.Timeout = "0s" }, []string{"tools.t.timeout"}},
		"missing ca_file":     {func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, []string{"tools.t.ca_file"}},
		"proxy with userinfo": {func(c *Config) { c.Proxy = "http://u:p@proxy:3128" }, []string{"tools.t.proxy"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			tool, errs := Compile("t", c, Env{})
			var paths []string
			for _, err := range errs {
				var fe *policy.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("Compile error %v is not a *policy.FieldError", err)
				}
				paths = append(paths, fe.Path)
			}
			if !reflect.DeepEqual(paths, tt.paths) {
				t.Errorf("Compile(%s) error paths = %q (%v), want %q", name, paths, errs, tt.paths)
			}
			if (tool == nil) != (len(tt.paths) > 0) {
				t.Errorf("Compile(%s) tool = %v with %d errors", name, tool, len(errs))
			}
		})
	}
}

func TestS3ToolDescribesItself(t *testing.T) {
	tool := compileS3Test(t, s3TestConfig("http://127.0.0.1:9"))
	if tool.Name() != "archive_bucket" || tool.Kind() != "s3" || tool.SecretName() != "aws_archive_ro" {
		t.Errorf("Name, Kind, SecretName = %q, %q, %q", tool.Name(), tool.Kind(), tool.SecretName())
	}
	if tool.Info() != (policy.ToolInfo{Kind: "s3", Bucket: s3TestBucket}) {
		t.Errorf("Info() = %+v, want {Kind: s3, Bucket: %s}: the audit records the bucket", tool.Info(), s3TestBucket)
	}
	if !strings.Contains(tool.Description(), s3TestBucket) {
		t.Errorf("Description() = %q, want it to name the bucket", tool.Description())
	}
	var schema struct {
		AdditionalProperties bool `json:"additionalProperties"`
		Properties           map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(tool.InputSchema(), &schema); err != nil {
		t.Fatalf("InputSchema() is not JSON: %v", err)
	}
	if schema.AdditionalProperties || !reflect.DeepEqual(schema.Properties["action"].Enum, []string{"list", "get", "head"}) {
		t.Errorf("InputSchema() = %s, want additionalProperties false and actions list, get, head", tool.InputSchema())
	}
	if _, ok := schema.Properties["bucket"]; ok {
		t.Errorf("InputSchema() offers a bucket argument: %s", tool.InputSchema())
	}
}

func BenchmarkS3Prepare(b *testing.B) {
	tool := compileS3Test(b, s3TestConfig("http://127.0.0.1:9"))
	args := json.RawMessage(`{"action":"list","prefix":"reports/2026/","delimiter":"/","max_keys":100}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tool.Prepare(args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkS3Get(b *testing.B) {
	backend := s3mem.New()
	if err := backend.CreateBucket(s3TestBucket); err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 4096)
	if _, err := backend.PutObject(s3TestBucket, "reports/a.txt", map[string]string{"Content-Type": "text/plain"}, bytes.NewReader(body), int64(len(body)), nil); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	tool := compileS3Test(b, s3TestConfig(srv.URL))
	call, err := tool.Prepare(json.RawMessage(`{"action":"get","key":"reports/a.txt"}`))
	if err != nil {
		b.Fatal(err)
	}
	secret := testAWSSecret(b, testAWSKeyID, testAWSSecretKey, testAWSToken)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tool.Execute(context.Background(), call, secret, execEnv(tool, secret)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestS3ExampleArchiveReportCompiles(t *testing.T) {
	raw, err := os.ReadFile("../examples/archive-report/keyhole.yaml")
	if err != nil {
		t.Skipf("example not present: %v", err)
	}
	var file struct {
		Tools map[string]Config `yaml:"tools"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("examples/archive-report/keyhole.yaml: %v", err)
	}
	tool, errs := Compile("archive_bucket", file.Tools["archive_bucket"], Env{})
	if len(errs) > 0 {
		t.Fatalf("Compile(example archive_bucket) = %v", errs)
	}
	if tool.Kind() != "s3" || tool.SecretName() != "aws_archive_ro" {
		t.Errorf("example tool: kind %q secret %q", tool.Kind(), tool.SecretName())
	}
}

func TestS3HostileUpstream(t *testing.T) {
	const listXML = `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>acme-archive</Name><Prefix>reports/2026/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Contents><Key>reports/2026/a.csv</Key><Size>1</Size><ETag>"x"</ETag><LastModified>2026-03-02T10:00:00.000Z</LastModified></Contents>
<Contents><Key>private/payroll.csv</Key><Size>1</Size></Contents>
<Contents><Key>reports/2025/old.csv</Key><Size>1</Size></Contents>
<CommonPrefixes><Prefix>private/</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix>reports/2026/q1/</Prefix></CommonPrefixes>
</ListBucketResult>`
	tests := map[string]struct {
		handler  http.HandlerFunc
		timeout  string
		bodyCap  int64 // when set, the tool's response body cap
		args     string
		wantKeys []string
		wantMsg  string
	}{
		"keys outside the prefix are dropped": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/xml")
				io.WriteString(w, listXML)
			},
			args:     `{"action":"list","prefix":"reports/2026/"}`,
			wantKeys: []string{"reports/2026/a.csv", "reports/2026/q1/"},
		},
		"an endless list response is cut off": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/xml")
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>`)
				chunk := bytes.Repeat([]byte("a"), 16<<10)
				// Endless: only the byte cap can end this response.
				for {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			},
			// A deadline far beyond any machine's pace, so the cap on bytes
			// is what trips, however slow the machine; a small cap keeps
			// the race-instrumented XML decoder's work short.
			timeout: "10m",
			bodyCap: 256 << 10,
			args:    `{"action":"list","prefix":"reports/2026/"}`,
			wantMsg: "the upstream response is too large",
		},
		"a body dripping slower than the timeout": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.Header().Set("Content-Length", "100")
				for range 100 {
					if _, err := w.Write([]byte("x")); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			},
			timeout: "300ms",
			args:    `{"action":"get","key":"reports/2026/a.csv"}`,
			wantMsg: "the upstream did not answer in time",
		},
		"headers slower than the timeout": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			},
			timeout: "300ms",
			args:    `{"action":"list"}`,
			wantMsg: "the upstream did not answer in time",
		},
		"the credentials echoed in an error body": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				s3WriteError(w, r, http.StatusBadRequest, "InvalidRequest", "you sent "+r.Header.Get("Authorization")+" token "+r.Header.Get("X-Amz-Security-Token")+" secret "+testAWSSecretKey)
			},
			args:    `{"action":"get","key":"reports/2026/a.csv"}`,
			wantMsg: "upstream error (HTTP 400): InvalidRequest",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			up := &sigv4Server{
				creds:   aws.Credentials{AccessKeyID: testAWSKeyID, SecretAccessKey: testAWSSecretKey, SessionToken: testAWSToken},
				service: "s3", region: "us-east-1", next: tt.handler,
			}
			srv := httptest.NewServer(up)
			defer srv.Close()
			cfg := s3TestConfig(srv.URL)
			if tt.timeout != "" {
				cfg.Timeout = tt.timeout
			}
			tool := compileS3Test(t, cfg)
			if tt.bodyCap != 0 {
				set, errs := checkS3Config("archive_bucket", cfg)
				if len(errs) > 0 {
					t.Fatalf("checkS3Config = %v", errs)
				}
				set.bodyCap = tt.bodyCap
				if tool, errs = buildS3("archive_bucket", cfg, Env{}, set); len(errs) > 0 {
					t.Fatalf("buildS3 = %v", errs)
				}
			}
			res, err := executeS3(t, tool, tt.args, testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken))
			if tt.wantMsg != "" {
				var ee *ExecError
				if !errors.As(err, &ee) || ee.Msg != tt.wantMsg {
					t.Fatalf("Execute(%s) = %v, want ExecError %q", tt.args, err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Execute(%s) = %v", tt.args, err)
			}
			got := res.Structured.(S3ListResult)
			var keys []string
			for _, o := range got.Objects {
				keys = append(keys, o.Key)
			}
			keys = append(keys, got.CommonPrefixes...)
			if !reflect.DeepEqual(keys, tt.wantKeys) {
				t.Errorf("Execute(%s) keys = %q, want %q", tt.args, keys, tt.wantKeys)
			}
		})
	}
}

// The SDK's signer caches the derived signing key by access key id alone;
// a changed secret key under the same id must take effect on the next call.
func TestS3SecretChangeTakesEffect(t *testing.T) {
	_, srv := newS3Upstream(t, s3Fixture)
	tool := compileS3Test(t, s3TestConfig(srv.URL))
	good := testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken)
	wrong := testAWSSecret(t, testAWSKeyID, "wrong"+testAWSSecretKey[5:], testAWSToken)
	args := `{"action":"head","key":"reports/2026/01.csv"}`
	for i, step := range []struct {
		secret []byte
		ok     bool
	}{{good, true}, {wrong, false}, {good, true}} {
		_, err := executeS3(t, tool, args, step.secret)
		if (err == nil) != step.ok {
			t.Errorf("call %d: Execute(%s) = %v, want ok %v", i, args, err, step.ok)
		}
	}
}
