package main

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// consoleBroker is `keyhole serve --http 127.0.0.1:0 --ui 127.0.0.1:0` in
// a home: its MCP URL and its console's origin.
type consoleBroker struct {
	cmd     *exec.Cmd
	mcpURL  string
	console string
	// log is what the broker wrote to stderr.
	log servertest.SyncBuffer
}

// startConsole starts the broker with its console and waits until its
// log names both listeners (the MCP one is logged once every listener
// serves). The process is killed at cleanup if the test has not ended it.
func startConsole(t *testing.T, h *home, extra ...string) *consoleBroker {
	t.Helper()
	serve := exec.Command(binary, append([]string{"serve", "--http", "127.0.0.1:0", "--ui", "127.0.0.1:0"}, extra...)...)
	serve.Dir, serve.Env = h.dir, h.env
	stderr, err := serve.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			serve.Process.Kill()
			serve.Wait()
		}
	})
	b := &consoleBroker{cmd: serve}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			b.log.Write([]byte(line + "\n"))
			if b.console == "" && strings.Contains(line, "browser console") {
				b.console = strings.TrimSuffix(field(line, "url="), "/ui/")
			}
			if strings.Contains(line, "MCP over streamable HTTP") {
				b.mcpURL = field(line, "url=")
				close(found)
				break
			}
		}
		io.Copy(&b.log, stderr)
	}()
	select {
	case <-found:
	case <-time.After(60 * time.Second):
		t.Fatal("the broker did not report its listeners")
	}
	if b.console == "" {
		t.Fatal("the broker did not log its console's URL")
	}
	return b
}

// field returns the value after key in a log line, up to a space.
func field(line, key string) string {
	_, rest, ok := strings.Cut(line, key)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}

func TestUIPrintsAOneTimeLoginLink(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	b := startConsole(t, h)

	r := h.ok("", "ui")
	link := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(link, b.console+"/ui/login?t=") || !strings.Contains(r.stderr, "signs in once") {
		t.Fatalf("keyhole ui = %q (stderr %q), want a login link at %s", r.stdout, r.stderr, b.console)
	}
	br := servertest.NewBrowser(b.console)
	if err := br.SignIn(link); err != nil {
		t.Fatal(err)
	}
	resp, body, err := br.Do(http.MethodGet, "/ui/", nil, nil)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, "Overview") {
		t.Fatalf("the overview = %v %v", resp.StatusCode, err)
	}
	again := servertest.NewBrowser(b.console)
	if err := again.SignIn(link); err == nil {
		t.Fatal("a login link signed a second browser in")
	}
	h.assertNowhere(r.stdout, r.stderr, body)
}

func TestUIRefusesWhatItMustNot(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	if r := h.run("", "ui"); r.code != 1 || !strings.Contains(r.stderr, "no keyhole broker is running") {
		t.Fatalf("keyhole ui without a broker = exit %d %q, want a refusal", r.code, r.stderr)
	}
	if r := h.run("", "serve", "--ui", "0.0.0.0:0"); r.code != 1 || !strings.Contains(r.stderr, "--tls-cert") {
		t.Fatalf("serve --ui 0.0.0.0:0 without TLS = exit %d %q, want a refusal naming --tls-cert", r.code, r.stderr)
	}
	if r := h.run("", "serve", "--ui", "127.0.0.1:x:y"); r.code != 1 || !strings.Contains(r.stderr, "want host:port") {
		t.Fatalf("serve --ui with a bad address = exit %d %q", r.code, r.stderr)
	}
	serve, _ := startServe(t, h)
	if r := h.run("", "ui"); r.code != 1 || !strings.Contains(r.stderr, "serves no console") || !strings.Contains(r.stderr, "--ui") {
		t.Fatalf("keyhole ui with a broker without --ui = exit %d %q, want it to say how to serve one", r.code, r.stderr)
	}
	serve.Process.Kill()
	serve.Wait()
}

func TestUIOverTLSSetsASecureHostCookie(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	certFile, keyFile, pool := selfSigned(t, h.dir)
	b := startConsole(t, h, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(b.console, "https://127.0.0.1:") {
		t.Fatalf("the console is at %q, want https", b.console)
	}
	link := strings.TrimSpace(h.ok("", "ui").stdout)
	httpc := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := httpc.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(c) != 1 || c[0].Name != "__Host-keyhole_console" || !c[0].Secure || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("login over TLS = %d, cookies %v; want a Secure, HttpOnly, SameSite=Strict __Host- cookie", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatal("no Strict-Transport-Security over TLS")
	}
}
