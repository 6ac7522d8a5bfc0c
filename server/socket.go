package server

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/vault"
)

// More files in a data dir.
const (
	SessionsFile = "sessions.db"
	SocketFile   = admin.SocketFile
)

// ListenSocket listens on the broker's unix socket in the data dir (mode
// 0600). Connections from another uid are closed unread. The caller must
// own the data dir, so a leftover socket file is stale and replaced.
func ListenSocket(dd *DataDir) (net.Listener, error) {
	path := dd.File(SocketFile)
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("keyhole: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("keyhole: chmod %s: %w", path, err)
	}
	return &peerCheck{Listener: l, uid: os.Getuid()}, nil
}

// peerCheck accepts only connections from its own uid (SO_PEERCRED).
type peerCheck struct {
	net.Listener
	uid int
}

func (p *peerCheck) Accept() (net.Conn, error) {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if peerUID(c) == p.uid {
			return c, nil
		}
		c.Close()
	}
}

func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

// SocketHandler serves the broker's unix socket: MCP for local clients
// (with their session tokens, as over TCP), the admin API, /metrics and
// /healthz. The socket's mode and the peer-uid check are its access
// control; /mcp still needs a session token.
func (b *Broker) SocketHandler(m *LiveSessions, v *vault.Vault, reload func() error, metrics *Metrics) http.Handler {
	return b.socketHandler(m, v, reload, metrics, HTTPOptions{})
}

func (b *Broker) socketHandler(m *LiveSessions, v *vault.Vault, reload func() error, metrics *Metrics, o HTTPOptions) http.Handler {
	mux := http.NewServeMux()
	o.Loopback = false // a unix socket has no Host to check
	mux.Handle("/", b.HTTPHandler(m, o))
	if metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	}
	ops := &adminOps{vault: v, sessions: func() (*LiveSessions, error) { return m, nil }, reload: reload,
		config: func() (*config.Loaded, error) { return b.Config(), nil }, logins: &pendingLogins{}, access: b.access,
		changes: recorder{log: func() (AuditLog, error) { return b.audit, nil }, now: b.now}, secretChanged: b.secretChanged}
	mux.Handle("/admin/", admin.Handler(ops))
	acc := admin.AccessHandler(ops)
	mux.Handle("/admin/access", acc)
	mux.Handle("/admin/access/", acc)
	mux.Handle("/admin/access-events", acc)
	return mux
}
