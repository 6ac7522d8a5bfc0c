package server

import (
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/tools/scrub"
	"github.com/keyhole-dev/keyhole/vault"
)

// secretCache is the broker's one long-lived home of plaintext
// (CONVENTIONS.md, "Secrets in memory"): each secret's decrypted value
// and, for each tool that injects it, the scrubber of that value, so a
// call neither decrypts its secret nor builds a scrubber (~125 µs each) —
// and the argument check, which needs a scrubber for every secret of the
// scope, stays cheap. The process holds the master key anyway, so a
// cached value adds nothing an attacker of the process lacks.
//
// An entry is keyed by the secret's name and version, and by the time of
// its last change of value (Meta.Updated), which tells a secret removed
// and set again (version 1 again) from the one before. Every call checks
// the entry against the vault's metadata, so a value changed by any path
// is never used stale; besides, the broker evicts a secret when it is
// set, rotated, replaced or removed through it, and every secret on a
// reload and at shutdown (rekey needs the broker stopped). An evicted
// entry is zeroed — its value and every scrubber's forms — as soon as no
// call holds it, as far as Go allows: strings made on the way cannot be.
type secretCache struct {
	mu      sync.Mutex
	entries map[string]*cachedSecret // by secret name
}

// maxScrubbersPerSecret bounds the tools one cached secret keeps a
// scrubber for; past it a scrubber is built for the call and not kept.
const maxScrubbersPerSecret = 64

// cachedSecret is one version of one secret, decrypted. The value is a
// vault.Secret, which cannot print itself.
type cachedSecret struct {
	name    string
	version int
	updated time.Time
	secret  vault.Secret

	// refs counts the calls holding the entry and evicted says it left
	// the cache; both are guarded by secretCache.mu.
	refs    int
	evicted bool

	mu     sync.Mutex
	scrubs map[tools.Tool]*scrub.Scrubber
}

// scrubber returns tool's scrubber of the value, built on first use. The
// caller holds the entry.
func (e *cachedSecret) scrubber(tool tools.Tool) *scrub.Scrubber {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sc, ok := e.scrubs[tool]; ok {
		return sc
	}
	sc := tool.Scrubber(e.secret.Bytes())
	if e.scrubs == nil {
		e.scrubs = make(map[tools.Tool]*scrub.Scrubber, 1)
	}
	if len(e.scrubs) < maxScrubbersPerSecret {
		e.scrubs[tool] = sc
	}
	return sc
}

// wipe zeroes the value and every scrubber. No call holds the entry.
func (e *cachedSecret) wipe() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.secret.Bytes())
	for _, sc := range e.scrubs {
		sc.Wipe()
	}
	e.scrubs = nil
}

// acquire returns the cached entry of secret name as src holds it now,
// decrypting it when the cache has no entry of its version, and holds it
// for the caller until release.
func (c *secretCache) acquire(src Secrets, name string) (*cachedSecret, error) {
	m, err := src.Meta(name)
	if err != nil {
		c.evict(name)
		return nil, err
	}
	c.mu.Lock()
	if e := c.entries[name]; e != nil && e.version == m.Version && e.updated.Equal(m.Updated) {
		e.refs++
		c.mu.Unlock()
		return e, nil
	}
	c.mu.Unlock()

	secret, m, err := src.Read(name)
	if err != nil {
		c.evict(name)
		return nil, err
	}
	fresh := &cachedSecret{name: name, version: m.Version, updated: m.Updated, secret: secret, refs: 1}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[name]; e != nil {
		if e.version == m.Version && e.updated.Equal(m.Updated) {
			// Another call cached the same version meanwhile.
			e.refs++
			fresh.wipe()
			return e, nil
		}
		c.dropLocked(e)
	}
	if c.entries == nil {
		c.entries = make(map[string]*cachedSecret)
	}
	c.entries[name] = fresh
	return fresh, nil
}

// release ends a caller's hold on e; an evicted entry is zeroed when its
// last holder lets go.
func (c *secretCache) release(e *cachedSecret) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.evicted {
		e.wipe()
	}
}

// evict drops the entry of secret name, if any.
func (c *secretCache) evict(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[name]; e != nil {
		c.dropLocked(e)
	}
}

// evictAll drops every entry.
func (c *secretCache) evictAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		c.dropLocked(e)
	}
}

// dropLocked removes e from the cache and zeroes it unless a call holds
// it. c.mu is held.
func (c *secretCache) dropLocked(e *cachedSecret) {
	delete(c.entries, e.name)
	e.evicted = true
	if e.refs == 0 {
		e.wipe()
	}
}

// callSecrets are the secrets one call uses, each looked up in the cache
// once (one metadata read from the vault, which caches it) and held until
// the call ends, so an eviction meanwhile zeroes nothing the call reads.
type callSecrets struct {
	cache *secretCache
	src   Secrets
	held  []*cachedSecret
	buf   [4]*cachedSecret
}

func (b *Broker) callSecrets() *callSecrets {
	cs := &callSecrets{cache: &b.cache, src: b.secrets}
	cs.held = cs.buf[:0]
	return cs
}

// get returns the held entry of secret name, acquiring it on first use.
func (cs *callSecrets) get(name string) (*cachedSecret, error) {
	for _, e := range cs.held {
		if e.name == name {
			return e, nil
		}
	}
	e, err := cs.cache.acquire(cs.src, name)
	if err != nil {
		return nil, err
	}
	cs.held = append(cs.held, e)
	return e, nil
}

// scrubber returns tool's scrubber of its secret, or nil when the secret
// cannot be read.
func (cs *callSecrets) scrubber(tool tools.Tool) *scrub.Scrubber {
	e, err := cs.get(tool.SecretName())
	if err != nil {
		return nil
	}
	return e.scrubber(tool)
}

// release lets go of every entry the call held.
func (cs *callSecrets) release() {
	for _, e := range cs.held {
		cs.cache.release(e)
	}
	cs.held = cs.held[:0]
}
