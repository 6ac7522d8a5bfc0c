package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"
)

// boundIDs binds each Mcp-Session-Id to the phantom token that created it
// (another token presenting it gets 404, as if it did not exist), and
// keeps at most max of them per token: an initialize beyond that closes
// the token's session used least recently. An id is forgotten when its
// session is closed, ended by mcp-go's idle sweeper or evicted, so the
// maps hold only open sessions.
type boundIDs struct {
	max int
	// evict closes an MCP session in mcp-go; set once, before serving.
	evict func(id string)

	mu      sync.Mutex
	byID    map[string]*boundID
	byToken map[string][]string // token hash -> its ids, oldest first
}

type boundID struct {
	token string
	used  time.Time
}

func newBoundIDs(max int) *boundIDs {
	return &boundIDs{max: max, byID: map[string]*boundID{}, byToken: map[string][]string{}}
}

// internalKey marks a request the broker makes to mcp-go itself (closing
// an evicted session), which may end any session.
type internalKey struct{}

// ResolveSessionIdManager implements mcpserver.SessionIdManagerResolver.
// A request without a token (mcp-go's idle sweeper passes nil) or one the
// broker made itself gets a manager that may end any session.
func (b *boundIDs) ResolveSessionIdManager(r *http.Request) mcpserver.SessionIdManager {
	if r == nil || r.Context().Value(internalKey{}) != nil {
		return &tokenIDs{ids: b, internal: true}
	}
	m := &tokenIDs{ids: b}
	if a, ok := r.Context().Value(authKey{}).(auth); ok {
		m.tokenHash = a.tokenHash
	}
	return m
}

// owns reports whether id is an open session of the token.
func (b *boundIDs) owns(id, tokenHash string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byID[id]
	return ok && tokenHash != "" && e.token == tokenHash
}

// count returns how many sessions are open, and how many of the token's.
func (b *boundIDs) count(tokenHash string) (all, token int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byID), len(b.byToken[tokenHash])
}

// add binds a new id to a token and returns the id it evicted, if the
// token now holds more than max.
func (b *boundIDs) add(id, tokenHash string) (evicted string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byID[id] = &boundID{token: tokenHash, used: time.Now()}
	list := append(b.byToken[tokenHash], id)
	b.byToken[tokenHash] = list
	if len(list) <= b.max {
		return ""
	}
	oldest := list[0]
	for _, other := range list[1 : len(list)-1] {
		if b.byID[other].used.Before(b.byID[oldest].used) {
			oldest = other
		}
	}
	b.removeLocked(oldest)
	return oldest
}

func (b *boundIDs) removeLocked(id string) {
	e, ok := b.byID[id]
	if !ok {
		return
	}
	delete(b.byID, id)
	list := slices.DeleteFunc(b.byToken[e.token], func(x string) bool { return x == id })
	if len(list) == 0 {
		delete(b.byToken, e.token)
	} else {
		b.byToken[e.token] = list
	}
}

// tokenIDs is mcp-go's session id manager for the requests of one token.
type tokenIDs struct {
	ids       *boundIDs
	tokenHash string
	internal  bool
}

var errForeignSession = errors.New("unknown session id")

// Generate implements mcpserver.SessionIdManager.
func (t *tokenIDs) Generate() string {
	var b [16]byte
	rand.Read(b[:])
	id := "mcp-" + hex.EncodeToString(b[:])
	if evicted := t.ids.add(id, t.tokenHash); evicted != "" && t.ids.evict != nil {
		t.ids.evict(evicted)
	}
	return id
}

// Validate implements mcpserver.SessionIdManager: only the token's own
// open sessions are valid, and using one marks it used.
func (t *tokenIDs) Validate(id string) (bool, error) {
	t.ids.mu.Lock()
	defer t.ids.mu.Unlock()
	e, ok := t.ids.byID[id]
	if !ok || t.tokenHash == "" || e.token != t.tokenHash {
		return false, errForeignSession
	}
	e.used = time.Now()
	return false, nil
}

// Terminate implements mcpserver.SessionIdManager: a token ends its own
// sessions; the broker and mcp-go's idle sweeper end any.
func (t *tokenIDs) Terminate(id string) (bool, error) {
	t.ids.mu.Lock()
	defer t.ids.mu.Unlock()
	e, ok := t.ids.byID[id]
	if !ok {
		return false, nil // already gone
	}
	if !t.internal && e.token != t.tokenHash {
		return false, errForeignSession
	}
	t.ids.removeLocked(id)
	return false, nil
}

// closeMCPSession ends one MCP session in mcp-go as a DELETE from its
// client would, so everything mcp-go keeps for it is released.
func closeMCPSession(h http.Handler, id string) {
	ctx := context.WithValue(context.Background(), internalKey{}, true)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "/mcp", nil)
	if err != nil {
		return
	}
	req.Header.Set(mcpserver.HeaderKeySessionID, id)
	h.ServeHTTP(discardResponse{header: http.Header{}}, req)
}

// discardResponse is a ResponseWriter for a request nobody reads.
type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header         { return d.header }
func (d discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d discardResponse) WriteHeader(int)             {}
