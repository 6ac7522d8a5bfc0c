package tools

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// Credential kinds, as CredentialInfo.Kind names them.
const (
	// CredStatic is a secret sent as it is stored (bearer, header, basic,
	// query, aws_sigv4 with keys).
	CredStatic = "static"
	// CredAWSSTS is AWS session credentials assumed per session.
	CredAWSSTS = "aws_sts"
	// CredOAuth2 is an OAuth 2.0 access token.
	CredOAuth2 = "oauth2"
	// CredGitHubApp is a GitHub App installation token minted per session.
	CredGitHubApp = "github_app"
)

// CredentialInfo says what credential a call sent, for its audit record:
// never a value.
type CredentialInfo struct {
	// Kind is CredStatic, CredAWSSTS, CredOAuth2 or CredGitHubApp.
	Kind string
	// TokenID names the short-lived token the call sent, without
	// revealing it: "sha256:" and the first 16 hex digits of the token's
	// SHA-256. "" for a static secret.
	TokenID string
	// Expires is when that token expires; zero when unknown.
	Expires time.Time
}

// tokenID is CredentialInfo.TokenID of tok.
func tokenID(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// StatusNeedsLogin starts the status a tool gives its secret when the
// authorization server refused it: an operator must run `keyhole secret
// login NAME`.
const StatusNeedsLogin = "needs login"

// SecretWriter is what a tool may change of its own secret in the vault.
// The broker gives each call one bound to the call's secret.
type SecretWriter interface {
	// Replace stores next as the secret's value if it still is prev (a
	// rotated refresh token must never overwrite a login an operator
	// made meanwhile). It clears the secret's status.
	Replace(prev, next []byte) error
	// SetStatus records what an operator must do about the secret
	// (StatusNeedsLogin and why), shown by `keyhole secret list`.
	SetStatus(status string) error
}

// SessionEnder is a Tool that holds credentials it minted for a session
// (a GitHub App installation token). The broker calls EndSession when a
// session ends, is revoked or is found expired, and the tool revokes
// them upstream and forgets them. It may be called more than once for a
// session, and for sessions the tool never served. An error says a
// revocation failed (the token then lives until its own expiry); it is
// scrubbed.
type SessionEnder interface {
	EndSession(ctx context.Context, id string) error
}

// Backoff of a token endpoint that failed: the first retry waits
// backoffBase, each further failure doubles the wait, up to backoffMax.
// Calls meanwhile fail at once without contacting the endpoint, so a
// broken endpoint sees one request per wait, however many calls come.
const (
	backoffBase = time.Second
	backoffMax  = 5 * time.Minute
)

// backoff is the retry state of one token endpoint. Its zero value has
// seen no failure. It is not safe for concurrent use; its owner locks.
type backoff struct {
	failures int
	until    time.Time
	msg      string // what went wrong, safe for the agent
	detail   string // scrubbed, for the audit
}

// blocked reports whether a request must wait, and how long.
func (b *backoff) blocked(now time.Time) (time.Duration, bool) {
	if b.failures == 0 || !now.Before(b.until) {
		return 0, false
	}
	return b.until.Sub(now), true
}

// fail records a failure at now and returns the wait before the next try.
func (b *backoff) fail(now time.Time, msg, detail string) time.Duration {
	wait := backoffBase << min(b.failures, 16)
	wait = min(wait, backoffMax)
	b.failures++
	b.until, b.msg, b.detail = now.Add(wait), msg, detail
	return wait
}

// ok forgets every failure.
func (b *backoff) ok() { *b = backoff{} }

// blockedError is the error of a call that came while the endpoint's
// backoff runs.
func (b *backoff) blockedError(what string, wait time.Duration, info CredentialInfo) *ExecError {
	return &ExecError{
		Msg:        fmt.Sprintf("%s; keyhole tries again in %s", b.msg, roundWait(wait)),
		Detail:     fmt.Sprintf("%s failed %d time(s) in a row, last: %s", what, b.failures, b.detail),
		Credential: info,
	}
}

// roundWait renders a wait for people: whole seconds, at least 1s.
func roundWait(d time.Duration) time.Duration {
	return max(d.Round(time.Second), time.Second)
}

// scrubberOf builds a scrubber for the non-empty values.
func scrubberOf(vals ...[]byte) *scrub.Scrubber {
	var keep [][]byte
	for _, v := range vals {
		if len(v) > 0 {
			keep = append(keep, v)
		}
	}
	return scrub.New(keep...)
}

// minted is the short-lived credential a call sends, with a scrubber for
// it and every other value of its secret, and what the audit records.
type minted struct {
	token string
	sc    *scrub.Scrubber
	info  CredentialInfo
}

// minter derives the credential an http tool sends from its secret: an
// OAuth 2.0 access token, a GitHub App installation token. Its errors are
// *ExecError, already scrubbed.
type minter interface {
	token(ctx context.Context, secret []byte, env CallEnv) (minted, error)
	// scrubValues lists the secret and every value derived from it that
	// the minter holds, for Tool.Scrubber.
	scrubValues(secret []byte) [][]byte
}
