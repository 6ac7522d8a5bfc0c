// Package examples_test checks the example configs: each passes `config
// check`, and its scope allows and denies exactly what its README says,
// decided by the same compiled tools and policy the broker uses.
package examples_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/servertest"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// examples are the directories that must exist, each with a keyhole.yaml
// and a README.md, and the scope each defines.
var examples = map[string]string{
	"github-triage":     "triage",
	"github-app-triage": "app_triage",
	"calendar-oauth":    "scheduling",
	"billing-sync":      "billing_sync",
	"archive-report":    "archive_report",
}

func load(t *testing.T, dir string) *config.Loaded {
	t.Helper()
	cfg, err := config.Load(filepath.Join(dir, "keyhole.yaml"), tools.Env{})
	if err != nil {
		t.Fatalf("LoadConfig(%s) = %v", dir, err)
	}
	return cfg
}

// incidents are the post-mortem examples: each the config an incident ran
// under (not one to copy), its scripted agent run (agent.json) and the
// report that catches it (incidents_test.go), and the scope it defines.
var incidents = map[string]string{
	"incident-cleanup-agent":  "archive_cleanup",
	"incident-onboarding-bot": "ticket_triage",
	"incident-billing-sync":   "billing_sync",
}

func TestExamplesPassConfigCheck(t *testing.T) {
	dirs, err := filepath.Glob("*/keyhole.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dirs {
		got = append(got, filepath.Dir(d))
	}
	var want []string
	for d := range examples {
		want = append(want, d)
	}
	for d := range incidents {
		want = append(want, d)
	}
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("example dirs = %v, want %v (add new examples to this test)", got, want)
	}
	for dir, scope := range incidents {
		t.Run(dir, func(t *testing.T) {
			cfg := load(t, dir)
			if names := cfg.Policy.ScopeNames(); len(names) != 1 || names[0] != scope {
				t.Fatalf("%s scopes = %v, want [%s]", dir, names, scope)
			}
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil {
				t.Fatalf("%s has no README: %v", dir, err)
			}
			for _, want := range []string{"## The incident", "## The post-mortem", "## The fix", "keyhole report session", "agent.json"} {
				if !strings.Contains(string(readme), want) {
					t.Errorf("%s/README.md does not mention %q", dir, want)
				}
			}
		})
	}
	for dir, scope := range examples {
		t.Run(dir, func(t *testing.T) {
			cfg := load(t, dir)
			if names := cfg.Policy.ScopeNames(); len(names) != 1 || names[0] != scope {
				t.Fatalf("%s scopes = %v, want [%s]", dir, names, scope)
			}
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil {
				t.Fatalf("%s has no README: %v", dir, err)
			}
			for _, want := range []string{"## The incident this prevents", "config check", "--scope " + scope} {
				if !strings.Contains(string(readme), want) {
					t.Errorf("%s/README.md does not mention %q", dir, want)
				}
			}
		})
	}
}

// outcome is what the broker would do with a call before any I/O.
type outcome int

const (
	allow  outcome = iota // policy allows it
	deny                  // valid arguments, but no grant names the request
	refuse                // the tool refuses the arguments; policy is never asked
)

func (o outcome) String() string { return [...]string{"allow", "deny", "refuse"}[o] }

// call is one tool call an example's README promises the outcome of.
type call struct {
	name string
	tool string
	args string
	want outcome
}

// decide runs c through the compiled tool and the scope, as Broker.Call
// does before it touches the vault: Prepare, then Decide.
func decide(t *testing.T, cfg *config.Loaded, sc *policy.Scope, c call) (outcome, string) {
	t.Helper()
	tool, ok := cfg.Tools[c.tool]
	if !ok {
		// An unknown tool reaches policy as a bare request, as in the broker.
		d := sc.Decide(policy.Request{Tool: c.tool})
		if d.Allow {
			t.Fatalf("Decide(unknown tool %s) allowed", c.tool)
		}
		return deny, d.Reason
	}
	prepared, err := tool.Prepare(json.RawMessage(c.args))
	if err != nil {
		var ae *tools.ArgError
		if !errors.As(err, &ae) {
			t.Fatalf("Prepare(%s) = %T %v, want *tools.ArgError", c.args, err, err)
		}
		return refuse, err.Error()
	}
	d := sc.Decide(prepared.Request)
	if d.Reason == "" {
		t.Fatalf("Decide(%s) has no reason: %+v", prepared.Request, d)
	}
	if d.Allow {
		return allow, d.Reason
	}
	return deny, d.Reason
}

func runCalls(t *testing.T, dir string, calls []call) {
	cfg := load(t, dir)
	sc, ok := cfg.Policy.Scope(examples[dir])
	if !ok {
		t.Fatalf("%s: scope %s missing", dir, examples[dir])
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			got, reason := decide(t, cfg, sc, c)
			if got != c.want {
				t.Fatalf("%s %s = %s (%s), want %s", c.tool, c.args, got, reason, c.want)
			}
		})
	}
}

func TestGitHubTriageScope(t *testing.T) {
	runCalls(t, "github-triage", []call{
		{"list open issues", "github", `{"method":"GET","path":"/repos/acme/api/issues","query":{"state":"open","per_page":"50"}}`, allow},
		{"read an issue", "github", `{"method":"GET","path":"/repos/acme/api/issues/7"}`, allow},
		{"read its comments", "github", `{"method":"GET","path":"/repos/acme/api/issues/7/comments"}`, allow},
		{"comment", "github", `{"method":"POST","path":"/repos/acme/api/issues/7/comments","body":{"body":"Reproduced on v2.3; labelling for the team."}}`, allow},

		{"close an issue", "github", `{"method":"PATCH","path":"/repos/acme/api/issues/7","body":{"state":"closed"}}`, deny},
		{"edit an issue", "github", `{"method":"PATCH","path":"/repos/acme/api/issues/7","body":{"title":"x"}}`, deny},
		{"edit a comment", "github", `{"method":"PATCH","path":"/repos/acme/api/issues/comments/42","body":{"body":"x"}}`, deny},
		{"delete a comment", "github", `{"method":"DELETE","path":"/repos/acme/api/issues/comments/42"}`, deny},
		{"label an issue", "github", `{"method":"POST","path":"/repos/acme/api/issues/7/labels","body":{"labels":["wontfix"]}}`, deny},
		{"lock an issue", "github", `{"method":"PUT","path":"/repos/acme/api/issues/7/lock"}`, deny},
		{"open an issue", "github", `{"method":"POST","path":"/repos/acme/api/issues","body":{"title":"x"}}`, deny},
		{"add a collaborator", "github", `{"method":"PUT","path":"/repos/acme/api/collaborators/mallory","body":{"permission":"admin"}}`, deny},
		{"add a webhook", "github", `{"method":"POST","path":"/repos/acme/api/hooks","body":{"config":{"url":"https://evil.example"}}}`, deny},
		{"change repo settings", "github", `{"method":"PATCH","path":"/repos/acme/api","body":{"private":false}}`, deny},
		{"delete the repo", "github", `{"method":"DELETE","path":"/repos/acme/api"}`, deny},
		{"another repo's issues", "github", `{"method":"GET","path":"/repos/acme/billing/issues"}`, deny},
		{"comment on another repo", "github", `{"method":"POST","path":"/repos/acme/billing/issues/1/comments","body":{"body":"x"}}`, deny},
		{"org members", "github", `{"method":"GET","path":"/orgs/acme/members"}`, deny},
		{"read secrets", "github", `{"method":"GET","path":"/repos/acme/api/actions/secrets"}`, deny},
		{"another tool", "github_admin", `{"method":"GET","path":"/user"}`, deny},

		{"dot-dot out of the grant", "github", `{"method":"GET","path":"/repos/acme/api/issues/7/../../../hooks"}`, refuse},
		{"encoded slash", "github", `{"method":"GET","path":"/repos/acme/api/issues/7%2F..%2F..%2Fhooks"}`, refuse},
		{"absolute URL", "github", `{"method":"GET","path":"https://evil.example/repos/acme/api/issues"}`, refuse},
		{"own Authorization header", "github", `{"method":"GET","path":"/repos/acme/api/issues","headers":{"Authorization":"token ghp_other"}}`, refuse},
		{"lower-case method", "github", `{"method":"patch","path":"/repos/acme/api/issues/7"}`, refuse},
	})
}

func TestGitHubAppTriageScope(t *testing.T) {
	runCalls(t, "github-app-triage", []call{
		{"list issues", "github", `{"method":"GET","path":"/repos/acme/api/issues"}`, allow},
		{"comment", "github", `{"method":"POST","path":"/repos/acme/api/issues/7/comments","body":{"body":"Thanks!"}}`, allow},
		{"close an issue", "github", `{"method":"PATCH","path":"/repos/acme/api/issues/7","body":{"state":"closed"}}`, deny},
		{"another repo", "github", `{"method":"GET","path":"/repos/acme/billing/issues"}`, deny},
		{"add a collaborator", "github", `{"method":"PUT","path":"/repos/acme/api/collaborators/mallory"}`, deny},
	})
}

func TestCalendarOAuthScope(t *testing.T) {
	runCalls(t, "calendar-oauth", []call{
		{"team events", "calendar", `{"method":"GET","path":"/calendars/team@acme.example/events","query":{"timeMin":"2026-03-02T00:00:00Z"}}`, allow},
		{"the CEO's events", "calendar", `{"method":"GET","path":"/calendars/ceo@acme.example/events"}`, deny},
		{"create an event", "calendar", `{"method":"POST","path":"/calendars/team@acme.example/events","body":{"summary":"x"}}`, deny},
		{"list calendars", "calendar", `{"method":"GET","path":"/users/me/calendarList"}`, deny},
	})
}

// TestGitHubAppTriageMintsANarrowToken runs examples/github-app-triage
// against a fake GitHub API (standing in for api.github.com, App
// endpoints included): the session's token reaches acme/api only, with
// issues and metadata only, and is revoked when the session ends.
func TestGitHubAppTriageMintsANarrowToken(t *testing.T) {
	api := servertest.NewGitHubAPI(t, 123456, 7890123, "acme", []string{"api", "billing", "web"},
		map[string]string{"metadata": "read", "issues": "write", "contents": "write", "administration": "write", "members": "read"})
	text, err := os.ReadFile(filepath.Join("github-app-triage", "keyhole.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	local := strings.ReplaceAll(string(text), "https://api.github.com", api.URL)
	local = strings.Replace(local, "    timeout: 10s\n", "    timeout: 10s\n    allow_private_network: true\n", 1)
	rt := openExample(t, local, map[string][]byte{"gh_app_key": []byte(api.PrivateKeyPEM())})
	c, wire := servertest.ConnectStdio(t, func(ctx context.Context, in io.Reader, out io.Writer) error {
		return rt.Broker.ServeStdio(ctx, "app_triage", in, out)
	}, "examples-test")
	req := mcp.CallToolRequest{}
	req.Params.Name = "github"
	req.Params.Arguments = map[string]any{"method": "GET", "path": "/repos/acme/api/issues"}
	res, err := c.CallTool(context.Background(), req)
	if err != nil || res.IsError {
		t.Fatalf("CallTool(github) = %v %+v", err, res)
	}
	toks := api.Tokens()
	if len(toks) != 1 || strings.Join(toks[0].Repositories, ",") != "api" || len(toks[0].Permissions) != 2 ||
		toks[0].Permissions["issues"] != "write" || toks[0].Permissions["metadata"] != "read" {
		t.Fatalf("minted %+v; want one token for acme/api with issues:write and metadata:read", toks)
	}
	c.Close()
	for i := 0; !api.Tokens()[0].Revoked; i++ {
		if i == 600 {
			t.Fatalf("the session ended and its token was not revoked")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, v := range append(api.Issued(), api.PrivateKeyPEM()) {
		servertest.AssertNoSecret(t, "what the agent received", string(wire.Bytes()), v)
	}
}

// openExample runs a config (text) in a fresh data dir with secrets set.
func openExample(t *testing.T, text string, secrets map[string][]byte) *server.Runtime {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "keyhole.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := vault.KeySource{KeyFile: filepath.Join(dir, "master.key")}
	dataDir := filepath.Join(dir, "data")
	if _, err := server.Init(server.InitOptions{ConfigPath: filepath.Join(dir, "starter.yaml"), DataDir: dataDir, KeyFile: keys.KeyFile}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	v, err := vault.Open(filepath.Join(dataDir, server.VaultFile), keys)
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range secrets {
		if err := v.Set(name, value, "example"); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	rt, err := server.Open(server.RuntimeOptions{DataDir: dataDir, ConfigPath: cfgPath, Keys: keys})
	if err != nil {
		t.Fatalf("server.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Runtime.Close = %v", err)
		}
	})
	return rt
}

func TestBillingSyncScope(t *testing.T) {
	runCalls(t, "billing-sync", []call{
		{"read a customer", "stripe_customer", `{"customer":"cus_NffrFeUfNV2Hib"}`, allow},

		{"not a customer id", "stripe_customer", `{"customer":"ch_3MmlLrLkdIwHu7ix0snN0B15"}`, refuse},
		{"path in the id", "stripe_customer", `{"customer":"cus_1/../../charges"}`, refuse},
		{"expand payment methods", "stripe_customer", `{"customer":"cus_NffrFeUfNV2Hib","expand":["default_source"]}`, refuse},
		{"a method", "stripe_customer", `{"customer":"cus_NffrFeUfNV2Hib","method":"DELETE"}`, refuse},
		{"list every customer", "stripe_customer", `{}`, refuse},
		{"the whole Stripe API", "stripe", `{"method":"POST","path":"/refunds","body":{"charge":"ch_1"}}`, deny},
	})

	// The tool fixes GET /customers/{customer}; the scope would deny any
	// other request even if a later edit let the tool send one.
	cfg := load(t, "billing-sync")
	sc, _ := cfg.Policy.Scope("billing_sync")
	for _, req := range []policy.Request{
		{Tool: "stripe_customer", Method: "DELETE", Segments: []string{"customers", "cus_1"}},
		{Tool: "stripe_customer", Method: "POST", Segments: []string{"customers", "cus_1"}},
		{Tool: "stripe_customer", Method: "GET", Segments: []string{"customers"}},
		{Tool: "stripe_customer", Method: "GET", Segments: []string{"customers", "cus_1", "payment_methods"}},
		{Tool: "stripe_customer", Method: "GET", Segments: []string{"charges"}},
	} {
		if d := sc.Decide(req); d.Allow {
			t.Errorf("Decide(%s) = allow (%s), want deny", req, d.Reason)
		}
	}
}

func TestArchiveReportScope(t *testing.T) {
	runCalls(t, "archive-report", []call{
		{"list the 2026 exports", "archive_bucket", `{"action":"list","prefix":"reports/2026/","delimiter":"/"}`, allow},
		{"list one month", "archive_bucket", `{"action":"list","prefix":"reports/2026/01"}`, allow},

		{"read an export", "archive_bucket", `{"action":"get","key":"reports/2026/01.csv"}`, deny},
		{"list all reports", "archive_bucket", `{"action":"list","prefix":"reports/"}`, deny},
		{"list 2025", "archive_bucket", `{"action":"list","prefix":"reports/2025/"}`, deny},
		{"list a sibling of the prefix", "archive_bucket", `{"action":"list","prefix":"reports/2026-secret/"}`, deny},
		{"list beside the prefix", "archive_bucket", `{"action":"list","prefix":"reports/2026"}`, deny},
		{"list the bucket", "archive_bucket", `{"action":"list"}`, deny},

		{"delete", "archive_bucket", `{"action":"delete","key":"reports/2026/01.csv"}`, refuse},
		{"put", "archive_bucket", `{"action":"put","key":"reports/2026/01.csv"}`, refuse},
		{"another bucket", "archive_bucket", `{"action":"list","bucket":"acme-prod-db-backups"}`, refuse},
		{"dot-dot key", "archive_bucket", `{"action":"get","key":"reports/2026/../payroll.csv"}`, refuse},
		{"backslash prefix", "archive_bucket", `{"action":"list","prefix":"reports/2026/..\\..\\private/"}`, refuse},
	})
}

// stripeKey is the billing-sync test credential, a Stripe restricted key.
const stripeKey = "rk_test_51QkZt8LmPw3RtYvB2xN7cD4hJ9"

// customer is a full Stripe customer record, as GET /v1/customers/{id}
// returns it; billing-sync may pass on three of its fields. %EMAIL% is
// replaced by the email the test upstream returns.
const customer = `{
  "id": "cus_NffrFeUfNV2Hib",
  "object": "customer",
  "address": {"city": "Lisbon", "country": "PT", "line1": "Rua Augusta 27", "postal_code": "1100-048"},
  "balance": -4200,
  "created": 1680893993,
  "currency": "eur",
  "default_source": "card_1MvoTNLkdIwHu7ixOLNFHzqc",
  "delinquent": true,
  "description": "Escalated: threatened chargeback, see ticket 8812",
  "email": "%EMAIL%",
  "invoice_settings": {"default_payment_method": "pm_1MvoTNLkdIwHu7ixJ0Nq9X2T"},
  "metadata": {"internal_note": "VIP, do not dun", "crm_id": "A-1182", "api_key_used": "` + stripeKey + `"},
  "name": "Jenny Rosen",
  "phone": "+351 912 345 678",
  "tax_ids": {"data": [{"type": "eu_vat", "value": "PT501964843"}]}
}`

func TestBillingSyncProjectsThreeFields(t *testing.T) {
	tests := map[string]struct {
		email     string // what the upstream returns
		wantEmail string // what the agent gets; "" checks only that no key is in it
	}{
		"customer record":                  {email: "billing@example.pt", wantEmail: "billing@example.pt"},
		"key echoed in a field it may see": {email: "billing@example.pt " + stripeKey},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			up := newStripe(t, strings.ReplaceAll(customer, "%EMAIL%", tc.email))
			c, wire := startBillingSync(t, up.URL+"/v1")
			req := mcp.CallToolRequest{}
			req.Params.Name = "stripe_customer"
			req.Params.Arguments = map[string]any{"customer": "cus_NffrFeUfNV2Hib"}
			res, err := c.CallTool(context.Background(), req)
			if err != nil {
				t.Fatalf("CallTool(stripe_customer) = %v", err)
			}
			if res.IsError {
				t.Fatalf("CallTool(stripe_customer) is an error: %+v", res.Content)
			}

			got := up.Requests()
			if len(got) != 1 || got[0].Path != "/v1/customers/cus_NffrFeUfNV2Hib" {
				t.Fatalf("Stripe received %d requests, want 1 GET /v1/customers/cus_NffrFeUfNV2Hib", len(got))
			}
			if got[0].Header.Get("Authorization") != "Bearer "+stripeKey {
				t.Fatalf("Stripe did not receive the key as a bearer token (Authorization is %d bytes)", len(got[0].Header.Get("Authorization")))
			}

			body := resultBody(t, res)
			if len(body) != 3 || body["currency"] != "eur" || body["delinquent"] != true {
				t.Fatalf("result body = %v, want exactly email, currency: eur, delinquent: true", body)
			}
			if email, _ := body["email"].(string); tc.wantEmail != "" && email != tc.wantEmail {
				t.Fatalf("result email = %q, want %q", email, tc.wantEmail)
			}

			// Nothing else of the record, and no form of the key, in any
			// byte the agent received (tools/call and everything before).
			received := string(wire.Bytes())
			for _, leak := range append([]string{
				"Jenny Rosen", "Rua Augusta", "Lisbon", "+351", "PT501964843", "VIP", "A-1182", "chargeback",
				"card_1Mvo", "pm_1Mvo", "-4200", "1680893993",
			}, servertest.SecretForms(stripeKey)...) {
				if strings.Contains(received, leak) {
					t.Errorf("the agent received %q: %s", leak, received)
				}
			}
			if !strings.Contains(received, "billing@example.pt") {
				t.Fatalf("the wire log misses the result: %s", received)
			}
		})
	}
}

// resultBody returns the JSON body of an http tool's structured result,
// after checking its status is 200.
func resultBody(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	structured, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		Status int            `json:"status"`
		Body   map[string]any `json:"body"`
	}
	if err := json.Unmarshal(structured, &view); err != nil {
		t.Fatalf("structured content %s: %v", structured, err)
	}
	if view.Status != http.StatusOK {
		t.Fatalf("result status = %d, want 200: %s", view.Status, structured)
	}
	return view.Body
}

// newStripe stands in for api.stripe.com: it answers GET
// /v1/customers/cus_NffrFeUfNV2Hib with record and records every request.
func newStripe(t *testing.T, record string) *servertest.Upstream {
	return servertest.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/customers/cus_NffrFeUfNV2Hib" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_1")
		io.WriteString(w, record)
	})
}

// startBillingSync runs examples/billing-sync against upstream (standing in
// for https://api.stripe.com/v1) in a fresh data dir, and returns an
// initialized MCP client on a stdio session of billing_sync and the log of
// every byte that client received.
func startBillingSync(t *testing.T, upstream string) (*client.Client, *servertest.Wire) {
	t.Helper()
	dir := t.TempDir()
	text, err := os.ReadFile(filepath.Join("billing-sync", "keyhole.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const base = "base_url: https://api.stripe.com/v1\n"
	if strings.Count(string(text), base) != 1 {
		t.Fatalf("billing-sync/keyhole.yaml has no single %q", base)
	}
	local := strings.Replace(string(text), base, "base_url: "+upstream+"\n    allow_private_network: true\n", 1)
	cfgPath := filepath.Join(dir, "keyhole.yaml")
	if err := os.WriteFile(cfgPath, []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}

	keys := vault.KeySource{KeyFile: filepath.Join(dir, "master.key")}
	dataDir := filepath.Join(dir, "data")
	if _, err := server.Init(server.InitOptions{ConfigPath: filepath.Join(dir, "starter.yaml"), DataDir: dataDir, KeyFile: keys.KeyFile}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	v, err := vault.Open(filepath.Join(dataDir, server.VaultFile), keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Set("stripe_billing_ro", []byte(stripeKey), "billing sync"); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	rt, err := server.Open(server.RuntimeOptions{DataDir: dataDir, ConfigPath: cfgPath, Keys: keys})
	if err != nil {
		t.Fatalf("server.Open: %v", err)
	}

	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Runtime.Close = %v", err)
		}
	})
	return servertest.ConnectStdio(t, func(ctx context.Context, in io.Reader, out io.Writer) error {
		return rt.Broker.ServeStdio(ctx, "billing_sync", in, out)
	}, "examples-test")
}
