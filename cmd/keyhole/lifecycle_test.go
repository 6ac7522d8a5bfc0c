package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/servertest"
)

// brokerStatus is `keyhole status --json`, as a program reads it.
type brokerStatus struct {
	PID         int    `json:"pid"`
	Version     string `json:"version"`
	DataDir     string `json:"data_dir"`
	AutoStarted bool   `json:"auto_started"`
	Sessions    int    `json:"sessions"`
	Clients     int    `json:"clients"`
	Uptime      *int64 `json:"uptime_seconds"`
	Configs     []struct {
		Path   string   `json:"path"`
		Scopes []string `json:"scopes"`
	} `json:"configs"`
	Listeners struct {
		Socket string `json:"socket"`
		HTTP   string `json:"http"`
	} `json:"listeners"`
}

// status runs `keyhole status --json`; code is its exit code.
func (h *home) status() (brokerStatus, int) {
	h.t.Helper()
	r := h.run("", "status", "--json")
	var st brokerStatus
	if r.code == 0 {
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			h.t.Fatalf("status --json = %q: %v", r.stdout, err)
		}
	}
	return st, r.code
}

// waitStatus polls status until ok holds (events, not time, decide: the
// deadline only bounds a test that would otherwise hang).
func (h *home) waitStatus(t *testing.T, what string, ok func(brokerStatus, int) bool) brokerStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, code := h.status()
		if ok(st, code) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed %s (last: %+v, exit %d)", what, st, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBrokerYouCanSeeStopAndReplace (issue 13 item 5): status says what
// the broker serves (exit 3 when none runs); an operator's serve --http
// tells the user what to run while editors use the background broker, and
// takes over from it once they are gone; stop lets a running call finish
// and be recorded, and the data dir is free when it returns; stop --force
// kills a broker that does not stop in time.
func TestBrokerYouCanSeeStopAndReplace(t *testing.T) {
	up, arrived, release := heldUpstream(t)
	h := brokerHome(t, up.URL)
	h.killBrokerAtCleanup(t)

	for _, cmd := range [][]string{{"status"}, {"status", "--json"}, {"stop"}} {
		if r := h.run("", cmd...); r.code != 3 || !strings.Contains(r.stderr, "no broker is running") {
			t.Fatalf("%v with no broker = exit %d %q; want 3 and no broker is running", cmd, r.code, r.stderr)
		}
	}

	editor := h.stdioClient(t)
	st, code := h.status()
	dataDir := filepath.Join(h.dir, "data", "keyhole")
	if code != 0 || st.PID != h.brokerPID(t) || st.Version != server.Version || st.DataDir != dataDir || !st.AutoStarted ||
		st.Sessions != 1 || st.Clients != 1 || st.Uptime == nil || len(st.Configs) != 1 || st.Configs[0].Path != filepath.Join(h.dir, "keyhole.yaml") ||
		st.Listeners.Socket != filepath.Join(dataDir, "keyhole.sock") {
		t.Fatalf("status --json = %+v (exit %d); want the background broker's pid, version, data dir, config, 1 session of 1 client, its socket", st, code)
	}
	if r := h.ok("", "status"); !strings.Contains(r.stdout, "keyhole stdio") || !strings.Contains(r.stdout, "1 active") {
		t.Fatalf("status = %q", r.stdout)
	}

	// An operator's serve while an editor uses the background broker.
	r := h.run("", "serve", "--http", "127.0.0.1:0")
	if r.code != 1 || !strings.Contains(r.stderr, "keyhole stop") || !strings.Contains(r.stderr, "keyhole serve --http 127.0.0.1:0") || !strings.Contains(r.stderr, "1 editor session") {
		t.Fatalf("serve beside a busy background broker = exit %d %q; want what to run", r.code, r.stderr)
	}
	editor.Close()
	old := h.waitStatus(t, "no client", func(st brokerStatus, code int) bool { return code == 0 && st.Clients == 0 })
	_, url := startServe(t, h)
	st, _ = h.status()
	if st.PID == old.PID || st.AutoStarted || st.Listeners.HTTP == "" {
		t.Fatalf("after serve --http, status = %+v; want a new broker (not pid %d) started by serve, with its HTTP listener", st, old.PID)
	}
	waitGone(t, old.PID)
	if r := h.run("", "serve", "--http", "127.0.0.1:0"); r.code != 1 || !strings.Contains(r.stderr, "keyhole stop") {
		t.Fatalf("a second serve = exit %d %q; want it to say keyhole stop", r.code, r.stderr)
	}

	// stop waits for a running call, which is recorded whole.
	_, c := h.httpSession(t, url, "agent")
	type res struct {
		text  string
		isErr bool
	}
	got := make(chan res, 1)
	go func() {
		out, err := call(c, "/issues/hold")
		if err != nil {
			got <- res{err.Error(), true}
			return
		}
		got <- res{servertest.ResultText(out), out.IsError}
	}()
	<-arrived
	var stopped result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); stopped = h.run("", "stop") }()
	h.waitStatus(t, "the broker stop accepting", func(_ brokerStatus, code int) bool { return code == 3 })
	release()
	wg.Wait()
	if stopped.code != 0 || !strings.Contains(stopped.stdout, "stopped the broker") {
		t.Fatalf("stop = exit %d %q %q", stopped.code, stopped.stdout, stopped.stderr)
	}
	if g := <-got; g.isErr {
		t.Fatalf("the call running at stop = %q; want its result", g.text)
	}
	if _, err := os.Stat(filepath.Join(dataDir, server.PIDFile)); !os.IsNotExist(err) {
		t.Fatalf("the pid file is still there after stop returned: %v", err)
	}
	// The data dir is free at once: this opens it in-process.
	if r := h.run("", "secret", "list"); r.code != 0 {
		t.Fatalf("secret list right after stop = exit %d %q; want the data dir free", r.code, r.stderr)
	}
	var held []auditLine
	for _, rec := range h.auditRecords(t) {
		if rec.Decision != "allow" || rec.Status != 200 {
			t.Fatalf("audit after a graceful stop holds %+v; want every call allowed and complete", rec)
		}
		held = append(held, rec)
	}
	if len(held) != 1 {
		t.Fatalf("audit holds %d records, want the held call's", len(held))
	}

	// stop --force kills a broker whose calls outlast the timeout.
	serve := exec.Command(binary, "serve", "--shutdown-timeout", "1h")
	serve.Dir, serve.Env = h.dir, h.env
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serve.Process.Kill(); serve.Wait() })
	h.waitStatus(t, "the new broker", func(_ brokerStatus, code int) bool { return code == 0 })
	up2, arrived2, release2 := heldUpstream(t)
	defer release2()
	cfg := strings.Replace(readFile(t, filepath.Join(h.dir, "keyhole.yaml")), up.URL, up2.URL, 1)
	os.WriteFile(filepath.Join(h.dir, "keyhole.yaml"), []byte(cfg), 0o600)
	agent := h.stdioClient(t)
	go call(agent, "/issues/hold")
	<-arrived2
	if r := h.run("", "stop", "--timeout", "300ms"); r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("stop while a call outlasts --timeout = exit %d %q; want exit 1 naming --force", r.code, r.stderr)
	}
	if r := h.run("", "stop", "--force", "--timeout", "300ms"); r.code != 0 {
		t.Fatalf("stop --force = exit %d %q", r.code, r.stderr)
	}
	serve.Wait()
	if ws, ok := serve.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("stop --force: the broker exited with %v, want killed", serve.ProcessState)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAKilledBrokersEditorSessionsReadEnded (issue 13 item 5): the
// sessions of editors whose broker was killed read ended (broker stopped)
// once a broker starts again, not active until their ttl.
func TestAKilledBrokersEditorSessionsReadEnded(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	h.killBrokerAtCleanup(t)
	c := h.stdioClient(t)
	defer c.Close()
	list := h.sessions(h.dir, false)
	if len(list) != 1 {
		t.Fatalf("session list = %+v, want the editor's session", list)
	}
	id := list[0].ID
	pid := h.brokerPID(t)
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)

	next := h.stdioClient(t)
	defer next.Close()
	for _, s := range h.sessions(h.dir, true) {
		if s.ID == id && (s.State != "ended" || s.EndReason != "broker stopped") {
			t.Fatalf("the killed broker's editor session = %+v; want ended, reason broker stopped", s)
		}
	}
	if got := h.sessions(h.dir, false); len(got) != 1 || got[0].ID == id {
		t.Fatalf("active sessions after the restart = %+v; want only the new editor's", got)
	}
}

// versioned builds the keyhole binary as release version v.
func versioned(t *testing.T, v string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "keyhole-"+v)
	build := exec.Command("go", "build", "-race", "-ldflags", "-X github.com/keyhole-dev/keyhole/server.Version="+v, "-o", out, ".")
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build keyhole %s: %v\n%s", v, err, msg)
	}
	return out
}

// TestANewerStdioReplacesAnIdleBroker (issue 13 item 5): a keyhole stdio
// from a newer binary joins an older background broker that serves other
// editors, with a warning naming both versions on its stderr and in the
// broker's log; once no editor uses it, the next newer stdio replaces it.
func TestANewerStdioReplacesAnIdleBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two versions of keyhole")
	}
	v1, v2 := versioned(t, "v0.1.0"), versioned(t, "v0.2.0")
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	h.killBrokerAtCleanup(t)

	old := h.stdioIn(t, v1, h.dir, nil, "--scope", "triage")
	st, _ := h.status()
	if st.Version != "v0.1.0" {
		t.Fatalf("the first editor's broker is %q, want v0.1.0", st.Version)
	}
	var stderr servertest.SyncBuffer
	newer := h.stdioIn(t, v2, h.dir, &stderr, "--scope", "triage")
	if text, isErr := callTool(t, newer, "tracker", map[string]any{"method": "GET", "path": "/issues/1"}); isErr {
		t.Fatalf("the newer editor's call through the older broker = %q", text)
	}
	if after, _ := h.status(); after.PID != st.PID || after.Version != "v0.1.0" {
		t.Fatalf("a newer stdio replaced a broker that served another editor: %+v", after)
	}
	for what, text := range map[string]string{"the newer stdio's stderr": stderr.String(), "broker.log": readFile(t, filepath.Join(h.dir, "data", "keyhole", "broker.log"))} {
		if !strings.Contains(text, "v0.1.0") || !strings.Contains(text, "v0.2.0") {
			t.Fatalf("%s does not warn naming both versions:\n%s", what, text)
		}
	}

	old.Close()
	newer.Close()
	h.waitStatus(t, "no client", func(st brokerStatus, code int) bool { return code == 0 && st.Clients == 0 })
	next := h.stdioIn(t, v2, h.dir, nil, "--scope", "triage")
	st2, _ := h.status()
	if st2.Version != "v0.2.0" || st2.PID == st.PID || !st2.AutoStarted {
		t.Fatalf("after the editors left, a newer stdio's broker = %+v; want a new background broker of v0.2.0", st2)
	}
	waitGone(t, st.PID)
	if text, isErr := callTool(t, next, "tracker", map[string]any{"method": "GET", "path": "/issues/2"}); isErr {
		t.Fatalf("a call through the replacing broker = %q", text)
	}
	// An older stdio joins the newer broker and leaves it be.
	h.stdioIn(t, v1, h.dir, nil, "--scope", "triage")
	if st3, _ := h.status(); st3.PID != st2.PID {
		t.Fatalf("an older stdio replaced a newer broker: %+v", st3)
	}
}
