package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// heldUpstream answers /issues/hold only once release is closed, and every
// other path at once.
func heldUpstream(t *testing.T) (srv *httptest.Server, arrived <-chan struct{}, release func()) {
	arrive := make(chan struct{}, 1)
	rel := make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/issues/hold" {
			arrive <- struct{}{}
			<-rel
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"number":1}`)
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(func() { release(); srv.Close() })
	return srv, arrive, release
}

// TestAuditTailFollowsALiveBroker: beside a running broker, `audit tail`
// shows a call still at the upstream as running, and `audit tail -f`
// prints records written after it started.
func TestAuditTailFollowsALiveBroker(t *testing.T) {
	up, arrived, release := heldUpstream(t)
	h := brokerHome(t, up.URL)
	_, url := startServe(t, h)
	_, c := h.httpSession(t, url, "tail-agent")
	if res, err := call(c, "/issues/1"); err != nil || res.IsError {
		t.Fatalf("first call: %v %+v", err, res)
	}

	follow := exec.Command(binary, "audit", "tail", "-f", "--json")
	follow.Dir, follow.Env = h.dir, h.env
	out, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { follow.Process.Kill(); follow.Wait() })
	lines := make(chan auditLine, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l auditLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && !strings.HasPrefix(l.Tool, "keyhole.") {
				lines <- l
			}
		}
		close(lines)
	}()
	next := func(what string) auditLine {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("audit tail -f ended before %s", what)
			}
			return l
		case <-time.After(15 * time.Second):
			t.Fatalf("audit tail -f printed nothing for %s", what)
		}
		return auditLine{}
	}
	if l := next("the first call"); l.Decision != "allow" || l.Status != 200 {
		t.Fatalf("audit tail -f first line = %+v, want the first call, allow 200", l)
	}

	done := make(chan error, 1)
	go func() {
		res, err := call(c, "/issues/hold")
		if err == nil && res.IsError {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("the held call never reached the upstream")
	}
	table := h.ok("", "audit", "tail").stdout
	if !strings.Contains(table, "/issues/hold") || !strings.Contains(table, "running") {
		t.Errorf("audit tail while /issues/hold is at the upstream =\n%s\nwant its row with decision running", table)
	}
	if r := h.ok("", "audit", "tail", "--decision", "running", "--json", "--tool", "tracker"); strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stdout, `"decision":"running"`) {
		t.Errorf("audit tail --decision running = %q, want exactly the held call", r.stdout)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("held call: %v", err)
	}
	if res, err := call(c, "/issues/3"); err != nil || res.IsError {
		t.Fatalf("third call: %v %+v", err, res)
	}
	// A poll may catch a call between its intent and its outcome: it is
	// printed as running, then again once complete.
	completed := func(what string) auditLine {
		t.Helper()
		l := next(what)
		if l.Decision == "running" {
			l = next(what + "'s outcome")
		}
		return l
	}
	if l := completed("the held call"); l.Decision != "allow" || l.Status != 200 || l.Path != "/issues/hold" {
		t.Fatalf("audit tail -f line for the held call = %+v, want allow 200", l)
	}
	if l := completed("the third call"); l.Decision != "allow" || l.Path != "/issues/3" {
		t.Fatalf("audit tail -f line for the third call = %+v, want allow", l)
	}
}
