package server

import (
	"context"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/tools"
)

// TestInvariant3_AgentCannotChooseWhereTheCredentialGoes: the scheme, host
// and port come from the tool only, and a redirect to another origin is
// not followed with the credential.
func TestInvariant3_AgentCannotChooseWhereTheCredentialGoes(t *testing.T) {
	elsewhere := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	e := newEnv(t, baseConfig)
	// The tool's own upstream redirects every request to another origin.
	redirector := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
	})
	e.reconfigure(baseConfig, redirector.URL)
	e.up = redirector
	c, wire := e.connect("triage")
	attempts := []string{
		"http://" + strings.TrimPrefix(elsewhere.URL, "http://") + "/repos/acme/api/issues",
		"//" + strings.TrimPrefix(elsewhere.URL, "http://") + "/repos/acme/api/issues",
		"@" + strings.TrimPrefix(elsewhere.URL, "http://") + "/repos/acme/api/issues",
		strings.TrimPrefix(elsewhere.URL, "http://") + "/repos/acme/api/issues",
	}
	for _, p := range attempts {
		if res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": p}); !res.IsError {
			t.Fatalf("path %q was accepted: %s", p, servertest.ResultText(res))
		}
	}
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
	if res.IsError || !strings.Contains(servertest.ResultText(res), "302") {
		t.Fatalf("redirecting call = %s, want the 302 itself returned", servertest.ResultText(res))
	}
	if n := len(elsewhere.Requests()); n != 0 {
		t.Fatalf("the other origin received %d requests", n)
	}
	if reqs := e.up.Requests(); len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer "+testSecret {
		t.Fatalf("the tool's own upstream received %+v, want the one granted call with the credential", reqs)
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
}

// TestInvariant4_PrivateAndMetadataAddressesRefusedAtDialTime: no request
// reaches loopback unless the tool allows private networks, and a host name
// that resolves to a metadata address — or rebinds to loopback after a
// public first answer — is refused at dial time.
func TestInvariant4_PrivateAndMetadataAddressesRefusedAtDialTime(t *testing.T) {
	up := servertest.NewUpstream(t, issueTracker)
	port := up.URL[strings.LastIndex(up.URL, ":")+1:]
	var lookups atomic.Int64
	env := tools.Env{Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "metadata.example":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		case "mapped.example":
			return []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}, nil
		case "rebind.example":
			// Public on the first answer, loopback on the next.
			if lookups.Add(1) == 1 {
				return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, &dnsError{host}
	}}
	cfg := `version: 1
tools:
  direct:
    kind: http
    base_url: ` + up.URL + `
    allow_insecure_http: true
    credential: {secret: github_token, inject: bearer}
  metadata:
    kind: http
    base_url: http://metadata.example:` + port + `
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
  mapped:
    kind: http
    base_url: http://mapped.example:` + port + `
    allow_insecure_http: true
    credential: {secret: github_token, inject: bearer}
  rebind:
    kind: http
    base_url: http://rebind.example:` + port + `
    allow_insecure_http: true
    credential: {secret: github_token, inject: bearer}
scopes:
  s:
    grants:
      - {tool: direct, methods: [GET], paths: [/repos/acme/api/issues]}
      - {tool: metadata, methods: [GET], paths: [/repos/acme/api/issues]}
      - {tool: mapped, methods: [GET], paths: [/repos/acme/api/issues]}
      - {tool: rebind, methods: [GET], paths: [/repos/acme/api/issues]}
`
	e := newEnv(t, baseConfig)
	path := filepath.Join(e.dir, "ssrf.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	loaded, err := config.Load(path, env)
	if err != nil {
		t.Fatal(err)
	}
	e.broker.SetConfig(loaded)
	c, wire := e.connect("s")
	for _, tool := range []string{"direct", "metadata", "mapped", "rebind"} {
		res := servertest.CallTool(t, c, tool, map[string]any{"method": "GET", "path": "/repos/acme/api/issues"})
		if !res.IsError {
			t.Fatalf("tool %s reached its upstream: %s", tool, servertest.ResultText(res))
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("the loopback upstream received %d requests", n)
	}
	for _, r := range e.records() {
		if r.Decision != "error" {
			t.Errorf("record for %s = %s, want error (refused at dial time)", r.Tool, r.Decision)
		}
	}
	assertNoSecret(t, "bytes the agent received", wire.Bytes())
}

type dnsError struct{ host string }

func (e *dnsError) Error() string { return "no such host " + e.host }

// TestInvariant10_RunningSessionsKeepTheirScopeAcrossReload: a scope never
// grows under a running session; a reloaded config applies to new sessions.
func TestInvariant10_RunningSessionsKeepTheirScopeAcrossReload(t *testing.T) {
	h := newHTTPEnv(t)
	running, err := h.client(h.token("triage"))
	if err != nil {
		t.Fatal(err)
	}
	del := map[string]any{"method": "DELETE", "path": "/repos/acme/api/issues/1"}
	if res := servertest.CallTool(t, running, "github", del); !res.IsError {
		t.Fatal("DELETE was allowed before the reload")
	}
	wider := strings.Replace(h.cfgText, "methods: [POST]", "methods: [POST, DELETE]", 1)
	wider = strings.Replace(wider, "paths: [/repos/acme/api/issues/*/comments]", "paths: [/repos/acme/api/issues/*/comments, /repos/acme/api/issues/*]", 1)
	path := filepath.Join(h.dir, "keyhole.yaml")
	if err := os.WriteFile(path, []byte(wider), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := reloadConfig(h.broker, h.audit, path); err != nil {
		t.Fatal(err)
	}
	if res := servertest.CallTool(t, running, "github", del); !res.IsError {
		t.Fatalf("the running session gained DELETE from a reload: %s", servertest.ResultText(res))
	}
	fresh, err := h.client(h.token("triage"))
	if err != nil {
		t.Fatal(err)
	}
	if res := servertest.CallTool(t, fresh, "github", del); res.IsError {
		t.Fatalf("a new session did not get the reloaded scope: %s", servertest.ResultText(res))
	}
	if n := len(h.up.Requests()); n != 1 {
		t.Fatalf("upstream received %d DELETEs, want only the new session's", n)
	}
	var reloads int
	for _, r := range h.allRecords() {
		if r.Tool == "keyhole.reload" {
			reloads++
		}
	}
	if reloads != 1 {
		t.Fatalf("the reload made %d audit records, want 1", reloads)
	}
}
