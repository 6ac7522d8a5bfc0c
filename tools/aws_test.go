package tools

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// newSigV4Upstream starts an upstream for an http tool with aws_sigv4 that
// verifies every request for service and region and answers 200 "ok".
func newSigV4Upstream(t *testing.T, service, region, token string) (*sigv4Server, *httptest.Server) {
	t.Helper()
	v := &sigv4Server{
		creds:   aws.Credentials{AccessKeyID: testAWSKeyID, SecretAccessKey: testAWSSecretKey, SessionToken: token},
		service: service,
		region:  region,
		next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}),
	}
	srv := httptest.NewServer(v)
	t.Cleanup(srv.Close)
	return v, srv
}

// sendAWSSigned signs a request built from method, url and body with signAWS
// (after edit, if any, changed it before signing) and sends it; tamper, if
// set, changes the request after signing. It returns the status.
func sendAWSSigned(t *testing.T, method, target string, body []byte, secret []byte, cfg *AWS, edit, tamper func(*http.Request)) int {
	t.Helper()
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body, req.ContentLength = nil, 0
	}
	if edit != nil {
		edit(req)
	}
	if err := signAWS(req, body, secret, cfg); err != nil {
		t.Fatalf("signAWS(%s %s) = %v", method, target, err)
	}
	if tamper != nil {
		tamper(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestSignAWSVerifiedByUpstream(t *testing.T) {
	body := []byte(`{"TableName":"reports","Limit":10}`)
	sum := sha256.Sum256(body)
	tests := map[string]struct {
		service, region, token string
		method, path           string
		body                   []byte
		edit, tamper           func(*http.Request)
		wantStatus             int
	}{
		"POST with a body": {
			service: "dynamodb", region: "eu-west-1", method: "POST", path: "/?b=2&a=1", body: body,
			edit:       func(r *http.Request) { r.Header.Set("Content-Type", "application/x-amz-json-1.0") },
			wantStatus: 200,
		},
		"GET with a session token": {
			service: "execute-api", region: "us-east-2", token: testAWSToken, method: "GET", path: "/prod/items/42?x=a%20b",
			wantStatus: 200,
		},
		"s3 path with spaces and non-ASCII is signed as sent": {
			service: "s3", region: "us-east-1", method: "GET", path: "/acme-archive/reports/with%20space%20%C3%BC.md",
			wantStatus: 200,
		},
		"forged signing headers are replaced": {
			service: "execute-api", region: "us-east-2", method: "GET", path: "/prod/items",
			edit: func(r *http.Request) {
				r.Header.Set("X-Amz-Security-Token", "forged")
				r.Header.Set("X-Amz-Date", "19990101T000000Z")
				r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
				r.Header.Set("Authorization", "AWS4-HMAC-SHA256 forged")
			},
			wantStatus: 200,
		},
		"body changed after signing": {
			service: "dynamodb", region: "eu-west-1", method: "POST", path: "/", body: body,
			tamper: func(r *http.Request) {
				r.Body = io.NopCloser(strings.NewReader(strings.Replace(string(body), "10", "99", 1)))
			},
			wantStatus: 403,
		},
		"query changed after signing": {
			service: "execute-api", region: "us-east-2", method: "GET", path: "/prod/items?limit=1",
			tamper:     func(r *http.Request) { r.URL.RawQuery = "limit=1000" },
			wantStatus: 403,
		},
		"path changed after signing": {
			service: "execute-api", region: "us-east-2", method: "GET", path: "/prod/items/1",
			tamper:     func(r *http.Request) { r.URL.Path = "/prod/admin/1" },
			wantStatus: 403,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			up, srv := newSigV4Upstream(t, tt.service, tt.region, tt.token)
			secret := testAWSSecret(t, testAWSKeyID, testAWSSecretKey, tt.token)
			status := sendAWSSigned(t, tt.method, srv.URL+tt.path, tt.body, secret, &AWS{Service: tt.service, Region: tt.region}, tt.edit, tt.tamper)
			if status != tt.wantStatus {
				t.Fatalf("signed %s %s: upstream answered %d, want %d", tt.method, tt.path, status, tt.wantStatus)
			}
			reqs := up.requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			if tt.wantStatus != 200 {
				return
			}
			wantHash := hex.EncodeToString(sum[:])
			if tt.body == nil {
				empty := sha256.Sum256(nil)
				wantHash = hex.EncodeToString(empty[:])
			}
			if h := got.Header.Get("X-Amz-Content-Sha256"); h != wantHash {
				t.Errorf("X-Amz-Content-Sha256 = %q, want %q", h, wantHash)
			}
			if tok := got.Header.Values("X-Amz-Security-Token"); tt.token == "" && len(tok) != 0 || tt.token != "" && (len(tok) != 1 || tok[0] != tt.token) {
				t.Errorf("X-Amz-Security-Token = %q, want %q", tok, tt.token)
			}
			if auth := got.Header.Values("Authorization"); len(auth) != 1 || !strings.Contains(auth[0], "/"+tt.region+"/"+tt.service+"/aws4_request") {
				t.Errorf("Authorization = %q, want one SigV4 header for %s/%s", auth, tt.region, tt.service)
			}
			if !bytes.Equal(got.Body, tt.body) {
				t.Errorf("upstream body = %q, want %q", got.Body, tt.body)
			}
		})
	}
}

func TestSignAWSWrongSecretRejected(t *testing.T) {
	_, srv := newSigV4Upstream(t, "execute-api", "us-east-2", "")
	secret := testAWSSecret(t, testAWSKeyID, "wrong"+testAWSSecretKey[5:], "")
	if status := sendAWSSigned(t, "GET", srv.URL+"/prod", nil, secret, &AWS{Service: "execute-api", Region: "us-east-2"}, nil, nil); status != 403 {
		t.Fatalf("request signed with a wrong secret key: upstream answered %d, want 403", status)
	}
}

func TestSignAWSMalformedSecret(t *testing.T) {
	tests := map[string][]byte{
		"empty":                   nil,
		"raw secret key":          []byte(testAWSSecretKey),
		"not an object":           []byte(`["` + testAWSKeyID + `","` + testAWSSecretKey + `"]`),
		"missing access key id":   []byte(`{"secret_access_key":"` + testAWSSecretKey + `"}`),
		"missing secret key":      []byte(`{"access_key_id":"` + testAWSKeyID + `"}`),
		"unknown field":           []byte(`{"access_key_id":"` + testAWSKeyID + `","secret_access_key":"` + testAWSSecretKey + `","region":"x"}`),
		"trailing data":           []byte(`{"access_key_id":"` + testAWSKeyID + `","secret_access_key":"` + testAWSSecretKey + `"}` + testAWSSecretKey),
		"number as key id":        []byte(`{"access_key_id":12,"secret_access_key":"` + testAWSSecretKey + `"}`),
		"newline in access key":   []byte(`{"access_key_id":"AKIA\nX-Inj: 1","secret_access_key":"` + testAWSSecretKey + `"}`),
		"slash in access key":     []byte(`{"access_key_id":"AKIA/evil","secret_access_key":"` + testAWSSecretKey + `"}`),
		"CRLF in session token":   []byte(`{"access_key_id":"` + testAWSKeyID + `","secret_access_key":"` + testAWSSecretKey + `","session_token":"` + testAWSToken + `\r\nX: 1"}`),
		"larger than 64 KiB":      []byte(`{"access_key_id":"` + testAWSKeyID + `","secret_access_key":"` + testAWSSecretKey + strings.Repeat("A", 64<<10) + `"}`),
		"secret key in bad JSON":  []byte(`{"access_key_id":"` + testAWSKeyID + `","secret_access_key":` + testAWSSecretKey + `}`),
		"secret key as JSON name": []byte(`{"` + testAWSSecretKey + `":"` + testAWSKeyID + `"}`),
	}
	for name, secret := range tests {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "https://api.example/prod", nil)
			err := signAWS(req, nil, secret, &AWS{Service: "execute-api", Region: "us-east-2"})
			if !errors.Is(err, ErrAWSSecret) {
				t.Fatalf("signAWS with %s = %v, want ErrAWSSecret", name, err)
			}
			assertNoAWSSecret(t, "signAWS error", err.Error())
			if req.Header.Get("Authorization") != "" {
				t.Errorf("signAWS with %s set Authorization", name)
			}
		})
	}
}

func TestSignAWSNeedsServiceAndRegion(t *testing.T) {
	for name, cfg := range map[string]*AWS{"nil": nil, "no service": {Region: "us-east-1"}, "no region": {Service: "sqs"}} {
		req := httptest.NewRequest("GET", "https://sqs.example/", nil)
		if err := signAWS(req, nil, testAWSSecret(t, testAWSKeyID, testAWSSecretKey, ""), cfg); err == nil || errors.Is(err, ErrAWSSecret) {
			t.Errorf("signAWS with aws block %s = %v, want a configuration error", name, err)
		}
	}
}

func TestAWSSecretValues(t *testing.T) {
	secret := testAWSSecret(t, testAWSKeyID, testAWSSecretKey, testAWSToken)
	got := awsSecretValues(secret)
	want := []string{testAWSKeyID, testAWSSecretKey, testAWSToken}
	if len(got) != len(want) {
		t.Fatalf("awsSecretValues = %d values, want %d", len(got), len(want))
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("awsSecretValues[%d] differs from %d-byte want", i, len(want[i]))
		}
	}
	if got := awsSecretValues([]byte("not json")); len(got) != 1 || string(got[0]) != "not json" {
		t.Errorf("awsSecretValues(malformed) = %d values, want the raw secret only", len(got))
	}
}

func BenchmarkSignAWS(b *testing.B) {
	secret := testAWSSecret(b, testAWSKeyID, testAWSSecretKey, testAWSToken)
	body := bytes.Repeat([]byte("x"), 4096)
	cfg := &AWS{Service: "execute-api", Region: "us-east-2"}
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", "https://api.example/prod/items?a=1", bytes.NewReader(body))
		if err := signAWS(req, body, secret, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
