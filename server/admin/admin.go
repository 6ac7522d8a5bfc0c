// Package admin is the operator's API to a keyhole data dir: its secrets,
// its sessions and a reload of the config. [Ops] is the API; the broker
// serves it on its unix socket as typed routes ([Handler]), and [Client]
// calls them. A command line gets an [Admin] from server.OpenAdmin and
// never needs to know whether a broker owns the data dir (then the calls
// go over its socket) or not (then the data dir is opened in-process).
package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/vault"
)

// SecretMeta is what an operator may see of a secret: never its value.
type SecretMeta = vault.Meta

// SessionInfo is a session's state as an operator sees it: never its token.
type SessionInfo = policy.SessionInfo

// LoginStart is an OAuth 2.0 login begun by SecretLoginStart: the URL a
// person opens, and the state the redirect must carry back.
type LoginStart struct {
	URL   string `json:"url"`
	State string `json:"state"`
	// Tool is the tool whose settings the login uses.
	Tool string `json:"tool"`
}

// Ops is what an operator does to a data dir.
type Ops interface {
	SecretSet(name string, value []byte, description string) error
	SecretRotate(name string, value []byte) (SecretMeta, error)
	SecretMeta(name string) (SecretMeta, error)
	SecretList() ([]SecretMeta, error)
	SecretDelete(name string) error
	// SecretLoginStart begins an OAuth 2.0 login (authorization code with
	// PKCE) for the secret of an oauth2 tool with flow
	// authorization_code, whose authorization server sends the browser
	// back to redirectURL, a loopback URL the caller listens on.
	SecretLoginStart(name, redirectURL string) (LoginStart, error)
	// SecretLoginFinish exchanges the code the redirect brought (with the
	// login's state) and stores the refresh token in the secret.
	SecretLoginFinish(name, state, code string) (SecretMeta, error)
	// SessionNew starts a session and returns it with its phantom token.
	SessionNew(scope string, ttl time.Duration, label string) (SessionInfo, string, error)
	SessionList(all bool) ([]SessionInfo, error)
	SessionShow(id string) (SessionInfo, error)
	// SessionRevoke revokes one session by id, every session of a scope,
	// or all of them (exactly one is given), and returns the ids revoked.
	SessionRevoke(id, scope string, all bool) ([]string, error)
	// SessionEnd ends a session whose client is gone.
	SessionEnd(id string) error
	// Reload re-reads keyhole.yaml in the running broker.
	Reload() error
}

// Admin is Ops on a data dir, opened in-process or through its broker.
type Admin interface {
	Ops
	// Remote says the calls go to a running broker.
	Remote() bool
	Close() error
}

// SocketFile is the broker's unix socket in the data dir.
const SocketFile = "keyhole.sock"

// ErrNoBroker is returned by operations that need a running broker.
var ErrNoBroker = errors.New("no keyhole broker is running")

// SocketClient is an HTTP client that talks to the broker's unix socket
// in dataDir; the URL's host is ignored.
func SocketClient(dataDir string) *http.Client {
	path := filepath.Join(dataDir, SocketFile)
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}
