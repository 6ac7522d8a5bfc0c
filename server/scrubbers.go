package server

import (
	"crypto/sha256"
	"sync"

	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// maxScrubbers bounds the scrubbers the broker keeps; past it the cache
// starts over.
const maxScrubbers = 256

// scrubbers caches each tool's scrubber of each value of its secret:
// building one costs far more than a call's other checks, and every call
// needs them (the argument check of every tool of the scope, the record,
// the result). A scrubber is keyed by the tool and the SHA-256 of the
// secret's value, so a rotated, replaced or re-set secret gets a new one;
// what it holds is derived from a secret the process holds anyway
// (CONVENTIONS: the one long-lived home of plaintext-derived data), and
// it is dropped when the config is reloaded.
type scrubbers struct {
	mu sync.Mutex
	m  map[scrubberKey]*scrub.Scrubber
}

type scrubberKey struct {
	tool tools.Tool
	sum  [sha256.Size]byte
}

// scrubberFor returns tool's scrubber for the secret value secret.
func (b *Broker) scrubberFor(tool tools.Tool, secret []byte) *scrub.Scrubber {
	k := scrubberKey{tool: tool, sum: sha256.Sum256(secret)}
	c := &b.scrub
	c.mu.Lock()
	sc, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return sc
	}
	sc = tool.Scrubber(secret)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxScrubbers {
		c.m = map[scrubberKey]*scrub.Scrubber{}
	}
	c.m[k] = sc
	c.mu.Unlock()
	return sc
}

// forgetScrubbers drops every cached scrubber.
func (b *Broker) forgetScrubbers() {
	b.scrub.mu.Lock()
	b.scrub.m = nil
	b.scrub.mu.Unlock()
}
