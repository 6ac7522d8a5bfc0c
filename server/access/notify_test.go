package access

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

const webhookKey = "whsec_0123456789abcdefghijklmnop"

// hookServer receives webhook posts; the first failures answers are 503.
type hookServer struct {
	*httptest.Server
	mu       sync.Mutex
	failures int
	posts    []hookPost
	got      chan hookPost
}

type hookPost struct {
	header http.Header
	body   []byte
}

func newHookServer(t *testing.T, failures int) *hookServer {
	h := &hookServer{failures: failures, got: make(chan hookPost, 64)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p := hookPost{header: r.Header.Clone(), body: body}
		h.mu.Lock()
		h.posts = append(h.posts, p)
		fail := h.failures > 0
		if fail {
			h.failures--
		}
		h.mu.Unlock()
		if fail {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		h.got <- p
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) next(t *testing.T) hookPost {
	t.Helper()
	select {
	case p := <-h.got:
		return p
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook post arrived")
		return hookPost{}
	}
}

func TestWebhookPostsSignedEventsWithRetries(t *testing.T) {
	hook := newHookServer(t, 2)
	var backoffs []int
	var mu sync.Mutex
	e := newTestEnv(t, func(o *Options) {
		o.WebhookKey = func(name string) ([]byte, error) {
			if name != "hook_key" {
				t.Errorf("webhook key asked for %q", name)
			}
			return []byte(webhookKey), nil
		}
		o.Backoff = func(n int) time.Duration {
			mu.Lock()
			backoffs = append(backoffs, n)
			mu.Unlock()
			return 0
		}
	})
	hooked := func(a *Ask) {
		noWait(a)
		a.Approval.Webhook, a.Approval.WebhookSecret = hook.URL+"/keyhole?token=receiver", "hook_key"
		a.Call.Body = []byte(`{"token":"` + testSecret + `"}`)
	}
	ans := e.m.Ask(context.Background(), ask(hooked))
	first := hook.next(t)
	e.m.Approve(ans.ID, "os:alice", "fine", false, e.ss)
	second := hook.next(t)
	if len(hook.posts) != 4 {
		t.Fatalf("webhook saw %d posts, want 2 failed and 2 delivered", len(hook.posts))
	}
	if mu.Lock(); len(backoffs) != 2 || backoffs[0] != 1 || backoffs[1] != 2 {
		t.Fatalf("backoffs = %v, want attempts 1 and 2 retried", backoffs)
	}
	mu.Unlock()
	for i, p := range []hookPost{first, second} {
		ts := p.header.Get(HeaderTimestamp)
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			t.Fatalf("post %d timestamp %q", i, ts)
		}
		if want := Sign([]byte(webhookKey), ts, p.body); !hmac.Equal([]byte(p.header.Get(HeaderSignature)), []byte(want)) {
			t.Fatalf("post %d signature %q, want %q", i, p.header.Get(HeaderSignature), want)
		}
		if Sign([]byte("another key"), ts, p.body) == p.header.Get(HeaderSignature) {
			t.Fatal("the signature does not depend on the key")
		}
		servertest.AssertNoSecret(t, "webhook post", string(p.body)+p.header.Get(HeaderSignature), testSecret, webhookKey)
	}
	var wb WebhookBody
	if err := json.Unmarshal(first.body, &wb); err != nil || wb.Event != "access.request" || wb.Request.ID != ans.ID ||
		wb.Approve != "keyhole access approve "+ans.ID || first.header.Get(HeaderEvent) != "access.request" || wb.Request.Call.Body == nil {
		t.Fatalf("first post = %+v (%v)", wb, err)
	}
	var wb2 WebhookBody
	if err := json.Unmarshal(second.body, &wb2); err != nil || wb2.Event != "access.approve" || wb2.Request.Decision.By != "os:alice" || wb2.Approve != "" {
		t.Fatalf("second post = %+v (%v)", wb2, err)
	}
}

func TestWebhookRefusalIsNotRetried(t *testing.T) {
	var n int
	var mu sync.Mutex
	done := make(chan struct{}, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		done <- struct{}{}
	}))
	defer srv.Close()
	e := newTestEnv(t, func(o *Options) {
		o.WebhookKey = func(string) ([]byte, error) { return []byte(webhookKey), nil }
		o.Backoff = func(int) time.Duration { return 0 }
	})
	e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Approval.Webhook, a.Approval.WebhookSecret = srv.URL, "k" }))
	<-done
	e.m.Close() // waits for the delivery goroutine
	if n != 1 {
		t.Fatalf("a 401 was tried %d times, want once", n)
	}
}

func TestDesktopNotificationOnANewRequest(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "args")
	script := filepath.Join(dir, "notify-send")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n--\\n' \"$a\"; done >> "+out+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, func(o *Options) { o.NotifySend = script })
	ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) {
		a.Approval.Notify = true
		a.Call.Path = "/x/<b>bold</b>/" + testSecret
		a.Client = "evil\x1b[2K\u202e"
	}))
	e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/quiet" })) // notify off: no notification
	e.m.Close()                                                                         // waits for notify-send
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("notify-send did not run: %v", err)
	}
	got := string(b)
	for _, want := range []string{"--app-name=keyhole", "keyhole: approve " + ans.ID + "?", "keyhole access approve " + ans.ID, "/x/&lt;b&gt;bold&lt;/b&gt;/[REDACTED]", "risks: write, new path", "client evil?[2K?"} {
		if !strings.Contains(got, want) {
			t.Errorf("notify-send args lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "/quiet") || strings.Contains(got, "\x1b") {
		t.Fatalf("notify-send args = %q", got)
	}
	servertest.AssertNoSecret(t, "desktop notification", got, testSecret)
}

// A request restored after a restart is still announced to its webhook,
// whose URL (which may carry the receiver's token) is never shown.
func TestWebhookOfARestoredRequest(t *testing.T) {
	hook := newHookServer(t, 0)
	e := newTestEnv(t, func(o *Options) {
		o.WebhookKey = func(string) ([]byte, error) { return []byte(webhookKey), nil }
	})
	target := hook.URL + "/keyhole?token=receiver-token-123"
	ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Approval.Webhook, a.Approval.WebhookSecret = target, "hook_key" }))
	hook.next(t)
	e.restart()
	e.m.Approve(ans.ID, "os:alice", "", false, e.ss)
	var wb WebhookBody
	if p := hook.next(t); json.Unmarshal(p.body, &wb) != nil || wb.Event != "access.approve" || wb.Request.ID != ans.ID {
		t.Fatalf("post after a restart = %s", p.body)
	}
	shown, _ := json.Marshal(e.m.List(true))
	if strings.Contains(string(shown), "receiver-token-123") {
		t.Fatalf("the webhook URL is shown: %s", shown)
	}
}
