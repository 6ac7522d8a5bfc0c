package server

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/config"
)

// Session is one run of one agent under one scope, bound to the config it
// started with.
type Session struct {
	*policy.Session
	cfg    *config.Loaded
	client atomic.Value // string: "name/version" from MCP initialize
	// persist stores the session's state after each call; nil for a
	// session that lives only as long as its process (standalone stdio).
	persist func(policy.SessionInfo)
	// relay marks the session of a stdio client relayed through the
	// broker.
	relay bool
	// shared counts the session's calls and denials in a store shared by
	// several brokers (session_shared.go); nil on the embedded store.
	shared SharedCounter
	// ended runs endMinted once.
	ended sync.Once
}

func (s *Session) save(now time.Time) {
	if s.persist != nil {
		s.persist(s.Info(now))
	}
}

// NewSession starts a session of the named scope under the current config.
func (b *Broker) NewSession(id, scope string, ttl time.Duration, label string) (*Session, error) {
	cfg := b.Config()
	sc, ok := cfg.Policy.Scope(scope)
	if !ok {
		return nil, fmt.Errorf("server: scope %q is not defined in %s (defined: %v)", scope, cfg.Path, cfg.Policy.ScopeNames())
	}
	return &Session{Session: policy.NewSession(id, sc, b.now(), ttl, label), cfg: cfg}, nil
}

// SetClient records the MCP client's name and version for the audit.
func (s *Session) SetClient(name, version string) {
	s.client.Store(name + "/" + version)
}

// Client returns "name/version" of the MCP client, or "".
func (s *Session) Client() string {
	c, _ := s.client.Load().(string)
	return c
}
