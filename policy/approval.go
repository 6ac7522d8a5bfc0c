package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ApprovalConfig is the approval: block of a scope in keyhole.yaml: how
// calls that wait for a person's approval are held and announced.
type ApprovalConfig struct {
	// Wait is how long a call is held waiting for an answer (a Go
	// duration, 0 to answer at once); default DefaultApprovalWait.
	Wait string `yaml:"wait" json:"wait,omitempty"`
	// TTL is how long an open request waits for an answer, and how long
	// an approval stays usable; default DefaultApprovalTTL.
	TTL string `yaml:"ttl" json:"ttl,omitempty"`
	// MaxOpen caps the open requests of one session; nil is
	// DefaultMaxOpen.
	MaxOpen *int `yaml:"max_open" json:"max_open,omitempty"`
	// Webhook is a URL that receives every access event as a signed
	// JSON POST.
	Webhook string `yaml:"webhook" json:"webhook,omitempty"`
	// WebhookSecret names the vault secret whose value signs the
	// webhook's posts (HMAC-SHA256); required with Webhook.
	WebhookSecret string `yaml:"webhook_secret" json:"webhook_secret,omitempty"`
	// Notify shows a desktop notification (notify-send) for each new
	// request.
	Notify bool `yaml:"notify" json:"notify,omitempty"`
}

// Approval settings that apply when the config does not set them, and
// their bounds.
const (
	DefaultApprovalWait = 55 * time.Second // under the common client timeout of 60s
	MaxApprovalWait     = 10 * time.Minute
	DefaultApprovalTTL  = 10 * time.Minute
	MaxApprovalTTL      = 24 * time.Hour
	DefaultMaxOpen      = 3
	MaxMaxOpen          = 100
)

// OnDeny values of a scope.
const (
	OnDenyDeny    = "deny"
	OnDenyRequest = "request"
)

// CodeApprovalRequired is the Code of a call that a grant with approve:
// true allows only once a person approves it.
const CodeApprovalRequired = "approval_required"

// Approval is a scope's compiled approval settings.
type Approval struct {
	// OnDenyRequest says a call the scope denies becomes an access
	// request (on_deny: request) instead of a plain denial.
	OnDenyRequest bool
	Wait          time.Duration
	TTL           time.Duration
	MaxOpen       int
	Webhook       string
	WebhookSecret string
	Notify        bool
}

// Approval returns the scope's approval settings.
func (s *Scope) Approval() Approval { return s.approval }

// compileApproval checks a scope's on_deny and approval: settings.
func compileApproval(at, onDeny string, c *ApprovalConfig) (Approval, []error) {
	a := Approval{Wait: DefaultApprovalWait, TTL: DefaultApprovalTTL, MaxOpen: DefaultMaxOpen}
	var errs []error
	switch onDeny {
	case "", OnDenyDeny:
	case OnDenyRequest:
		a.OnDenyRequest = true
	default:
		errs = append(errs, fieldErr(at+".on_deny", "%q is not an on_deny mode; write deny (the default) or request", onDeny))
	}
	if c == nil {
		return a, errs
	}
	at += ".approval"
	if c.Wait != "" {
		d, err := time.ParseDuration(c.Wait)
		switch {
		case err != nil:
			errs = append(errs, fieldErr(at+".wait", "%q is not a duration; write e.g. 55s or 2m", c.Wait))
		case d < 0 || d > MaxApprovalWait:
			errs = append(errs, fieldErr(at+".wait", "%q must be between 0 (answer at once) and 10m", c.Wait))
		default:
			a.Wait = d
		}
	}
	if c.TTL != "" {
		d, err := time.ParseDuration(c.TTL)
		switch {
		case err != nil:
			errs = append(errs, fieldErr(at+".ttl", "%q is not a duration; write e.g. 10m or 1h", c.TTL))
		case d <= 0 || d > MaxApprovalTTL:
			errs = append(errs, fieldErr(at+".ttl", "%q must be positive and at most 24h", c.TTL))
		default:
			a.TTL = d
		}
	}
	if c.MaxOpen != nil {
		if *c.MaxOpen < 1 || *c.MaxOpen > MaxMaxOpen {
			errs = append(errs, fieldErr(at+".max_open", "must be between 1 and %d open requests per session", MaxMaxOpen))
		} else {
			a.MaxOpen = *c.MaxOpen
		}
	}
	if c.Webhook != "" {
		if err := checkWebhook(c.Webhook); err != nil {
			errs = append(errs, fieldErr(at+".webhook", "%v", err))
		}
		if c.WebhookSecret == "" {
			errs = append(errs, fieldErr(at+".webhook_secret", "required with webhook: name the vault secret that signs its posts (keyhole secret set NAME)"))
		}
	} else if c.WebhookSecret != "" {
		errs = append(errs, fieldErr(at+".webhook_secret", "applies only with webhook"))
	}
	a.Webhook, a.WebhookSecret, a.Notify = c.Webhook, c.WebhookSecret, c.Notify
	return a, errs
}

// checkWebhook accepts an absolute http(s) URL without user info; plain
// http only to a loopback host.
func checkWebhook(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q is not an absolute http or https URL", raw)
	}
	if u.User != nil {
		return fmt.Errorf("must not carry a user or password; the posts are signed with webhook_secret")
	}
	if u.Fragment != "" {
		return fmt.Errorf("must not have a #fragment")
	}
	host := u.Hostname()
	ip, perr := netip.ParseAddr(host)
	loopback := strings.EqualFold(host, "localhost") || (perr == nil && ip.IsLoopback())
	if u.Scheme == "http" && !loopback {
		return fmt.Errorf("plain http is allowed only to a loopback host; use https")
	}
	return nil
}

// ExactGrant is a grant a person added to one session by approving an
// access request with --for-session: exactly one method on one path of an
// http tool, or one action on one key (or list prefix) of an s3 tool. It
// holds no pattern.
type ExactGrant struct {
	Tool     string   `json:"tool"`
	Method   string   `json:"method,omitempty"`
	Segments []string `json:"segments,omitempty"`
	Action   string   `json:"action,omitempty"`
	Key      string   `json:"key,omitempty"`
	// Request is the access request whose approval added it.
	Request string `json:"request"`
}

// ExactGrantOf returns the exact grant of req, added by request.
func ExactGrantOf(req Request, request string) ExactGrant {
	return ExactGrant{Tool: req.Tool, Method: req.Method, Segments: slices.Clone(req.Segments), Action: req.Action, Key: req.Key, Request: request}
}

// matches reports whether the grant names exactly req.
func (g *ExactGrant) matches(req Request) bool {
	return g.Tool == req.Tool && g.Method == req.Method && g.Action == req.Action &&
		g.Key == req.Key && slices.Equal(g.Segments, req.Segments)
}

// String describes the grant: "github: POST /repos/acme/api/issues/7/labels".
func (g ExactGrant) String() string {
	return g.Tool + ": " + Request{Tool: g.Tool, Method: g.Method, Segments: g.Segments, Action: g.Action, Key: g.Key}.String()
}

// AddGrant adds an exact grant to the session for the rest of its life.
// A grant it already holds is not added twice. It fails for a session
// that is no longer active.
func (s *Session) AddGrant(now time.Time, g ExactGrant) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, live := s.liveLocked(now); !live {
		return fmt.Errorf("policy: %s", d.Reason)
	}
	for i := range s.info.Grants {
		if s.info.Grants[i].matches(Request{Tool: g.Tool, Method: g.Method, Segments: g.Segments, Action: g.Action, Key: g.Key}) {
			return nil
		}
	}
	s.info.Grants = append(s.info.Grants, g)
	return nil
}

// exactLocked returns the allowing decision of a session grant that
// names req exactly, if one does.
func (s *Session) exactLocked(req Request) (Decision, bool) {
	for i := range s.info.Grants {
		if g := &s.info.Grants[i]; g.matches(req) {
			text := g.String() + " (for this session, by access request " + g.Request + ")"
			return Decision{Allow: true, Reason: "granted to session " + s.info.ID + " by " + text, Grant: text}, true
		}
	}
	return Decision{}, false
}
