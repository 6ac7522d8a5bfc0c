package demo

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// demoAPI is the embedded issue tracker `keyhole demo` runs on loopback:
// a small API in the shape of GitHub's issues, with an admin endpoint and
// one endpoint that carelessly echoes the request's Authorization header.
// It answers only requests that carry its token, so a successful call
// shows that keyhole injected the key the agent never held.
type demoAPI struct {
	URL   string
	srv   *http.Server
	token []byte
	// seen, if set, is told of every request before it is answered.
	seen func(*http.Request)

	mu       sync.Mutex
	received []string // "METHOD /path" of every request, in order
}

// startDemoAPI serves the issue tracker on 127.0.0.1 at a free port.
func startDemoAPI(token []byte, seen func(*http.Request)) (*demoAPI, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: listen on loopback: %w", err)
	}
	a := &demoAPI{URL: "http://" + ln.Addr().String(), token: token, seen: seen}
	a.srv = &http.Server{Handler: a, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}

// Close stops the server and waits for its handlers to return.
func (a *demoAPI) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("demo: stop the embedded API: %w", err)
	}
	return nil
}

// Received returns "METHOD /path" of every request the API received.
func (a *demoAPI) Received() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.received...)
}

const demoIssuesPath = "/repos/acme/api/issues"

var demoIssues = []map[string]any{
	{"number": 41, "title": "Crash on start when config is empty", "state": "open", "comments": 2},
	{"number": 42, "title": "Typo in README install section", "state": "open", "comments": 0},
	{"number": 43, "title": "Flaky test: TestReloadUnderLoad", "state": "open", "comments": 5},
}

// ServeHTTP implements http.Handler.
func (a *demoAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.received = append(a.received, r.Method+" "+r.URL.Path)
	a.mu.Unlock()
	if a.seen != nil {
		a.seen(r)
	}
	auth := r.Header.Get("Authorization")
	if subtle.ConstantTimeCompare([]byte(auth), append([]byte("Bearer "), a.token...)) != 1 {
		demoJSON(w, http.StatusUnauthorized, map[string]any{"message": "Bad credentials"})
		return
	}
	path, method := r.URL.Path, r.Method
	rest, underIssues := strings.CutPrefix(path, demoIssuesPath+"/")
	switch {
	case path == demoIssuesPath && method == http.MethodGet:
		demoJSON(w, http.StatusOK, demoIssues)
	case path == "/debug/echo" && method == http.MethodGet:
		// The careless endpoint: it reflects the caller's credentials.
		demoJSON(w, http.StatusOK, map[string]any{"authorization": auth, "note": "debug echo of your request headers"})
	case strings.HasPrefix(path, "/admin"):
		demoJSON(w, http.StatusOK, map[string]any{"users": []string{"alice", "bob"}, "note": "admin only: every user's keys"})
	case underIssues && strings.HasSuffix(rest, "/comments") && method == http.MethodPost:
		var body struct {
			Body string `json:"body"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Body == "" {
			demoJSON(w, http.StatusUnprocessableEntity, map[string]any{"message": "body is required"})
			return
		}
		demoJSON(w, http.StatusCreated, map[string]any{"id": 9001, "body": body.Body, "user": "keyhole-demo-bot"})
	case underIssues && !strings.Contains(rest, "/"):
		switch method {
		case http.MethodGet:
			for _, is := range demoIssues {
				if fmt.Sprint(is["number"]) == rest {
					demoJSON(w, http.StatusOK, is)
					return
				}
			}
			demoJSON(w, http.StatusNotFound, map[string]any{"message": "Not Found"})
		case http.MethodPatch:
			demoJSON(w, http.StatusOK, map[string]any{"number": rest, "state": "closed"})
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			demoJSON(w, http.StatusMethodNotAllowed, map[string]any{"message": "method not allowed"})
		}
	default:
		demoJSON(w, http.StatusNotFound, map[string]any{"message": "Not Found"})
	}
}

func demoJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
