package console

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
)

func TestLoginLinkWorksOnceAndExpires(t *testing.T) {
	h := newHarness(t)
	b := h.browser()

	link, expires, err := h.con.LoginURL()
	if err != nil || !expires.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("LoginURL = %v, expires %v; want a link valid until %v", err, expires, t0.Add(2*time.Minute))
	}
	if !strings.HasPrefix(link, h.srv.URL+"/ui/login?t=") {
		t.Fatalf("LoginURL = %q, want %s/ui/login?t=…", link, h.srv.URL)
	}
	if resp, _ := b.do(http.MethodGet, link, nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use = %d, want 303", resp.StatusCode)
	}
	fresh := h.browser()
	if resp, body := fresh.do(http.MethodGet, link, nil, nil); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Set-Cookie") != "" || !strings.Contains(body, "keyhole ui") {
		t.Fatalf("second use = %d (Set-Cookie %q), want 403 saying how to get a link:\n%s", resp.StatusCode, resp.Header.Get("Set-Cookie"), body)
	}

	late, _, _ := h.con.LoginURL()
	h.clock.Advance(2 * time.Minute)
	if resp, _ := fresh.do(http.MethodGet, late, nil, nil); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("a link used 2 minutes after it was issued = %d, want 403", resp.StatusCode)
	}
	h.clock.Advance(-time.Second)
	for _, bad := range []string{"", "t=", "t=AAAA", "t=" + strings.Repeat("A", 43), "t=" + strings.Repeat("x", 4096)} {
		if resp, _ := fresh.do(http.MethodGet, "/ui/login?"+bad, nil, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("login with %.20q = %d, want 403", bad, resp.StatusCode)
		}
	}
	// A link nobody used still works after those refusals.
	ok, _, _ := h.con.LoginURL()
	if resp, _ := fresh.do(http.MethodGet, ok, nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a fresh link = %d, want 303", resp.StatusCode)
	}
}

func TestSessionCookieFlags(t *testing.T) {
	for name, tc := range map[string]struct {
		base     string
		cookie   string
		secure   bool
		wantHSTS bool
	}{
		"http on loopback": {"", "keyhole_console", false, false},
		"https":            {"https://console.example.com:7778", "__Host-keyhole_console", true, true},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) {
				if tc.base != "" {
					o.BaseURL, o.Loopback = tc.base, false
				}
			})
			b := h.browser()
			link, _, _ := h.con.LoginURL()
			u, _ := url.Parse(link)
			hdr := map[string]string{}
			if tc.base != "" {
				hdr["Host"] = u.Host
			}
			resp, _ := b.do(http.MethodGet, h.srv.URL+u.RequestURI(), nil, hdr)
			cookies := resp.Cookies()
			if len(cookies) != 1 {
				t.Fatalf("login set %d cookies, want 1: %v", len(cookies), resp.Header["Set-Cookie"])
			}
			c := cookies[0]
			if c.Name != tc.cookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure != tc.secure || c.Path != "/" || c.Domain != "" || len(c.Value) < 40 {
				t.Fatalf("cookie = %+v, want %s, HttpOnly, SameSite=Strict, Secure=%v, Path=/, no Domain, a long random value", c, tc.cookie, tc.secure)
			}
			if got := resp.Header.Get("Strict-Transport-Security") != ""; got != tc.wantHSTS {
				t.Fatalf("HSTS present = %v, want %v", got, tc.wantHSTS)
			}
		})
	}
}

func TestSignedOutBrowsersGetNothing(t *testing.T) {
	h := newHarness(t)
	req, _ := h.fill()
	anon := h.browser()
	for _, path := range []string{"/ui/", "/ui/sessions", "/ui/sessions/ses_1", "/ui/audit", "/ui/audit/1", "/ui/audit/events", "/ui/access", "/ui/access/" + req.ID, "/ui/access/events", "/ui/blast-radius", "/ui/secrets", "/ui/config"} {
		resp, body := anon.get(path)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "ses_1") || strings.Contains(body, "github_token") || !strings.Contains(body, "keyhole ui --open") {
			t.Errorf("GET %s signed out = %d, want 401 showing only how to sign in:\n%s", path, resp.StatusCode, body)
		}
	}
	if resp, _ := anon.do(http.MethodPost, "/ui/sessions/ses_1/revoke", url.Values{"csrf": {"x"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("revoke signed out = %d, want 403", resp.StatusCode)
	}
	if resp, _ := anon.do(http.MethodPost, "/ui/access/"+req.ID+"/approve", url.Values{"csrf": {"x"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("approve signed out = %d, want 403", resp.StatusCode)
	}
	if s, _ := h.ss.Show("ses_1"); s.State != policy.StateActive {
		t.Fatalf("ses_1 is %s after requests signed out, want active", s.State)
	}
	if r, _ := h.acc.Show(req.ID); r.State != access.StateOpen {
		t.Fatalf("%s is %s after requests signed out, want open", req.ID, r.State)
	}
}

func TestIdleTimeoutAndSignOut(t *testing.T) {
	h := newHarness(t)
	b := h.signIn()
	h.clock.Advance(DefaultIdleTimeout - time.Second)
	b.mustGet("/ui/sessions") // a request resets the idle time
	h.clock.Advance(DefaultIdleTimeout - time.Second)
	b.mustGet("/ui/")
	h.clock.Advance(DefaultIdleTimeout)
	if resp, _ := b.get("/ui/"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after %v idle = %d, want 401", DefaultIdleTimeout, resp.StatusCode)
	}

	b = h.signIn()
	resp, body := b.post("/ui/logout", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
		t.Fatalf("sign out = %d:\n%s", resp.StatusCode, body)
	}
	if c := resp.Cookies(); len(c) != 1 || c[0].MaxAge >= 0 || c[0].Value != "" {
		t.Fatalf("sign out cookies = %v, want the cookie cleared", resp.Header["Set-Cookie"])
	}
	if resp, _ := b.get("/ui/"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after sign out = %d, want 401", resp.StatusCode)
	}

	// However busy, a console session ends MaxLifetime after it began.
	b = h.signIn()
	for range int(MaxLifetime / (DefaultIdleTimeout / 2)) {
		h.clock.Advance(DefaultIdleTimeout / 2)
		b.get("/ui/")
	}
	if resp, _ := b.get("/ui/"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after %v of use = %d, want 401", MaxLifetime, resp.StatusCode)
	}
}

func TestStateChangesWithoutTheCSRFTokenAreRefused(t *testing.T) {
	h := newHarness(t)
	req, _ := h.fill()
	b := h.signIn()
	other := h.signIn() // another console session's token is not this one's
	actions := []string{"/ui/sessions/ses_1/revoke", "/ui/access/" + req.ID + "/approve", "/ui/access/" + req.ID + "/deny", "/ui/verify", "/ui/logout"}
	for _, path := range actions {
		for name, form := range map[string]url.Values{
			"no token":           {"csrf": {""}, "scope": {"once"}},
			"wrong token":        {"csrf": {"AAAA" + b.CSRF[4:]}, "scope": {"once"}},
			"another's token":    {"csrf": {other.CSRF}, "scope": {"once"}},
			"token in the query": {"csrf": {""}, "scope": {"once"}},
		} {
			target := path
			if name == "token in the query" {
				target += "?csrf=" + url.QueryEscape(b.CSRF)
			}
			resp, body := b.do(http.MethodPost, target, form, nil)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
				t.Errorf("POST %s with %s = %d, want 403 naming the CSRF token", path, name, resp.StatusCode)
			}
		}
	}
	// A GET never changes anything either.
	for _, path := range actions {
		if resp, _ := b.get(path); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET %s = %d, want 404 or 405", path, resp.StatusCode)
		}
	}
	if s, _ := h.ss.Show("ses_1"); s.State != policy.StateActive {
		t.Fatalf("ses_1 is %s, want active: a refused request changed it", s.State)
	}
	if r, _ := h.acc.Show(req.ID); r.State != access.StateOpen {
		t.Fatalf("%s is %s, want open: a refused request answered it", req.ID, r.State)
	}
	if h.con.verify.state(t0).Running || h.con.verify.state(t0).Last != nil {
		t.Fatal("a refused request started a verification")
	}
	b.mustGet("/ui/") // and the session is still signed in
}

func TestForeignHostAndOriginAreRefused(t *testing.T) {
	h := newHarness(t)
	req, _ := h.fill()
	b := h.signIn()
	self := strings.TrimPrefix(h.srv.URL, "http://")
	_, port, _ := strings.Cut(self, ":")
	refused := map[string]map[string]string{
		"Host evil.example":               {"Host": "evil.example:" + port},
		"Host localhost.evil.example":     {"Host": "localhost.evil.example:" + port},
		"Host 127.0.0.1.nip.io":           {"Host": "127.0.0.1.nip.io:" + port},
		"Host 10.0.0.1":                   {"Host": "10.0.0.1:" + port},
		"Origin evil.example":             {"Origin": "https://evil.example"},
		"Origin null":                     {"Origin": "null"},
		"Origin on another port":          {"Origin": "http://127.0.0.1:1"},
		"Origin of localhost, Host of IP": {"Origin": "http://localhost:" + port},
	}
	for name, hdr := range refused {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			path, form := "/ui/sessions", url.Values(nil)
			if m == http.MethodPost {
				path, form = "/ui/sessions/ses_1/revoke", url.Values{"csrf": {b.CSRF}}
			}
			if resp, _ := b.do(m, path, form, hdr); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s with %s = %d, want 403", m, path, name, resp.StatusCode)
			}
		}
	}
	crossSite := map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
	if resp, _ := b.do(http.MethodPost, "/ui/access/"+req.ID+"/deny", url.Values{"csrf": {b.CSRF}}, crossSite); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site form post = %d, want 403", resp.StatusCode)
	}
	if resp, _ := b.do(http.MethodGet, "/ui/audit/events", nil, map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site fetch of the event stream = %d, want 403", resp.StatusCode)
	}
	if s, _ := h.ss.Show("ses_1"); s.State != policy.StateActive {
		t.Fatalf("ses_1 is %s after refused requests, want active", s.State)
	}
	if r, _ := h.acc.Show(req.ID); r.State != access.StateOpen {
		t.Fatalf("%s is %s after refused requests, want open", req.ID, r.State)
	}
	// The console's own names pass: loopback in any spelling (a browser
	// keeps cookies per name, so another name is signed out there), and a
	// same-origin post.
	for host, want := range map[string]int{self: http.StatusOK, "localhost:" + port: http.StatusUnauthorized, "LOCALHOST:" + port: http.StatusUnauthorized, "[::1]:" + port: http.StatusUnauthorized} {
		if resp, _ := b.do(http.MethodGet, "/ui/sessions", nil, map[string]string{"Host": host}); resp.StatusCode != want {
			t.Errorf("GET with Host %s = %d, want %d", host, resp.StatusCode, want)
		}
	}
	// Chromium posts a form of a no-referrer page with Origin: null and
	// Sec-Fetch-Site: same-origin.
	for _, same := range []map[string]string{{"Origin": "null", "Sec-Fetch-Site": "same-origin"}, {"Origin": h.srv.URL, "Sec-Fetch-Site": "same-origin"}} {
		if resp, _ := b.do(http.MethodPost, "/ui/verify", url.Values{"csrf": {b.CSRF}}, same); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("a same-origin post with %v = %d, want 303", same, resp.StatusCode)
		}
	}
	h.con.verify.wg.Wait()
	for _, hdr := range []map[string]string{{"Origin": "null", "Sec-Fetch-Site": "same-site"}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}} {
		if resp, _ := b.do(http.MethodPost, "/ui/sessions/ses_1/revoke", url.Values{"csrf": {b.CSRF}}, hdr); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("a post with %v = %d, want 403", hdr, resp.StatusCode)
		}
	}
	same := map[string]string{"Origin": h.srv.URL, "Sec-Fetch-Site": "same-origin"}
	if resp, _ := b.do(http.MethodPost, "/ui/sessions/ses_1/revoke", url.Values{"csrf": {b.CSRF}}, same); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a same-origin revoke = %d, want 303", resp.StatusCode)
	}
}

func TestSecurityHeadersAndNoInlineScript(t *testing.T) {
	h := newHarness(t)
	req, _ := h.fill()
	b := h.signIn()
	inline := []*regexp.Regexp{
		regexp.MustCompile(`<script[^>]*>[^<]`), // a script with a body
		regexp.MustCompile(`<script>`),          // a script without a source
		regexp.MustCompile(`\son[a-z]+\s*=`),    // event handler attributes
		regexp.MustCompile(`\sstyle\s*=`),       // inline style
		regexp.MustCompile(`(?i)javascript:`),   // script URLs
	}
	for _, path := range []string{"/ui/", "/ui/sessions", "/ui/sessions/ses_1", "/ui/audit", "/ui/audit/1", "/ui/access", "/ui/access/" + req.ID, "/ui/blast-radius", "/ui/secrets", "/ui/config", "/ui/nothing", "/ui/login?t=x"} {
		resp, body := b.get(path)
		for k, want := range map[string]string{
			"Content-Security-Policy": csp,
			"X-Frame-Options":         "DENY",
			"Referrer-Policy":         "no-referrer",
			"X-Content-Type-Options":  "nosniff",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, k, got, want)
			}
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s: Cache-Control = %q, want no-store", path, cc)
		}
		for _, re := range inline {
			if m := re.FindString(body); m != "" {
				t.Errorf("GET %s holds inline script or style: %q", path, m)
			}
		}
	}
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
}

// hostile are agent-chosen strings that try to run script, break out of
// an attribute, or forge and hide text on screen.
var hostile = []string{
	`<script>alert("xss")</script>`,
	`"><img src=x onerror=alert(1)>`,
	`' onmouseover='alert(2)`,
	"\x1b[2K\x1b[8mhidden",
	"evil\u202egnp.exe",
	"line\nbreak\rreturn",
	"zero\u200bwidth\ufeff",
	"</textarea></pre></title>",
}

func TestAgentChosenStringsRenderInert(t *testing.T) {
	h := newHarness(t)
	joined := strings.Join(hostile, " ")
	label := "label " + joined
	h.ss.add(policy.SessionInfo{ID: "ses_x", Scope: "triage", Label: label, Created: t0, Expires: t0.Add(time.Hour), EndReason: joined})
	seq := h.write(audit.Record{Session: "ses_x", Scope: "triage", Client: "client " + joined, Tool: "github", Kind: "http", Method: "GET",
		Host: "api.example.com", Path: "/repos/" + joined, QueryNames: []string{joined}, Decision: audit.Deny, Code: "not_granted",
		Reason: "reason " + joined, Args: mustJSON(t, map[string]any{"path": "/repos/" + joined, "body": joined})})
	req, _ := h.hold(ask(func(a *access.Ask) {
		a.Session, a.Label, a.Client = "ses_x", label, "client "+joined
		a.Call.Path = "/repos/acme/" + url.PathEscape(joined)
		a.Call.Query = []tools.Param{{Name: joined, Value: joined}}
		a.Call.Headers = []tools.Param{{Name: "X-Note", Value: joined}}
		a.Call.Body = []byte(joined)
	}))
	b := h.signIn()
	stream := openStream(t, b, "/ui/audit/events?after=0")
	pages := []string{"/ui/", "/ui/sessions", "/ui/sessions/ses_x", "/ui/audit", "/ui/audit?tool=github", "/ui/audit/" + itoa(int(seq)), "/ui/access", "/ui/access/" + req.ID}
	for _, path := range pages {
		assertInert(t, "GET "+path, b.mustGet(path), true)
	}
	events := stream.until(t, func(ev string) bool { return strings.Contains(ev, `"seq":`+itoa(int(seq))+`,`) })
	assertInert(t, "the audit event stream", events, false)
	if !strings.Contains(events, `\u003cscript\u003e`) {
		t.Errorf("the event stream does not carry the path as escaped JSON:\n%s", events)
	}
}

// assertInert fails unless text shows the hostile strings only as inert
// text: no markup or attribute breakout they carry, no raw control, bidi
// or invisible character, and their escapes in place. html says text is
// a page (else JSON, which a script sets as textContent).
func assertInert(t *testing.T, what, text string, html bool) {
	t.Helper()
	bad := []string{"<script>alert", "<img src=x", "</textarea></pre>", "\x1b", "\u202e", "\u200b", "\ufeff", "\r"}
	if html {
		bad = append(bad, `"><img src=x`, `' onmouseover='`)
	}
	for _, b := range bad {
		if strings.Contains(text, b) {
			t.Errorf("%s holds %q raw", what, b)
		}
	}
	// A body preview keeps its lines in a <pre> block; nowhere else may an
	// agent break a line.
	if strings.Contains(preBlocks.ReplaceAllString(text, ""), "line\nbreak") {
		t.Errorf("%s holds an agent-chosen line break raw outside a preview", what)
	}
	if !strings.Contains(text, `\x1b[2K`) {
		t.Errorf("%s does not show the escape sequence as text (\\x1b[2K)", what)
	}
	if !strings.Contains(text, `\u202e`) {
		t.Errorf("%s does not show the bidi override as text (\\u202e)", what)
	}
}

var preBlocks = regexp.MustCompile(`(?s)<pre class="agent block">.*?</pre>`)

// stream is an open event stream and what it sent so far.
type stream struct {
	lines chan string
	seen  strings.Builder
}

func openStream(t *testing.T, b *browser, path string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.h.srv.URL+path, nil)
	resp, err := b.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("GET %s = %d %s, want an event stream", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{lines: make(chan string, 1024)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	return s
}

// until reads events until one satisfies ok, and returns everything read.
func (s *stream) until(t *testing.T, ok func(event string) bool) string {
	t.Helper()
	var ev strings.Builder
	for line := range s.lines {
		s.seen.WriteString(line + "\n")
		if line != "" {
			ev.WriteString(line + "\n")
			continue
		}
		if ok(ev.String()) {
			return s.seen.String()
		}
		ev.Reset()
	}
	t.Fatalf("the stream ended before the event came:\n%s", s.seen.String())
	return ""
}

func TestTheWebhookURLIsNeverShown(t *testing.T) {
	h := newHarness(t)
	req, _ := h.fill()
	b := h.signIn()
	for _, path := range []string{"/ui/", "/ui/config", "/ui/access", "/ui/access/" + req.ID, "/ui/blast-radius", "/ui/secrets", "/ui/sessions/ses_1"} {
		if body := b.mustGet(path); strings.Contains(body, webhookToken) || strings.Contains(body, "hooks.example.com") {
			t.Errorf("GET %s shows the webhook URL", path)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
