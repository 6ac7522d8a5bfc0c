package server

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
)

// Configs are the configs a broker serves. Each client names its config
// file by absolute path; the broker keeps, per path, the version new
// sessions of that path start with, and, by hash, every version a
// session runs, so a session keeps its config (and so its scope and its
// tools) across reloads and restarts whatever the file says later. The
// broker's own config (`keyhole serve --config`) is the default, for
// clients that name none.
type Configs struct {
	env    tools.Env
	loaded func(*config.Loaded) // called once for every version loaded

	mu     sync.Mutex
	def    string                    // the default config's path
	byPath map[string]*pathConfig    // the version new sessions of a path start with
	byHash map[string]*config.Loaded // every version loaded, by SHA-256
	// fromFile are the versions read from a config file by this broker
	// (not compiled from a session's snapshot), by SHA-256.
	fromFile map[string]bool
}

// pathConfig is the current version of one config file.
type pathConfig struct {
	cfg    *config.Loaded
	loaded time.Time
}

// newConfigs serves def as the default config; loaded is called for every
// config version the broker loads (it registers the version's tools).
func newConfigs(def *config.Loaded, env tools.Env, loaded func(*config.Loaded)) *Configs {
	c := &Configs{env: env, loaded: loaded, byPath: map[string]*pathConfig{}, byHash: map[string]*config.Loaded{}, fromFile: map[string]bool{}}
	if def != nil {
		c.Set(def)
	}
	return c
}

// Default returns the broker's own config, as new sessions that name no
// config get it.
func (c *Configs) Default() *config.Loaded {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.byPath[c.def]; ok {
		return p.cfg
	}
	return nil
}

// Set makes cfg the default config and the current version of its path.
func (c *Configs) Set(cfg *config.Loaded) {
	c.mu.Lock()
	c.def = cfg.Path
	c.byPath[cfg.Path] = &pathConfig{cfg: cfg, loaded: time.Now()}
	c.fromFile[cfg.Digest] = true
	_, known := c.byHash[cfg.Digest]
	if !known && cfg.Digest != "" {
		c.byHash[cfg.Digest] = cfg
	}
	c.mu.Unlock()
	if !known && c.loaded != nil {
		c.loaded(cfg)
	}
}

// ErrRelativeConfig is returned for a config path that is not absolute:
// only the client knows what it is relative to.
var ErrRelativeConfig = errors.New("the config path must be absolute")

// Current returns the config new sessions of path start with: the file as
// it is now, loaded and validated when it changed since it was last read.
// "" is the default config as it was loaded. changed reports a new
// version.
func (c *Configs) Current(path string) (cfg *config.Loaded, changed bool, err error) {
	if path == "" {
		if cfg := c.Default(); cfg != nil {
			return cfg, false, nil
		}
		return nil, false, errors.New("keyhole: the broker has no default config; name one with --config")
	}
	if !filepath.IsAbs(path) {
		return nil, false, fmt.Errorf("keyhole: config %q: %w", path, ErrRelativeConfig)
	}
	data, err := config.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	sha := config.Hash(data)
	c.mu.Lock()
	if p, ok := c.byPath[path]; ok && p.cfg.Digest == sha {
		c.mu.Unlock()
		return p.cfg, false, nil
	}
	c.mu.Unlock()
	return c.load(path, data)
}

// Reload reads path again ("" is the default config's path), validates it
// and makes it the version new sessions of path start with; changed
// reports a version not current before. An invalid file is refused and
// the old version stays.
func (c *Configs) Reload(path string) (cfg *config.Loaded, changed bool, err error) {
	if path == "" {
		c.mu.Lock()
		path = c.def
		c.mu.Unlock()
	}
	if !filepath.IsAbs(path) {
		return nil, false, fmt.Errorf("keyhole: config %q: %w", path, ErrRelativeConfig)
	}
	data, err := config.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	return c.load(path, data)
}

// load parses data as the config at path and makes it that path's
// current version.
func (c *Configs) load(path string, data []byte) (*config.Loaded, bool, error) {
	sha := config.Hash(data)
	c.mu.Lock()
	cfg, known := c.byHash[sha]
	c.mu.Unlock()
	if !known || cfg.Path != path {
		var err error
		if cfg, err = config.Parse(path, data, c.env); err != nil {
			return nil, false, err
		}
	}
	c.mu.Lock()
	prev, had := c.byPath[path]
	changed := !had || prev.cfg.Digest != sha
	if changed {
		c.byPath[path] = &pathConfig{cfg: cfg, loaded: time.Now()}
	}
	c.fromFile[sha] = true
	_, known = c.byHash[sha]
	if !known {
		c.byHash[sha] = cfg
	}
	c.mu.Unlock()
	if !known && c.loaded != nil {
		c.loaded(cfg)
	}
	return cfg, changed, nil
}

// Pinned returns the config version a session was started with, from the
// bytes kept with it: the version loaded now when it is the same, else
// those bytes compiled again. It never reads the file at path.
func (c *Configs) Pinned(sha, path string, body []byte) (*config.Loaded, error) {
	c.mu.Lock()
	cfg, ok := c.byHash[sha]
	c.mu.Unlock()
	if ok {
		return cfg, nil
	}
	if config.Hash(body) != sha {
		return nil, fmt.Errorf("keyhole: the config kept for %s does not match its hash", path)
	}
	cfg, err := config.Parse(path, body, c.env)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if known, ok := c.byHash[sha]; ok {
		c.mu.Unlock()
		return known, nil
	}
	c.byHash[sha] = cfg
	c.mu.Unlock()
	if c.loaded != nil {
		c.loaded(cfg)
	}
	return cfg, nil
}

// FromFile reports whether this broker read the config version sha from
// a config file (rather than only from a session's snapshot).
func (c *Configs) FromFile(sha string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fromFile[sha]
}

// Digests lists the SHA-256 of every version read from a config file.
func (c *Configs) Digests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.fromFile))
}

// Status lists the config files the broker serves, the default first.
func (c *Configs) Status() []admin.ConfigStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []admin.ConfigStatus
	for _, path := range slices.Sorted(maps.Keys(c.byPath)) {
		p := c.byPath[path]
		s := admin.ConfigStatus{Path: path, SHA256: p.cfg.Digest, Loaded: p.loaded, Default: path == c.def, Scopes: p.cfg.Policy.ScopeNames()}
		if s.Default {
			out = append([]admin.ConfigStatus{s}, out...)
		} else {
			out = append(out, s)
		}
	}
	return out
}

// AbsConfig makes a config path absolute, as clients name configs to the
// broker; a file that does not exist says how to make one.
func AbsConfig(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("keyhole: config %s: %w", path, err)
	}
	if _, err := os.Stat(abs); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("keyhole: no config at %s: create one with `keyhole init`, or pass --config", abs)
		}
		return "", fmt.Errorf("keyhole: config %s: %w", abs, err)
	}
	return abs, nil
}
