package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// redactionConfig adds to baseConfig two query-injected tools: one whose
// upstream fails with the key echoed in a 500 body, one whose upstream is
// not listening (Go's *url.Error then quotes the URL, key included).
const redactionConfig = `version: 1
tools:
  github:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
    timeout: 5s
  keyed:
    kind: http
    base_url: %ECHO%
    allow_private_network: true
    credential: {secret: github_token, inject: query, param: api_key}
    timeout: 5s
  dead:
    kind: http
    base_url: %DEAD%
    allow_private_network: true
    credential: {secret: github_token, inject: query, param: api_key}
    timeout: 5s
scopes:
  triage:
    ttl: 1h
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues, /repos/acme/api/issues/*]}
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/comments]}
      - {tool: keyed, methods: [GET, POST], paths: [/fail]}
      - {tool: dead, methods: [GET], paths: [/x]}
`

// echo500 fails every request with a 500 whose body quotes the key it was
// sent, raw, base64 and in a JSON error.
func echo500(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("api_key")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("WWW-Authenticate", `Key realm="x", key="`+key+`"`)
	w.WriteHeader(http.StatusInternalServerError)
	json.NewEncoder(w).Encode(map[string]string{
		"error": "internal error processing " + r.URL.String(),
		"b64":   base64.StdEncoding.EncodeToString([]byte(key)),
	})
}

// closedAddr returns a loopback address that nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestInvariant1_AuditHoldsNoSecretInAnyForm: an agent that sends the
// secret in its arguments (path, query name and value, body, an unknown
// argument, a denied call) and upstreams that echo the query-injected key
// in a 500 or fail with a URL carrying it leave no form of the secret in
// the audit records, the audit file on disk, the logs or anything the agent
// received, with arguments stored in full or hashed. Arguments that carry
// the secret are refused before anything goes upstream and end the
// session (invariant 9), so each call runs in a session of its own.
func TestInvariant1_AuditHoldsNoSecretInAnyForm(t *testing.T) {
	const probe = policy.CodeSecretInArguments
	calls := []struct {
		name     string
		tool     string
		args     map[string]any
		decision audit.Decision
		code     string
		status   int
	}{
		{"secret as query value", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "query": map[string]any{"q": testSecret}}, audit.Deny, probe, 0},
		{"secret as query name", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "query": map[string]any{testSecret: "1"}}, audit.Deny, probe, 0},
		{"secret in path", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues/" + testSecret}, audit.Deny, probe, 0},
		{"secret in body", "github", map[string]any{"method": "POST", "path": "/repos/acme/api/issues/7/comments", "body": map[string]any{"body": "token is " + testSecret}}, audit.Deny, probe, 0},
		{"secret base64 in body", "github", map[string]any{"method": "POST", "path": "/repos/acme/api/issues/7/comments", "body": base64.StdEncoding.EncodeToString([]byte(testSecret))}, audit.Deny, probe, 0},
		{"secret in a denied call", "github", map[string]any{"method": "GET", "path": "/admin", "query": map[string]any{"k": testSecret}}, audit.Deny, probe, 0},
		{"secret in a denied path", "github", map[string]any{"method": "DELETE", "path": "/repos/acme/api/issues/" + testSecret}, audit.Deny, probe, 0},
		{"secret in an unknown argument", "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues", "url": testSecret}, audit.Deny, probe, 0},
		{"key echoed in a 500", "keyed", map[string]any{"method": "GET", "path": "/fail"}, audit.Allow, "", 500},
		{"key echoed in a 500 with the secret sent", "keyed", map[string]any{"method": "POST", "path": "/fail", "body": testSecret}, audit.Deny, probe, 0},
		{"key in a dial error", "dead", map[string]any{"method": "GET", "path": "/x"}, audit.Error, "upstream_error", 0},
	}
	for _, mode := range []string{audit.ArgsFull, audit.ArgsHashed} {
		t.Run(mode, func(t *testing.T) {
			echo := servertest.NewUpstream(t, echo500)
			cfg := strings.NewReplacer("%ECHO%", echo.URL, "%DEAD%", "http://"+closedAddr(t)).Replace(redactionConfig)
			e := newEnv(t, cfg)
			e.useArgsMode(mode)
			for _, tc := range calls {
				t.Run(tc.name, func(t *testing.T) {
					c, wire := e.connectFor(t, "triage")
					res := servertest.CallTool(t, c, tc.tool, tc.args)
					if res.IsError != (tc.decision != audit.Allow) {
						t.Fatalf("result isError=%v: %s", res.IsError, servertest.ResultText(res))
					}
					if tc.code == probe && !strings.Contains(servertest.ResultText(res), "ask the user for a new session") {
						t.Fatalf("a call carrying the secret = %s, want the session ended", servertest.ResultText(res))
					}
					assertNoSecret(t, "bytes the agent received", wire.Bytes())
				})
			}
			if got := echo.Requests(); len(got) != 1 || !strings.Contains(got[0].Query, "api_key=") {
				t.Fatalf("echo upstream received %+v, want one request carrying the injected key", got)
			}
			if got := e.up.Requests(); len(got) != 0 {
				t.Fatalf("upstream received %d requests carrying the secret, want none", len(got))
			}

			recs := e.records()
			if len(recs) != len(calls) {
				t.Fatalf("audit has %d records for %d calls", len(recs), len(calls))
			}
			for i, tc := range calls {
				r := recs[i]
				if r.Decision != tc.decision || r.Status != tc.status || r.Code != tc.code {
					t.Errorf("%s: record decision %s code %q status %d, want %s %q %d", tc.name, r.Decision, r.Code, r.Status, tc.decision, tc.code, tc.status)
				}
				switch mode {
				case audit.ArgsFull:
					if len(r.Args) == 0 || r.ArgsSHA256 == "" {
						t.Errorf("%s: full mode record has args %q, sha256 %q; want both", tc.name, r.Args, r.ArgsSHA256)
					}
				case audit.ArgsHashed:
					if len(r.Args) != 0 || r.ArgsSHA256 == "" {
						t.Errorf("%s: hashed mode record has args %q, sha256 %q; want only the hash", tc.name, r.Args, r.ArgsSHA256)
					}
				}
			}
			if dial := recs[len(recs)-1]; !strings.Contains(dial.Reason, "[REDACTED]") {
				t.Errorf("dial error record reason %q does not show the key redacted from the URL", dial.Reason)
			}
			for i, r := range recs {
				raw, _ := json.Marshal(r)
				if f := secretFormIn(raw); f != "" {
					t.Errorf("%s: audit record holds the secret (%s): %s", calls[i].name, f, raw)
				}
			}
			if t.Failed() {
				t.FailNow()
			}
			// The log is open: its newest pages may be only in the WAL.
			for _, name := range []string{AuditFile, AuditFile + "-wal"} {
				file, err := os.ReadFile(e.dataDir.File(name))
				if err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				assertNoSecret(t, name+" on disk", file)
			}
			assertNoSecret(t, "logs", []byte(e.logs.String()))
		})
	}
}

// useArgsMode reopens e's audit log with the given arguments mode and
// points the broker at it.
func (e *env) useArgsMode(mode string) {
	e.t.Helper()
	if err := e.audit.Close(); err != nil {
		e.t.Fatal(err)
	}
	al, err := audit.Open(audit.Options{Path: e.dataDir.File(AuditFile), Key: e.vault.DeriveKey(auditKeyLabel), Checkpoint: e.vault, Arguments: mode})
	if err != nil {
		e.t.Fatal(fmt.Errorf("reopen audit in %s mode: %w", mode, err))
	}
	e.t.Cleanup(func() { al.Close() })
	e.audit, e.auditLog = al, auditLog{al}
	e.broker.audit = e.auditLog
}

// secretFormIn names the first form of testSecret found in b, or "".
func secretFormIn(b []byte) string {
	names := []string{"raw", "base64", "base64url", "hex", "url-encoded", "middle"}
	for i, f := range servertest.SecretForms(testSecret) {
		if strings.Contains(string(b), f) {
			return names[i]
		}
	}
	return ""
}

// TestInvariant1_AuditScrubsEveryPartOfTheCredential: for a basic-auth
// tool the password alone is a secret too; an agent that sends it, in an
// allowed or a denied call, leaves no form of it in the audit.
func TestInvariant1_AuditScrubsEveryPartOfTheCredential(t *testing.T) {
	const password = "Pa55w0rd-basic-Zq9x7Y"
	e := newEnv(t, strings.Replace(baseConfig, "  admin:\n", `  basicapi:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    credential: {secret: basic_cred, inject: basic}
  admin:
`, 1)+`  basic:
    grants:
      - {tool: basicapi, methods: [GET], paths: [/repos/acme/api/issues]}
`)
	if err := e.vault.Set("basic_cred", []byte("svc:"+password), "test"); err != nil {
		t.Fatal(err)
	}
	// Each call carries the password: each is refused and ends its session.
	var wires [][]byte
	for _, args := range []map[string]any{
		{"method": "GET", "path": "/repos/acme/api/issues", "query": map[string]any{"p": password}},
		{"method": "GET", "path": "/admin/" + password},
	} {
		t.Run(fmt.Sprint(args["path"]), func(t *testing.T) {
			c, wire := e.connectFor(t, "basic")
			res := servertest.CallTool(t, c, "basicapi", args)
			if !res.IsError || !strings.Contains(servertest.ResultText(res), "ask the user for a new session") {
				t.Fatalf("call carrying the password = %s, want the session ended", servertest.ResultText(res))
			}
			wires = append(wires, wire.Bytes())
		})
	}
	if len(e.up.Requests()) != 0 {
		t.Fatalf("upstream received %d requests carrying the password", len(e.up.Requests()))
	}
	wire := bytes.Join(wires, nil)
	recs := e.records()
	if len(recs) != 2 {
		t.Fatalf("audit has %d records, want 2", len(recs))
	}
	raw, _ := json.Marshal(recs)
	for _, form := range []string{password, base64.StdEncoding.EncodeToString([]byte(password))} {
		if strings.Contains(string(raw), form) {
			t.Fatalf("audit records hold the password (%q): %s", form, raw)
		}
		if strings.Contains(string(wire), form) {
			t.Fatalf("what the agent received quotes the password: %s", wire)
		}
	}
}
