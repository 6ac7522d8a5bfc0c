package demo

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// demoRun is one run of the demo with what its API received.
type demoRun struct {
	out    string
	err    error
	tmp    string // the parent of the demo's temp dir
	mu     sync.Mutex
	reqs   []string // "METHOD /path"
	tokens []string // the Authorization header of each request
}

func runDemoForTest(t *testing.T, ctx context.Context, o Options) *demoRun {
	t.Helper()
	r := &demoRun{tmp: t.TempDir()}
	o.TempDir = r.tmp
	var buf bytes.Buffer
	r.err = runDemo(ctx, &buf, o, func(req *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.reqs = append(r.reqs, req.Method+" "+req.URL.Path)
		r.tokens = append(r.tokens, req.Header.Get("Authorization"))
	})
	r.out = buf.String()
	return r
}

// assertTempDirGone fails if the demo left anything in its temp parent.
func assertTempDirGone(t *testing.T, parent string) {
	t.Helper()
	left, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("demo left %d entries in %s, want none: first is %s", len(left), parent, left[0].Name())
	}
}

// demoBlock returns the transcript block of step n (from its title to
// the next blank line).
func demoBlock(t *testing.T, out string, n int, title string) string {
	t.Helper()
	head := "\n" + strconv.Itoa(n) + ". " + title + "\n"
	i := strings.Index(out, head)
	if i < 0 {
		t.Fatalf("transcript has no step %q:\n%s", head, out)
	}
	block := out[i+1:]
	if j := strings.Index(block, "\n\n"); j >= 0 {
		block = block[:j]
	}
	return block
}

func TestDemo_TranscriptAuditAndCleanup(t *testing.T) {
	now := time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)
	r := runDemoForTest(t, context.Background(), Options{Now: func() time.Time { return now }})
	if r.err != nil {
		t.Fatalf("Demo() = %v, want nil; output:\n%s", r.err, r.out)
	}

	// What each step shows: the agent's request, keyhole's decision and
	// reason, and what the agent got.
	steps := []struct {
		title string
		want  []string
	}{
		{"Read the open issues", []string{
			`agent asked  github {"method":"GET","path":"/repos/acme/api/issues"}`,
			"keyhole      ALLOW granted by github: GET /repos/acme/api/issues\n",
			`agent got    200 [{"comments":2,"number":41,"state":"open","title":"Crash on start when config is empty"}`,
		}},
		{"Comment on issue 42", []string{
			`"method":"POST","path":"/repos/acme/api/issues/42/comments"`,
			"keyhole      ALLOW granted by github: POST /repos/acme/api/issues/*/comments\n",
			`agent got    201 {"body":"Reproduced on main; the fix is in #44.","id":9001`,
		}},
		{"Close issue 42", []string{
			`"method":"PATCH","path":"/repos/acme/api/issues/42","body":{"state":"closed"}`,
			"keyhole      DENY  not_granted: PATCH /repos/acme/api/issues/42 is not granted to scope triage\n",
			"agent got    error: denied: PATCH /repos/acme/api/issues/42 is not granted to scope triage",
		}},
		{"Delete issue 43", []string{
			`"method":"DELETE","path":"/repos/acme/api/issues/43"`,
			"keyhole      DENY  not_granted: DELETE /repos/acme/api/issues/43 is not granted to scope triage\n",
			"agent got    error: denied: DELETE /repos/acme/api/issues/43",
		}},
		{"Climb out of the granted paths to the admin endpoint", []string{
			`"path":"/repos/acme/api/issues/../../../admin"`,
			"keyhole      DENY  invalid_arguments: invalid arguments: path: segment 5 is a dot segment\n",
			"agent got    error: invalid arguments: path: segment 5 is a dot segment",
		}},
		{"Call the endpoint that echoes its Authorization header", []string{
			`"method":"GET","path":"/debug/echo"`,
			"keyhole      ALLOW granted by github: GET /debug/echo\n",
			"the key came back in the response: scrubbed",
			`agent got    200 {"authorization":"Bearer [REDACTED]"`,
		}},
	}
	for i, st := range steps {
		block := demoBlock(t, r.out, i+1, st.title)
		for _, w := range st.want {
			if !strings.Contains(block, w) {
				t.Errorf("step %d (%s) does not show %q:\n%s", i+1, st.title, w, block)
			}
		}
	}

	// The upstream received exactly the allowed calls, each with the key
	// keyhole injected; the transcript says so too.
	wantReqs := []string{"GET /repos/acme/api/issues", "POST /repos/acme/api/issues/42/comments", "GET /debug/echo"}
	if strings.Join(r.reqs, "\n") != strings.Join(wantReqs, "\n") {
		t.Fatalf("upstream received %q, want exactly %q", r.reqs, wantReqs)
	}
	token := strings.TrimPrefix(r.tokens[0], "Bearer ")
	if !regexp.MustCompile(`^ghp_[A-Za-z0-9]{36}$`).MatchString(token) {
		t.Fatalf("upstream Authorization = %q, want Bearer and a GitHub-shaped demo token", r.tokens[0])
	}
	for i, tok := range r.tokens {
		if tok != "Bearer "+token {
			t.Fatalf("request %d (%s) carried a different credential than the first", i, r.reqs[i])
		}
	}
	if want := "The API received 3 of the agent's 6 calls; the denied ones never left keyhole:\n  " + strings.Join(wantReqs, "\n  ") + "\n"; !strings.Contains(r.out, want) {
		t.Errorf("transcript does not list what the API received, want %q:\n%s", want, r.out)
	}

	// The demo's token appears nowhere in the output, in any encoding.
	for _, f := range servertest.SecretForms(token) {
		if strings.Contains(r.out, f) {
			t.Fatalf("output contains a form of the demo token (%q...):\n%s", f[:6], r.out)
		}
	}

	// One audit row per call, in order, stamped by the demo's clock.
	rows := regexp.MustCompile(`(?m)^  (\d+)\s+(\S+)\s+ses_\S+\s+github\s+(\S+)\s+(\S+)\s+(allow|deny)\s+(\S+)\s+github_token(?: v1)?\s+(yes|-)\s+\S+\s+.+$`).FindAllStringSubmatch(r.out, -1)
	wantRows := []struct{ method, path, decision, status string }{
		{"GET", "/repos/acme/api/issues", "allow", "200"},
		{"POST", "/repos/acme/api/issues/42/comments", "allow", "201"},
		{"PATCH", "/repos/acme/api/issues/42", "deny", "-"},
		{"DELETE", "/repos/acme/api/issues/43", "deny", "-"},
		{"-", "-", "deny", "-"},
		{"GET", "/debug/echo", "allow", "200"},
	}
	if len(rows) != len(wantRows) {
		t.Fatalf("audit table has %d rows, want %d:\n%s", len(rows), len(wantRows), r.out)
	}
	stamp := now.Local().Format("15:04:05.000")
	for i, w := range wantRows {
		got := rows[i]
		if got[2] != stamp || got[3] != w.method || got[4] != w.path || got[5] != w.decision || got[6] != w.status {
			t.Errorf("audit row %d = %q, want time %s, %s %s %s %s", i, got[0], stamp, w.method, w.path, w.decision, w.status)
		}
	}
	if !regexp.MustCompile(`keyhole audit verify:\n  audit log ok: \d+ entries, head \d+, chain intact\n`).MatchString(r.out) {
		t.Errorf("transcript has no passing audit verify:\n%s", r.out)
	}

	wantEnd := "Do it for real:\n" +
		"  keyhole init\n" +
		"  printf %s \"$GITHUB_TOKEN\" | keyhole secret set github_token\n" +
		"  claude mcp add keyhole -- keyhole stdio --scope triage\n"
	if !strings.HasSuffix(r.out, wantEnd) {
		t.Errorf("transcript does not end with the three commands %q:\n%s", wantEnd, r.out)
	}
	if strings.Contains(r.out, "\x1b[") {
		t.Errorf("output has ANSI escapes without Color")
	}
	assertTempDirGone(t, r.tmp)
}

func TestDemo_ColorOnlyWhenAsked(t *testing.T) {
	r := runDemoForTest(t, context.Background(), Options{Color: true})
	if r.err != nil {
		t.Fatalf("Demo(Color) = %v, want nil", r.err)
	}
	for _, want := range []string{"\x1b[32mALLOW\x1b[0m", "\x1b[31mDENY \x1b[0m", "\x1b[32mok\x1b[0m"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("coloured output lacks %q", want)
		}
	}
	assertTempDirGone(t, r.tmp)
}

func TestDemo_CancelledRemovesTempDir(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := runDemoForTest(t, ctx, Options{})
	if r.err == nil {
		t.Fatalf("Demo(cancelled ctx) = nil, want an error; output:\n%s", r.out)
	}
	if !strings.HasPrefix(r.err.Error(), "demo: ") {
		t.Errorf("Demo(cancelled ctx) = %q, want a demo: prefix", r.err)
	}
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Demo(cancelled ctx) = %v, want it to wrap context.Canceled", r.err)
	}
	if len(r.reqs) != 0 {
		t.Errorf("upstream received %q from a cancelled demo, want nothing", r.reqs)
	}
	assertTempDirGone(t, r.tmp)
}
