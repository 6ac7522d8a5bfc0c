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
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/keyhole-dev/keyhole/policy"
)

// The role secret's own keys: distinct from the session credentials the
// fake STS hands out (testAWSKeyID, ...), which are the only ones the S3
// upstream accepts.
const (
	testRoleARN       = "arn:aws:iam::123456789012:role/keyhole-archive"
	testRoleKeyID     = "AKIAROLEKEYHOLE5R8W1"
	testRoleSecretKey = "r0le/S3cr3t+KeyholeRoleSecretAccessKey9Q"
)

func testRoleSecret(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"role_arn": testRoleARN, "access_key_id": testRoleKeyID, "secret_access_key": testRoleSecretKey})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stsCall is what the fake STS saw of one AssumeRole request.
type stsCall struct {
	form url.Values
}

// fakeSTS answers AssumeRole with the test session credentials, expiring
// at now+DurationSeconds, after its sigv4Server checked that the request is
// signed with the role secret's keys. check, when set, vets the form.
type fakeSTS struct {
	now   time.Time
	check func(url.Values) error

	mu    sync.Mutex
	calls []stsCall
}

func (f *fakeSTS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, err := url.ParseQuery(string(body))
	if err == nil && r.Method != http.MethodPost {
		err = fmt.Errorf("method %s, want POST", r.Method)
	}
	if err == nil && f.check != nil {
		err = f.check(form)
	}
	f.mu.Lock()
	f.calls = append(f.calls, stsCall{form: form})
	f.mu.Unlock()
	if err != nil {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code><Message>%s</Message></Error></ErrorResponse>`, err)
		return
	}
	secs, _ := strconv.Atoi(form.Get("DurationSeconds"))
	exp := f.now.Add(time.Duration(secs) * time.Second).UTC().Format(time.RFC3339)
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>`+
		`<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/keyhole-archive/%s</Arn><AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser>`+
		`<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>`+
		`</AssumeRoleResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></AssumeRoleResponse>`,
		form.Get("RoleSessionName"), testAWSKeyID, testAWSSecretKey, testAWSToken, exp)
}

func (f *fakeSTS) seen() []stsCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stsCall(nil), f.calls...)
}

// newFakeSTS starts the fake STS behind a SigV4 verifier for the role
// secret's keys. STS requests carry no payload hash header, so the
// verifier is handed the body's hash to check the signature with.
func newFakeSTS(t *testing.T, f *fakeSTS) (*sigv4Server, *httptest.Server) {
	t.Helper()
	v := &sigv4Server{
		creds:   aws.Credentials{AccessKeyID: testRoleKeyID, SecretAccessKey: testRoleSecretKey},
		service: "sts",
		region:  "us-east-1",
		next:    f,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Amz-Content-Sha256") == "" {
			sum := sha256.Sum256(body)
			r.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		v.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return v, srv
}

// assertNoRoleSecret fails if s holds a role key in any form
// assertNoAWSSecret checks for the session keys.
func assertNoRoleSecret(t *testing.T, where, s string) {
	t.Helper()
	for _, v := range []string{testRoleKeyID, testRoleSecretKey} {
		for _, f := range []string{
			v,
			base64.StdEncoding.EncodeToString([]byte(v)),
			base64.RawURLEncoding.EncodeToString([]byte(v)),
			hex.EncodeToString([]byte(v)),
			url.QueryEscape(v),
			url.PathEscape(v),
		} {
			if strings.Contains(s, f) {
				t.Fatalf("%s holds a role key (form %q): %s", where, f, s)
			}
		}
	}
}

var testRoleGrants = mustS3Grants(
	policy.GrantConfig{Actions: []string{"list"}, Prefixes: []string{"reports/2026/"}},
	policy.GrantConfig{Actions: []string{"get", "head"}, Prefixes: []string{"reports/2026/", "o?d$*"}},
)

// mustS3Grants compiles grants on the s3 tool archive_bucket, as the
// broker's config does, and returns what a session of the scope is
// granted on it.
func mustS3Grants(grants ...policy.GrantConfig) []policy.S3Grant {
	for i := range grants {
		grants[i].Tool = "archive_bucket"
	}
	p, errs := policy.Compile(map[string]policy.ScopeConfig{"s": {Grants: grants}}, map[string]policy.ToolInfo{"archive_bucket": {Kind: "s3", Bucket: s3TestBucket}})
	if len(errs) > 0 {
		panic(fmt.Sprint(errs))
	}
	sc, _ := p.Scope("s")
	return sc.S3Grants("archive_bucket")
}

// testRolePolicy is the session policy testRoleGrants must give, and
// nothing more.
const testRolePolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"s3:ListBucket","Resource":["arn:aws:s3:::acme-archive"],
  "Condition":{"StringLike":{"s3:prefix":["reports/2026/*"]}}},
 {"Effect":"Allow","Action":"s3:GetObject","Resource":["arn:aws:s3:::acme-archive/o${?}d${$}*","arn:aws:s3:::acme-archive/reports/2026/*"]}
]}`

// checkAssumeRole vets an AssumeRole form: the role, a session name
// naming the session, the duration and exactly the session policy.
func checkAssumeRole(sessionID *string, duration *int, wantPolicy string) func(url.Values) error {
	return func(f url.Values) error {
		var got, want any
		if err := json.Unmarshal([]byte(f.Get("Policy")), &got); err != nil {
			return fmt.Errorf("Policy is not JSON: %v", err)
		}
		if err := json.Unmarshal([]byte(wantPolicy), &want); err != nil {
			return fmt.Errorf("want policy: %v", err)
		}
		keys := map[string]bool{}
		for k := range maps.Keys(f) {
			keys[k] = true
		}
		switch {
		case f.Get("Action") != "AssumeRole":
			return fmt.Errorf("Action = %q", f.Get("Action"))
		case f.Get("RoleArn") != testRoleARN:
			return fmt.Errorf("RoleArn = %q", f.Get("RoleArn"))
		case f.Get("RoleSessionName") != "keyhole-"+*sessionID:
			return fmt.Errorf("RoleSessionName = %q, want keyhole-%s", f.Get("RoleSessionName"), *sessionID)
		case f.Get("DurationSeconds") != strconv.Itoa(*duration):
			return fmt.Errorf("DurationSeconds = %q, want %d", f.Get("DurationSeconds"), *duration)
		case !reflect.DeepEqual(got, want):
			return fmt.Errorf("Policy = %s, want %s", f.Get("Policy"), wantPolicy)
		case !reflect.DeepEqual(keys, map[string]bool{"Action": true, "Version": true, "RoleArn": true, "RoleSessionName": true, "DurationSeconds": true, "Policy": true}):
			return fmt.Errorf("form has fields %v", keys)
		}
		return nil
	}
}

func TestS3RoleAssumedPerSession(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	sessionID, duration := "ses_first", 1800
	sts := &fakeSTS{now: now, check: checkAssumeRole(&sessionID, &duration, testRolePolicy)}
	stsVerify, stsSrv := newFakeSTS(t, sts)
	fixture := maps.Clone(s3Fixture)
	fixture["reports/2026/role-leak.txt"] = s3TestObject{body: []byte("role " + testRoleKeyID + ":" + testRoleSecretKey), contentType: "text/plain"}
	up, srv := newS3Upstream(t, fixture)
	c := s3TestConfig(srv.URL)
	c.STSEndpoint = stsSrv.URL
	tool := compileS3Test(t, c)
	tool.(*s3Tool).now = func() time.Time { return now }
	secret := testRoleSecret(t)

	run := func(args string, sess *CallSession) (*Result, error) {
		t.Helper()
		call := prepareS3(t, tool, args)
		res, err := tool.Execute(context.Background(), call, secret, CallEnv{Scrubber: tool.Scrubber(secret), Session: sess}) // as the broker does
		agent := s3AgentBytes(t, res, err)
		assertNoAWSSecret(t, "Execute("+args+")", agent)
		assertNoRoleSecret(t, "Execute("+args+")", agent)
		return res, err
	}
	first := &CallSession{ID: sessionID, Expires: now.Add(30 * time.Minute), S3: testRoleGrants}
	for _, args := range []string{
		`{"action":"list","prefix":"reports/2026/"}`,
		`{"action":"get","key":"reports/2026/01.csv"}`,
		`{"action":"head","key":"reports/2026/01.csv"}`,
	} {
		if _, err := run(args, first); err != nil {
			t.Fatalf("Execute(%s) in session %s = %v, want success", args, sessionID, err)
		}
	}
	if n := len(sts.seen()); n != 1 {
		t.Fatalf("STS saw %d AssumeRole calls for three calls of one session, want 1", n)
	}

	// The object quoting the role secret and the one quoting the session
	// credentials both come back scrubbed.
	for _, key := range []string{"reports/2026/role-leak.txt", "reports/2026/leak.txt"} {
		res, err := run(`{"action":"get","key":"`+key+`"}`, first)
		if err != nil || !res.Scrubbed {
			t.Fatalf("Execute(get %s) = %+v, %v; want a scrubbed result", key, res, err)
		}
	}

	// Another session assumes the role again, for its own remaining ttl
	// (clamped to STS's minimum).
	sessionID, duration = "ses_second", 900
	second := &CallSession{ID: sessionID, Expires: now.Add(5 * time.Minute), S3: testRoleGrants}
	if _, err := run(`{"action":"list","prefix":"reports/2026/"}`, second); err != nil {
		t.Fatalf("Execute(list) in session %s = %v, want success", sessionID, err)
	}
	calls := sts.seen()
	if len(calls) != 2 {
		t.Fatalf("STS saw %d AssumeRole calls for two sessions, want 2", len(calls))
	}
	for i, r := range stsVerify.requests() {
		if r.Status != 0 {
			t.Errorf("STS request %d failed its signature check (%d): not signed with the role secret's keys", i, r.Status)
		}
	}
	// Every S3 request was signed with the session credentials: the
	// upstream accepts nothing else, and it saw the session token.
	for i, r := range up.requests() {
		if r.Status != 0 || r.Header.Get("X-Amz-Security-Token") != testAWSToken {
			t.Errorf("S3 request %d: status %d, token %q; want signed with the assumed session credentials", i, r.Status, r.Header.Get("X-Amz-Security-Token"))
		}
		assertNoRoleSecret(t, "S3 request headers", fmt.Sprint(r.Header))
	}

	// Near their expiry, cached credentials are replaced.
	sessionID, duration = "ses_first", 900
	tool.(*s3Tool).now = func() time.Time { return now.Add(29*time.Minute + 30*time.Second) }
	sts.now = now.Add(29*time.Minute + 30*time.Second)
	if _, err := run(`{"action":"head","key":"reports/2026/01.csv"}`, first); err != nil {
		t.Fatalf("Execute(head) near expiry = %v, want success", err)
	}
	if n := len(sts.seen()); n != 3 {
		t.Fatalf("STS saw %d AssumeRole calls after the first session's credentials neared expiry, want 3", n)
	}
}

func TestS3RoleDuration(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		left time.Duration
		want int
	}{
		"remaining ttl":       {90 * time.Minute, 5400},
		"below STS's minimum": {time.Minute, 900},
		"above STS's maximum": {20 * time.Hour, 43200},
		"fractional second":   {time.Hour + 500*time.Millisecond, 3600},
	} {
		t.Run(name, func(t *testing.T) {
			id, want := "ses_d", tc.want
			sts := &fakeSTS{now: now, check: checkAssumeRole(&id, &want, testRolePolicy)}
			_, stsSrv := newFakeSTS(t, sts)
			_, srv := newS3Upstream(t, s3Fixture)
			c := s3TestConfig(srv.URL)
			c.STSEndpoint = stsSrv.URL
			tool := compileS3Test(t, c)
			tool.(*s3Tool).now = func() time.Time { return now }
			call := prepareS3(t, tool, `{"action":"head","key":"reports/2026/01.csv"}`)
			sess := &CallSession{ID: id, Expires: now.Add(tc.left), S3: testRoleGrants}
			if _, err := tool.Execute(context.Background(), call, testRoleSecret(t), CallEnv{Scrubber: tool.Scrubber(testRoleSecret(t)), Session: sess}); err != nil {
				t.Fatalf("Execute(head) with %v left = %v, want DurationSeconds %d accepted", tc.left, err, tc.want)
			}
		})
	}
}

func TestS3RoleRefusals(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	sts := &fakeSTS{now: now}
	_, stsSrv := newFakeSTS(t, sts)
	_, srv := newS3Upstream(t, s3Fixture)
	c := s3TestConfig(srv.URL)
	c.STSEndpoint = stsSrv.URL
	tool := compileS3Test(t, c)
	tool.(*s3Tool).now = func() time.Time { return now }
	for name, tc := range map[string]struct {
		sess *CallSession
		want string
	}{
		"no session":      {nil, "has no session"},
		"expired session": {&CallSession{ID: "ses_x", Expires: now.Add(-time.Second), S3: testRoleGrants}, "expired"},
		"no grants":       {&CallSession{ID: "ses_x", Expires: now.Add(time.Hour)}, "narrow the scope"},
		"policy too long": {&CallSession{ID: "ses_x", Expires: now.Add(time.Hour), S3: mustS3Grants(policy.GrantConfig{Actions: []string{"get"}, Prefixes: []string{strings.Repeat("p", 1000) + "/", strings.Repeat("q", 1000) + "/"}})}, "narrow the scope"},
	} {
		t.Run(name, func(t *testing.T) {
			call := prepareS3(t, tool, `{"action":"head","key":"reports/2026/01.csv"}`)
			_, err := tool.Execute(context.Background(), call, testRoleSecret(t), CallEnv{Scrubber: tool.Scrubber(testRoleSecret(t)), Session: tc.sess})
			var ee *ExecError
			if !errors.As(err, &ee) || !strings.Contains(ee.Msg, tc.want) {
				t.Fatalf("Execute(head) = %v, want an ExecError saying %q", err, tc.want)
			}
			assertNoRoleSecret(t, "Execute(head)", s3AgentBytes(t, nil, err))
		})
	}
	if n := len(sts.seen()); n != 0 {
		t.Fatalf("STS saw %d calls, want none", n)
	}

	// STS refusing the role (its error names the role key) fails the call
	// without a key in sight.
	sts.check = func(url.Values) error { return fmt.Errorf("key %s may not assume this role", testRoleKeyID) }
	call := prepareS3(t, tool, `{"action":"head","key":"reports/2026/01.csv"}`)
	_, err := tool.Execute(context.Background(), call, testRoleSecret(t), CallEnv{Scrubber: tool.Scrubber(testRoleSecret(t)), Session: &CallSession{ID: "ses_y", Expires: now.Add(time.Hour), S3: testRoleGrants}})
	var ee *ExecError
	if !errors.As(err, &ee) || !strings.Contains(ee.Msg, "assuming the AWS role") {
		t.Fatalf("Execute(head) with STS refusing = %v, want an ExecError about assuming the role", err)
	}
	assertNoRoleSecret(t, "Execute(head) with STS refusing", s3AgentBytes(t, nil, err))
}

func TestS3RoleSTSEgressGuarded(t *testing.T) {
	// Without allow_private_network the STS endpoint on loopback is refused
	// at dial time, as the S3 endpoint would be.
	sts := &fakeSTS{now: time.Now()}
	_, stsSrv := newFakeSTS(t, sts)
	c := s3TestConfig("https://s3.example.com")
	c.AllowPrivateNetwork = false
	c.AllowInsecureHTTP = true
	c.STSEndpoint = stsSrv.URL
	tool := compileS3Test(t, c)
	call := prepareS3(t, tool, `{"action":"head","key":"reports/2026/01.csv"}`)
	_, err := tool.Execute(context.Background(), call, testRoleSecret(t), CallEnv{Scrubber: tool.Scrubber(testRoleSecret(t)), Session: &CallSession{ID: "ses_e", Expires: time.Now().Add(time.Hour), S3: testRoleGrants}})
	var ee *ExecError
	if !errors.As(err, &ee) || !strings.Contains(ee.Msg, "network policy") {
		t.Fatalf("Execute(head) with STS on loopback = %v, want refused by the network policy", err)
	}
	if n := len(sts.seen()); n != 0 {
		t.Fatalf("STS on loopback saw %d calls, want none", n)
	}
}

func TestS3SessionPolicyWholeBucket(t *testing.T) {
	got, err := s3SessionPolicy("aws-cn", "acme-archive", mustS3Grants(policy.GrantConfig{Actions: []string{"list", "head"}, Prefixes: []string{"", "a/"}}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Version":"2012-10-17","Statement":[` +
		`{"Effect":"Allow","Action":"s3:ListBucket","Resource":["arn:aws-cn:s3:::acme-archive"]},` +
		`{"Effect":"Allow","Action":"s3:GetObject","Resource":["arn:aws-cn:s3:::acme-archive/*","arn:aws-cn:s3:::acme-archive/a/*"]}]}`
	if got != want {
		t.Fatalf("s3SessionPolicy(whole bucket) = %s, want %s", got, want)
	}
}

func TestRoleSecretRefusedOutsideS3(t *testing.T) {
	if _, err := parseAWSSecret(testRoleSecret(t)); !errors.Is(err, ErrAWSSecret) {
		t.Fatalf("parseAWSSecret(role secret) = %v, want ErrAWSSecret: only s3 tools assume roles", err)
	}
	bad := []byte(`{"role_arn":"arn:aws:iam::1:role/x","access_key_id":"AKIAX","secret_access_key":"s"}`)
	if _, _, err := parseAWSRoleSecret(bad); !errors.Is(err, ErrAWSSecret) {
		t.Fatalf("parseAWSRoleSecret(bad role_arn) = %v, want ErrAWSSecret", err)
	}
}

func TestS3STSEndpointConfig(t *testing.T) {
	c := s3TestConfig("https://s3.example.com")
	c.AllowPrivateNetwork = false
	c.STSEndpoint = "http://sts.example.com/path"
	_, errs := Compile("archive_bucket", c, Env{})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "tools.archive_bucket.sts_endpoint") {
		t.Fatalf("Compile(sts_endpoint http with path) = %v, want one sts_endpoint error", errs)
	}
	h := Config{Kind: "http", BaseURL: "https://api.example.com", Credential: Credential{Secret: "tok", Inject: "bearer"}, STSEndpoint: "https://sts.example.com"}
	_, errs = Compile("api", h, Env{})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "sts_endpoint") {
		t.Fatalf("Compile(http tool with sts_endpoint) = %v, want one sts_endpoint error", errs)
	}
}

// TestS3SessionPolicyFollowsPrefixRule holds issue 22's grant and its
// variants: the session policy reaches what keyhole grants, by the same
// rule: a prefix ends at a segment unless it ends in "*".
func TestS3SessionPolicyFollowsPrefixRule(t *testing.T) {
	const arn = "arn:aws:s3:::acme-archive"
	tests := map[string]struct {
		actions []string
		prefix  string
		like    []string // s3:prefix; nil: no condition (the whole bucket)
		objects []string // s3:GetObject resources; nil: no statement
	}{
		"segment":              {[]string{"list", "get"}, "reports/2026", []string{"reports/2026/*"}, []string{arn + "/reports/2026", arn + "/reports/2026/*"}},
		"folder":               {[]string{"list", "get"}, "reports/2026/", []string{"reports/2026/*"}, []string{arn + "/reports/2026/*"}},
		"string":               {[]string{"list", "get"}, "reports/2026*", []string{"reports/2026*"}, []string{arn + "/reports/2026*"}},
		"head is s3:GetObject": {[]string{"head"}, "reports/2026", nil, []string{arn + "/reports/2026", arn + "/reports/2026/*"}},
		"list only":            {[]string{"list"}, "reports/2026", []string{"reports/2026/*"}, nil},
		"bucket":               {[]string{"list", "get"}, "", nil, []string{arn + "/*"}},
		"wildcards escaped":    {[]string{"list", "get"}, "a$b?c", []string{"a${$}b${?}c/*"}, []string{arn + "/a${$}b${?}c", arn + "/a${$}b${?}c/*"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			doc, err := s3SessionPolicy("aws", s3TestBucket, mustS3Grants(policy.GrantConfig{Actions: tt.actions, Prefixes: []string{tt.prefix}}))
			if err != nil {
				t.Fatal(err)
			}
			var p iamPolicy
			if err := json.Unmarshal([]byte(doc), &p); err != nil {
				t.Fatal(err)
			}
			like, objects := []string{"(no s3:ListBucket)"}, []string(nil)
			for _, st := range p.Statement {
				switch st.Action {
				case "s3:ListBucket":
					if !reflect.DeepEqual(st.Resource, []string{arn}) {
						t.Errorf("ListBucket resource = %q", st.Resource)
					}
					like = nil
					if c, ok := st.Condition["StringLike"]["s3:prefix"]; ok {
						for _, v := range c.([]any) {
							like = append(like, v.(string))
						}
					}
				case "s3:GetObject":
					objects = st.Resource
				default:
					t.Errorf("statement allows %s", st.Action)
				}
			}
			if !slices.Contains(tt.actions, "list") {
				tt.like = []string{"(no s3:ListBucket)"}
			}
			if !reflect.DeepEqual(like, tt.like) {
				t.Errorf("s3:prefix = %q, want %q (policy %s)", like, tt.like, doc)
			}
			if !reflect.DeepEqual(objects, tt.objects) {
				t.Errorf("GetObject resources = %q, want %q", objects, tt.objects)
			}
			if strings.Contains(doc, "kms:") {
				t.Errorf("policy %s grants a KMS action", doc)
			}
		})
	}
}

// TestS3SessionPolicyAgreesWithDecide evaluates the session policy as IAM
// would (StringLike with "*", "?" and the ${*} ${?} ${$} escapes) and
// checks that it allows exactly the gets and lists keyhole allows, on
// every short key over an alphabet that can build siblings.
func TestS3SessionPolicyAgreesWithDecide(t *testing.T) {
	const alphabet = "a/-?*"
	var strs []string
	var gen func(s string)
	gen = func(s string) {
		strs = append(strs, s)
		if len(s) == 4 {
			return
		}
		for i := range len(alphabet) {
			gen(s + alphabet[i:i+1])
		}
	}
	gen("")
	prefixes := []string{"", "a", "a/", "a*", "a-a", "a/a", "a/a/", "a?", "a?*", "?a", "a/-*"}
	for _, px := range prefixes {
		grant := policy.GrantConfig{Tool: "archive_bucket", Actions: []string{"list", "get"}, Prefixes: []string{px}}
		p, errs := policy.Compile(map[string]policy.ScopeConfig{"s": {Grants: []policy.GrantConfig{grant}}}, map[string]policy.ToolInfo{"archive_bucket": {Kind: "s3"}})
		if len(errs) > 0 {
			t.Fatalf("Compile(prefix %q) = %v", px, errs)
		}
		sc, _ := p.Scope("s")
		doc, err := s3SessionPolicy("aws", s3TestBucket, sc.S3Grants("archive_bucket"))
		if err != nil {
			t.Fatal(err)
		}
		var pol iamPolicy
		if err := json.Unmarshal([]byte(doc), &pol); err != nil {
			t.Fatal(err)
		}
		for _, k := range strs {
			keyhole := sc.Decide(policy.Request{Tool: "archive_bucket", Action: "list", Key: k}).Allow
			if iam := iamAllows(pol, "s3:ListBucket", "arn:aws:s3:::acme-archive", k); iam != keyhole {
				t.Fatalf("prefix %q: list %q: keyhole allows %v, session policy %v (%s)", px, k, keyhole, iam, doc)
			}
			if k == "" {
				continue
			}
			keyhole = sc.Decide(policy.Request{Tool: "archive_bucket", Action: "get", Key: k}).Allow
			if iam := iamAllows(pol, "s3:GetObject", "arn:aws:s3:::acme-archive/"+k, ""); iam != keyhole {
				t.Fatalf("prefix %q: get %q: keyhole allows %v, session policy %v (%s)", px, k, keyhole, iam, doc)
			}
		}
	}
}

// iamAllows evaluates the Allow statements of p for action on resource,
// with s3:prefix set to prefix for s3:ListBucket.
func iamAllows(p iamPolicy, action, resource, prefix string) bool {
	for _, st := range p.Statement {
		if st.Action != action || !slices.ContainsFunc(st.Resource, func(r string) bool { return iamLike(r, resource) }) {
			continue
		}
		cond, ok := st.Condition["StringLike"]["s3:prefix"]
		if !ok {
			return true
		}
		for _, v := range cond.([]any) {
			if iamLike(v.(string), prefix) {
				return true
			}
		}
	}
	return false
}

// iamLike is IAM's StringLike: "*" matches any run of characters, "?" one
// character, and ${*}, ${?} and ${$} stand for the characters themselves.
func iamLike(pattern, s string) bool {
	type tok struct {
		c    rune
		wild bool
	}
	var toks []tok
	for i := 0; i < len(pattern); {
		switch {
		case strings.HasPrefix(pattern[i:], "${*}"), strings.HasPrefix(pattern[i:], "${?}"), strings.HasPrefix(pattern[i:], "${$}"):
			toks = append(toks, tok{c: rune(pattern[i+2])})
			i += 4
		default:
			r, n := utf8.DecodeRuneInString(pattern[i:])
			toks = append(toks, tok{c: r, wild: r == '*' || r == '?'})
			i += n
		}
	}
	rs := []rune(s)
	var match func(ti, si int) bool
	match = func(ti, si int) bool {
		if ti == len(toks) {
			return si == len(rs)
		}
		tk := toks[ti]
		switch {
		case tk.wild && tk.c == '*':
			return match(ti+1, si) || si < len(rs) && match(ti, si+1)
		case si == len(rs):
			return false
		case tk.wild: // "?"
			return match(ti+1, si+1)
		default:
			return tk.c == rs[si] && match(ti+1, si+1)
		}
	}
	return match(0, 0)
}
