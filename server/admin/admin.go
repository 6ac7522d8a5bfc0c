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
	SessionNew(req SessionRequest) (SessionInfo, string, error)
	SessionList(all bool) ([]SessionInfo, error)
	SessionShow(id string) (SessionInfo, error)
	// SessionRevoke revokes one session by id, every session of a scope,
	// or all of them (exactly one is given), and returns the ids revoked.
	SessionRevoke(id, scope string, all bool) ([]string, error)
	// SessionEnd ends a session whose client is gone.
	SessionEnd(id string) error
	// Reload re-reads a config file in the running broker ("" is the
	// broker's own) for its new sessions.
	Reload(config string) (Reloaded, error)
	// Status says what the running broker serves.
	Status() (Status, error)
	// Stop stops the running broker gracefully: it stops accepting, lets
	// running calls finish and be recorded, and releases the data dir.
	Stop() (Stopping, error)
}

// SessionRequest is what a new session is asked for.
type SessionRequest struct {
	Scope string        `json:"scope"`
	TTL   time.Duration `json:"ttl,omitempty"`
	Label string        `json:"label,omitempty"`
	// Config is the absolute path of the config file whose scope the
	// session runs; "" is the broker's own config.
	Config string `json:"config,omitempty"`
	// Relay marks the session of a stdio client relayed through the
	// broker: it ends when the client leaves or the broker stops.
	Relay bool `json:"relay,omitempty"`
	// ClientVersion is the keyhole version of the command that asks; the
	// broker logs a warning when it is not its own.
	ClientVersion string `json:"client_version,omitempty"`
}

// Reloaded says which config a reload read.
type Reloaded struct {
	Config string   `json:"config"`
	SHA256 string   `json:"sha256"`
	Scopes []string `json:"scopes"`
	// Changed is false when the file was the version already loaded.
	Changed bool `json:"changed"`
}

// ConfigStatus is one config file a broker serves.
type ConfigStatus struct {
	Path   string    `json:"path"`
	SHA256 string    `json:"sha256"`
	Loaded time.Time `json:"loaded"`
	// Default marks the broker's own config (`keyhole serve --config`).
	Default bool     `json:"default,omitempty"`
	Scopes  []string `json:"scopes"`
}

// Status is what a running broker says of itself.
type Status struct {
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Uptime is in whole seconds.
	Uptime  int64  `json:"uptime_seconds"`
	DataDir string `json:"data_dir"`
	// Executable is the broker's binary, and ExecutableTime when it was
	// built (its modification time when the broker started).
	Executable     string    `json:"executable,omitempty"`
	ExecutableTime time.Time `json:"executable_time,omitzero"`
	// AutoStarted marks a broker a `keyhole stdio` started in the
	// background (a helper for stdio clients, not an operator's serve).
	AutoStarted bool           `json:"auto_started"`
	Configs     []ConfigStatus `json:"configs"`
	// Sessions counts the active sessions; Clients those of stdio clients
	// relayed through the broker right now.
	Sessions  int       `json:"sessions"`
	Clients   int       `json:"clients"`
	Listeners Listeners `json:"listeners"`
}

// Listeners are a broker's addresses.
type Listeners struct {
	Socket  string `json:"socket"`
	HTTP    string `json:"http,omitempty"`
	Metrics string `json:"metrics,omitempty"`
}

// Stopping is the answer to Stop: the pid that is stopping.
type Stopping struct {
	PID int `json:"pid"`
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
