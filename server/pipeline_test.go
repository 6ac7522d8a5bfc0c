package server

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// redirectConfig has a tool that follows same-origin redirects, in a
// scope whose limits a redirect hop must not spend.
const redirectConfig = `version: 1
tools:
  api:
    kind: http
    base_url: %UPSTREAM%
    allow_private_network: true
    follow_redirects: same_origin
    credential: {secret: github_token, inject: bearer}
scopes:
  moving:
    ttl: 1h
    max_calls: 1
    max_denials: 1
    grants:
      - {tool: api, methods: [GET], paths: [/old, /new, /newer]}
`

// A redirect hop is re-checked against the scope without spending the
// session's limits, and every hop is in the call's one audit record.
func TestRedirectHopsSpendNoLimitsAndAreRecorded(t *testing.T) {
	e := newEnv(t, baseConfig)
	up := servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/old":
			http.Redirect(w, r, "/new", http.StatusMovedPermanently)
		case "/new":
			http.Redirect(w, r, "/newer", http.StatusFound)
		case "/newer":
			w.Write([]byte("arrived"))
		}
	})
	e.reconfigure(redirectConfig, up.URL)
	c, _ := e.connect("moving")

	res := servertest.CallTool(t, c, "api", map[string]any{"method": "GET", "path": "/old"})
	if res.IsError || !strings.Contains(servertest.ResultText(res), "arrived") {
		t.Fatalf("call of GET /old = %s, want the body of /newer", servertest.ResultText(res))
	}
	recs := e.records()
	if len(recs) != 1 {
		t.Fatalf("audit has %d records, want 1 for the one call", len(recs))
	}
	want := []audit.Hop{{Method: "GET", Path: "/new", Status: 302}, {Method: "GET", Path: "/newer", Status: 200}}
	if r := recs[0]; r.Decision != audit.Allow || r.Path != "/old" || r.Status != 200 || !slices.Equal(r.Hops, want) {
		t.Fatalf("record = %+v, want GET /old allowed with status 200 and hops %+v", r, want)
	}
	// The hops spent none of max_calls 1: the next call is refused for
	// max_calls, not for a tripwire a hop tripped.
	res = servertest.CallTool(t, c, "api", map[string]any{"method": "GET", "path": "/newer"})
	if recs := e.records(); !res.IsError || recs[len(recs)-1].Code != "max_calls" {
		t.Fatalf("second call = %s (code %q), want refused for max_calls", servertest.ResultText(res), recs[len(recs)-1].Code)
	}
}

// A dead session is refused before anything else is looked at: its
// arguments are not even parsed.
func TestLivenessIsCheckedFirst(t *testing.T) {
	e := newEnv(t, baseConfig)
	c, _ := e.connect("triage")
	e.clock.Advance(2 * 60 * 60 * 1e9)
	res := servertest.CallTool(t, c, "github", map[string]any{"method": "GET", "path": "/../x"})
	recs := e.records()
	if !res.IsError || len(recs) != 1 || recs[0].Code != "session_expired" {
		t.Fatalf("bad arguments on an expired session = %s, records %+v; want one session_expired denial", servertest.ResultText(res), recs)
	}
}
