package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// ScopeConfig is one entry of the scopes: section of keyhole.yaml. The
// server decodes it with yaml.v3 and hands every scope to Compile.
type ScopeConfig struct {
	Description string `yaml:"description" json:"description,omitempty"`
	// TTL is a duration (ParseDuration: "1h", "7d"); default 1h, at most 30 days.
	TTL string `yaml:"ttl" json:"ttl,omitempty"`
	// MaxCalls caps the calls of one session; 0 is unlimited.
	MaxCalls int `yaml:"max_calls" json:"max_calls,omitempty"`
	// Rate is "<n>/s", "<n>/m" or "<n>/h"; "" is unlimited.
	Rate string `yaml:"rate" json:"rate,omitempty"`
	// MaxDenials ends a session after that many denied calls (the
	// tripwire); nil is DefaultMaxDenials, 0 never trips.
	MaxDenials *int `yaml:"max_denials" json:"max_denials,omitempty"`
	// OnDeny is "deny" (the default) or "request": a call the scope
	// denies becomes an access request a person may approve.
	OnDeny string `yaml:"on_deny" json:"on_deny,omitempty"`
	// Approval says how calls that wait for a person are held.
	Approval *ApprovalConfig `yaml:"approval" json:"approval,omitempty"`
	Grants   []GrantConfig   `yaml:"grants" json:"grants"`
}

// GrantConfig is one allowance inside a scope. http grants use Methods
// and Paths; s3 grants use Actions and Prefixes.
type GrantConfig struct {
	Tool    string   `yaml:"tool" json:"tool"`
	Methods []string `yaml:"methods" json:"methods,omitempty"`
	Paths   []string `yaml:"paths" json:"paths,omitempty"`
	// Actions are s3 actions: list, get, head.
	Actions []string `yaml:"actions" json:"actions,omitempty"`
	// Prefixes are s3 key prefixes; "" is the whole bucket.
	Prefixes []string `yaml:"prefixes" json:"prefixes,omitempty"`
	// AllowBroad permits a path pattern that grants every path ("/**")
	// on a write method.
	AllowBroad bool `yaml:"allow_broad" json:"allow_broad,omitempty"`
	// Approve makes every call this grant allows wait for a person's
	// approval (an access request); a call another grant allows does not
	// wait.
	Approve bool `yaml:"approve" json:"approve,omitempty"`
}

// Scope limits that apply when the config does not set them.
const (
	DefaultTTL        = time.Hour
	MaxTTL            = 30 * 24 * time.Hour
	DefaultMaxDenials = 20
)

// parseTTL parses a scope's ttl; "" is DefaultTTL.
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return DefaultTTL, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write e.g. 15m, 1h, 72h or 7d", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	if d > MaxTTL {
		return 0, fmt.Errorf("%q is longer than the maximum of 30 days (30d)", s)
	}
	return d, nil
}

// limit is a parsed rate: a token bucket of burst calls, refilled evenly
// at every calls per unit. The zero limit is unlimited.
type limit struct {
	every rate.Limit
	burst int
	text  string // "5 calls per second"
}

// parseRate parses "<n>/s", "<n>/m" or "<n>/h". A session may make n
// calls at once, and the bucket refills evenly over the unit.
func parseRate(s string) (limit, error) {
	if s == "" {
		return limit{}, nil
	}
	num, unit, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(num)
	var per time.Duration
	var word string
	switch unit {
	case "s":
		per, word = time.Second, "second"
	case "m":
		per, word = time.Minute, "minute"
	case "h":
		per, word = time.Hour, "hour"
	}
	if !ok || err != nil || per == 0 || n <= 0 || num[0] == '+' {
		return limit{}, fmt.Errorf("%q is not a rate; write <calls>/s, <calls>/m or <calls>/h with a positive whole number, e.g. 5/s", s)
	}
	return limit{every: rate.Limit(float64(n) / per.Seconds()), burst: n, text: num + " calls per " + word}, nil
}
