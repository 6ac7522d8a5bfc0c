package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// benchYAML is the config of the large log: 6 secrets, 8 tools, 8 scopes,
// each scope on two or three tools.
const benchYAML = `version: 1
tools:
  github: {kind: http, base_url: "https://api.github.com", credential: {secret: gh_token, inject: bearer}}
  github_app: {kind: http, base_url: "https://api.github.com", credential: {secret: gh_token, inject: bearer}}
  tracker: {kind: http, base_url: "https://tracker.acme.example/api", credential: {secret: tracker_key, inject: bearer}}
  stripe: {kind: http, base_url: "https://api.stripe.com/v1", credential: {secret: stripe_ro, inject: bearer}}
  crm: {kind: http, base_url: "https://crm.acme.example/api", credential: {secret: crm_token, inject: bearer}}
  slack: {kind: http, base_url: "https://slack.com/api", credential: {secret: slack_bot, inject: bearer}}
  archive: {kind: s3, bucket: acme-archive, region: us-east-1, credential: {secret: aws_ro, inject: aws_sigv4}}
  exports: {kind: s3, bucket: acme-exports, region: us-east-1, credential: {secret: aws_ro, inject: aws_sigv4}}
scopes:
  triage:
    grants:
      - {tool: github, methods: [GET], paths: [/repos/acme/api/issues, /repos/acme/api/issues/*]}
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/comments]}
      - {tool: slack, methods: [POST], paths: [/chat.postMessage]}
  release:
    grants:
      - {tool: github, methods: [GET, POST], paths: [/repos/acme/api/releases, /repos/acme/api/releases/*]}
      - {tool: github_app, methods: [GET], paths: [/repos/acme/*/tags]}
  support:
    grants:
      - {tool: tracker, methods: [GET], paths: [/tickets, /tickets/*]}
      - {tool: tracker, methods: [POST], paths: [/tickets/*/comments, /users]}
      - {tool: crm, methods: [GET], paths: [/accounts/*]}
  billing:
    grants:
      - {tool: stripe, methods: [GET], paths: [/customers/*, /invoices/*]}
      - {tool: crm, methods: [GET, PATCH], paths: [/accounts/*]}
  reports:
    grants:
      - {tool: archive, actions: [list, get], prefixes: [reports/]}
      - {tool: exports, actions: [list], prefixes: [""]}
  cleanup:
    grants:
      - {tool: archive, actions: [list, get, head], prefixes: [""]}
      - {tool: github, methods: [GET, DELETE], paths: ["/repos/acme/scratch/**"]}
  notify:
    grants:
      - {tool: slack, methods: [POST], paths: [/chat.postMessage, /reactions.add]}
      - {tool: tracker, methods: [GET], paths: [/tickets/*]}
  admin:
    grants:
      - {tool: github, methods: [GET, POST, PUT, PATCH, DELETE], paths: ["/repos/acme/**"]}
      - {tool: crm, methods: [GET, PATCH, DELETE], paths: [/accounts/*]}
`

// benchRequests are what each scope's agents ask for: args per tool, "%d"
// replaced by an id. The last ones are denied.
var benchRequests = map[string][][2]string{
	"triage":  {{"github", `{"method":"GET","path":"/repos/acme/api/issues/%d"}`}, {"github", `{"method":"GET","path":"/repos/acme/api/issues"}`}, {"github", `{"method":"POST","path":"/repos/acme/api/issues/%d/comments","body":{"body":"x"}}`}, {"github", `{"method":"DELETE","path":"/repos/acme/api/issues/%d"}`}},
	"release": {{"github", `{"method":"GET","path":"/repos/acme/api/releases/%d"}`}, {"github_app", `{"method":"GET","path":"/repos/acme/api/tags"}`}, {"github", `{"method":"POST","path":"/repos/acme/api/releases","body":{"tag":"v1"}}`}, {"github", `{"method":"DELETE","path":"/repos/acme/api"}`}},
	"support": {{"tracker", `{"method":"GET","path":"/tickets/%d"}`}, {"tracker", `{"method":"POST","path":"/tickets/%d/comments","body":{"b":"x"}}`}, {"crm", `{"method":"GET","path":"/accounts/A-%d"}`}, {"tracker", `{"method":"DELETE","path":"/users/%d"}`}},
	"billing": {{"stripe", `{"method":"GET","path":"/customers/cus_%d"}`}, {"crm", `{"method":"PATCH","path":"/accounts/A-%d","body":{"email":"e"}}`}, {"stripe", `{"method":"GET","path":"/invoices/in_%d"}`}, {"stripe", `{"method":"POST","path":"/refunds","body":{"c":"x"}}`}},
	"reports": {{"archive", `{"action":"get","key":"reports/2026/%d.csv"}`}, {"archive", `{"action":"list","prefix":"reports/2026/"}`}, {"exports", `{"action":"list","prefix":"x/"}`}, {"archive", `{"action":"get","key":"payroll/%d.csv"}`}},
	"cleanup": {{"archive", `{"action":"list","prefix":"tmp/%d/"}`}, {"archive", `{"action":"head","key":"tmp/%d.bin"}`}, {"github", `{"method":"GET","path":"/repos/acme/scratch/x"}`}, {"github", `{"method":"DELETE","path":"/repos/acme/api"}`}},
	"notify":  {{"slack", `{"method":"POST","path":"/chat.postMessage","body":{"t":"x"}}`}, {"tracker", `{"method":"GET","path":"/tickets/%d"}`}, {"slack", `{"method":"POST","path":"/reactions.add","body":{"t":"x"}}`}, {"slack", `{"method":"POST","path":"/admin.users.invite","body":{}}`}},
	"admin":   {{"github", `{"method":"GET","path":"/repos/acme/api/hooks/%d"}`}, {"crm", `{"method":"PATCH","path":"/accounts/A-%d","body":{"x":1}}`}, {"github", `{"method":"PUT","path":"/repos/acme/api/collaborators/u%d"}`}, {"github", `{"method":"GET","path":"/orgs/acme"}`}},
}

// benchStart is when the large log begins; it spans 30 days.
var benchStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const benchCallsPerSession = 100

// largeLog opens (writing it first if needed) a log of about n entries
// over 30 days: sessions of 100 calls each, a quarter of them denied,
// spread over the 8 scopes. KEYHOLE_REPORT_BENCH_DIR keeps it between
// runs.
func largeLog(b *testing.B, n int) (*Sources, int) {
	b.Helper()
	cfg, err := config.Parse("bench.yaml", []byte(benchYAML), tools.Env{})
	if err != nil {
		b.Fatal(err)
	}
	dir := os.Getenv("KEYHOLE_REPORT_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("report-%d.sqlite", n))
	key := bytes.Repeat([]byte{5}, 32)
	// An allowed call is two entries, a denied one one.
	sessions := n * 4 / 7 / benchCallsPerSession
	if _, err := os.Stat(path + ".done"); err != nil {
		os.Remove(path)
		start := time.Now()
		writeLargeLog(b, cfg, path, key, sessions)
		os.WriteFile(path+".done", nil, 0o600)
		b.Logf("wrote %d sessions in %v", sessions, time.Since(start))
	}
	l, err := audit.Open(audit.Options{Path: path, Key: key, ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	var secrets []vault.Meta
	for _, s := range []string{"aws_ro", "crm_token", "gh_token", "slack_bot", "stripe_ro", "tracker_key"} {
		secrets = append(secrets, vault.Meta{Name: s, Version: 2, Created: benchStart.AddDate(-1, 0, 0), Updated: benchStart.AddDate(0, -4, 0)})
	}
	return &Sources{Log: l, Config: cfg, Secrets: secrets, Now: benchStart.Add(30 * 24 * time.Hour)}, sessions
}

func benchSession(i int) string { return fmt.Sprintf("ses_bench%07d", i) }

// writeLargeLog writes the sessions' calls as the broker records them,
// from 64 writers so that group commits carry many entries.
func writeLargeLog(b *testing.B, cfg *config.Loaded, path string, key []byte, sessions int) {
	l, err := audit.Open(audit.Options{Path: path, Key: key})
	if err != nil {
		b.Fatal(err)
	}
	scopes := cfg.Policy.ScopeNames()
	// Each call's time comes from one counter over the 30 days, as a
	// broker records calls in the order they start: sessions overlap, and
	// seq and time grow together.
	span := 30 * 24 * time.Hour
	total := int64(sessions * benchCallsPerSession)
	var clock atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				i := int(next.Add(1)) - 1
				if i >= sessions {
					return
				}
				scope := scopes[i%len(scopes)]
				sc, _ := cfg.Policy.Scope(scope)
				client := fmt.Sprintf("agent-%s-%d/1.0", scope, i%5)
				for k := range benchCallsPerSession {
					at := benchStart.Add(time.Duration(int64(span) / total * clock.Add(1)))
					req := benchRequests[scope][rng.IntN(3)]
					if k%4 == 3 {
						req = benchRequests[scope][3]
					}
					args := strings.ReplaceAll(req[1], "%d", strconv.Itoa(rng.IntN(5000)))
					if err := benchCall(l, cfg, sc, at, benchSession(i), scope, client, req[0], args); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
}

// benchCall records one call as the broker does.
func benchCall(l *audit.Log, cfg *config.Loaded, sc *policy.Scope, at time.Time, session, scope, client, tool, args string) error {
	ctx := context.Background()
	t := cfg.Tools[tool]
	rec := audit.Record{Time: at, Session: session, Scope: scope, Client: client, Tool: tool, Kind: t.Kind(), Credential: t.SecretName(), Args: json.RawMessage(args)}
	c, err := t.Prepare(json.RawMessage(args))
	if err != nil {
		return fmt.Errorf("prepare %s %s: %w", tool, args, err)
	}
	f := c.AuditFields()
	rec.Method, rec.Host, rec.Path, rec.QueryNames, rec.Bucket, rec.Action, rec.Key = f.Method, f.Host, f.Path, f.QueryNames, f.Bucket, f.Action, f.Key
	d := sc.Decide(c.Request)
	if !d.Allow {
		rec.Decision, rec.Code, rec.Reason = audit.Deny, d.Code, d.Reason
		_, err := l.Write(ctx, rec)
		return err
	}
	rec.Decision, rec.Grant, rec.CredVersion = audit.Allow, d.Grant, 2
	p, err := l.Begin(ctx, rec)
	if err != nil {
		return err
	}
	out := rec
	out.Status, out.BytesIn, out.Duration, out.CredentialKind = 200, 900, 40*time.Millisecond, tools.CredStatic
	return p.Finish(ctx, out)
}

// reportCPU reports the CPU time an op used beside its wall time: on a
// loaded machine the two differ by the time spent waiting for a core.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if used := cpuTime() - start; used > 0 {
			b.ReportMetric(float64(used.Milliseconds())/float64(b.N), "cpu-ms/op")
		}
	}
}

func benchN(b *testing.B) int {
	n := 100_000
	if s := os.Getenv("KEYHOLE_REPORT_BENCH_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 10_000 {
			b.Fatalf("KEYHOLE_REPORT_BENCH_N=%q: want an integer >= 10000", s)
		}
		n = v
	}
	return n
}

// BenchmarkReports measures the four reports over a log of
// KEYHOLE_REPORT_BENCH_N entries (default 100,000; BENCHMARKS.md reports
// 1,000,000), against the targets of issue 16: report session ≤ 300 ms,
// blast radius ≤ 2 s, scope suggest over 30 days ≤ 2 s, policy test ≥
// 100,000 replayed calls/s.
func BenchmarkReports(b *testing.B) {
	src, sessions := largeLog(b, benchN(b))
	ctx := context.Background()
	b.Run("session", func(b *testing.B) {
		defer reportCPU(b)()
		for i := 0; b.Loop(); i++ {
			// Sessions across the log, of every scope.
			id := benchSession((i*7919 + sessions/2) % sessions)
			rep, err := Session(ctx, src, id, SessionOptions{})
			if err != nil || len(rep.Timeline) != benchCallsPerSession {
				b.Fatalf("Session(%s) = %d calls, %v", id, len(rep.Timeline), err)
			}
		}
	})
	b.Run("blast-radius", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			rep, err := BlastRadius(ctx, src, BlastOptions{})
			if err != nil || len(rep.Secrets) != 6 || rep.Secrets[2].Sessions == 0 {
				b.Fatalf("BlastRadius = %+v, %v", rep, err)
			}
		}
	})
	b.Run("suggest-30d", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			s, err := Suggest(ctx, src, SuggestOptions{Scope: "triage", Since: 30 * 24 * time.Hour})
			if err != nil || s.Sessions != sessions/8 {
				b.Fatalf("Suggest = %d sessions, %v; want %d", s.Sessions, err, sessions/8)
			}
		}
	})
	next, err := config.Parse("next.yaml", []byte(strings.Replace(benchYAML, "paths: [/repos/acme/api/issues, /repos/acme/api/issues/*]", "paths: [/repos/acme/api/issues]", 1)), tools.Env{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("policy-test", func(b *testing.B) {
		var calls int
		cpu := cpuTime()
		for b.Loop() {
			rep, err := Replay(ctx, src, next, ReplayOptions{})
			if err != nil || len(rep.Narrowed) != 1 {
				b.Fatalf("Replay = %+v, %v", rep, err)
			}
			calls += rep.Replayed
		}
		b.ReportMetric(float64(calls)/b.Elapsed().Seconds(), "calls/s")
		if used := cpuTime() - cpu; used > 0 {
			b.ReportMetric(float64(calls)/used.Seconds(), "calls/cpu-s")
		}
	})
}
