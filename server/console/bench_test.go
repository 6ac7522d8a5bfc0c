package console

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// benchKey is the audit key of the benchmark's log (kept between runs).
var benchKey = []byte("console-bench-audit-key-01234567")

// BenchmarkPages renders each page of the console over an audit log of
// KEYHOLE_CONSOLE_BENCH_N calls (default 100000; make bench-console uses
// 1000000): 1,000 sessions over 30 days, 3 in 4 calls allowed (an intent
// and an outcome), 1 in 4 denied. KEYHOLE_CONSOLE_BENCH_DIR keeps the log
// between runs (writing a million calls takes minutes). ns/op is the time
// to render one page, in process, without the network.
func BenchmarkPages(b *testing.B) {
	n := 100_000
	if s := os.Getenv("KEYHOLE_CONSOLE_BENCH_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1000 {
			b.Fatalf("KEYHOLE_CONSOLE_BENCH_N=%q: want an integer >= 1000", s)
		}
		n = v
	}
	dir := os.Getenv("KEYHOLE_CONSOLE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	now := time.Now().UTC().Truncate(time.Second)
	log := benchLog(b, filepath.Join(dir, fmt.Sprintf("console-%d.sqlite", n)), n, now)
	defer log.Close()

	ss := newFakeSessions()
	for i := range 1000 {
		ss.add(policy.SessionInfo{ID: benchSession(i), Scope: "triage", Label: "agent " + strconv.Itoa(i), Created: now.Add(-time.Hour), Expires: now.Add(time.Hour), Calls: n / 1000})
	}
	acc, err := access.Open(access.Options{Key: []byte("0123456789abcdef0123456789abcdef"), Audit: log, NotifySend: "/nonexistent"})
	if err != nil {
		b.Fatal(err)
	}
	defer acc.Close()
	cfg, err := config.Parse("keyhole.yaml", []byte(testConfig), tools.Env{})
	if err != nil {
		b.Fatal(err)
	}
	con, err := New(Options{
		Audit: log, Sessions: ss, Access: boundAccess{m: acc, ss: ss},
		Secrets: func() ([]vault.Meta, error) {
			return []vault.Meta{{Name: "github_token", Version: 1, Created: now.Add(-time.Hour), Updated: now.Add(-time.Hour)}}, nil
		},
		Config: func() *config.Loaded { return cfg }, BaseURL: "http://127.0.0.1:7778", Loopback: true,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer con.Close()
	cookie, _, err := con.auth.create()
	if err != nil {
		b.Fatal(err)
	}
	h := con.Handler()
	mid := strconv.Itoa(n / 2)
	pages := []struct{ name, path string }{
		{"overview", "/ui/"},
		{"sessions", "/ui/sessions"},
		{"session", "/ui/sessions/" + benchSession(500)},
		{"audit", "/ui/audit"},
		{"audit_deep_page", "/ui/audit?before=" + mid},
		{"audit_newer_page", "/ui/audit?after=" + mid},
		{"audit_session", "/ui/audit?session=" + benchSession(7)},
		{"audit_denied", "/ui/audit?decision=deny"},
		{"audit_tool", "/ui/audit?tool=github"},
		{"audit_rare_decision", "/ui/audit?decision=error"},
		{"audit_rare_scope", "/ui/audit?scope=nope"},
		{"audit_since_1h", "/ui/audit?since=1h"},
		{"audit_empty_window", "/ui/audit?since=1s"},
		{"audit_old_window", "/ui/audit?until=29d&since=30d"},
		{"record", "/ui/audit/" + mid},
		{"blast_radius", "/ui/blast-radius"},
		{"access", "/ui/access"},
		{"secrets", "/ui/secrets"},
		{"config", "/ui/config"},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, p.path, nil)
				req.Host = "127.0.0.1:7778"
				req.AddCookie(&http.Cookie{Name: con.cookieName(), Value: cookie})
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("GET %s = %d: %s", p.path, w.Code, w.Body.String())
				}
			}
		})
	}
}

func benchSession(i int) string { return fmt.Sprintf("ses_bench%04d", i) }

// benchLog opens the log at path, writing n calls first when it holds
// none.
func benchLog(b *testing.B, path string, n int, now time.Time) *audit.Log {
	b.Helper()
	log, err := audit.Open(audit.Options{Path: path, Key: benchKey})
	if err != nil {
		b.Fatal(err)
	}
	if last, err := log.Query(audit.Filter{Limit: 1}); err != nil {
		b.Fatal(err)
	} else if len(last) == 1 {
		return log
	}
	start := time.Now()
	const writers = 64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	span := 30 * 24 * time.Hour
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := w; i < n; i += writers {
				rec := audit.Record{
					Time:    now.Add(-span + span/time.Duration(n)*time.Duration(i)),
					Session: benchSession(i % 1000), Scope: "triage", Client: "bench/1.0", Tool: "github", Kind: "http",
					Method: "GET", Host: "api.example.com", Path: "/repos/acme/api/issues/" + strconv.Itoa(i), Credential: "github_token",
				}
				if (i/writers)%4 == 3 {
					rec.Method, rec.Decision, rec.Code, rec.Reason = "DELETE", audit.Deny, policy.CodeNotGranted, "DELETE is not granted to scope triage"
					if _, err := log.Write(ctx, rec); err != nil {
						errs <- err
						return
					}
					continue
				}
				rec.Decision = audit.Allow
				p, err := log.Begin(ctx, rec)
				if err == nil {
					rec.Status, rec.Duration = 200, 80*time.Millisecond
					err = p.Finish(ctx, rec)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Logf("wrote %d calls in %v", n, time.Since(start))
	return log
}
