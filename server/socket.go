package server

import (
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyhole-dev/keyhole/server/admin"
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
	if err := SharedBrokerSupported(); err != nil {
		return nil, err
	}
	path := dd.File(SocketFile)
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		if len(path) > 100 {
			// sun_path holds 104 bytes on darwin and the BSDs, 108 on Linux.
			return nil, fmt.Errorf("keyhole: listen on %s: %w (the path is %d bytes, longer than unix sockets may be: use a shorter --data-dir)", path, err, len(path))
		}
		return nil, fmt.Errorf("keyhole: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("keyhole: chmod %s: %w", path, err)
	}
	return &peerCheck{Listener: l, uid: os.Getuid()}, nil
}

// SharedBrokerSupported says whether this system can run the shared broker
// (`keyhole serve` and the stdio relay), and if not, what to run instead.
func SharedBrokerSupported() error { return errNoPeerCred }

// peerCheck accepts only connections from its own uid (SO_PEERCRED, or
// LOCAL_PEERCRED on macOS).
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
	raw.Control(func(fd uintptr) { uid = peerUIDOf(fd) })
	return uid
}

// SocketHandler serves the broker's unix socket: MCP for local clients
// (with their session tokens, as over TCP), the admin API, /metrics and
// /healthz. The socket's mode and the peer-uid check are its access
// control; /mcp still needs a session token.
func (b *Broker) SocketHandler(m *LiveSessions, ops interface {
	admin.Ops
	admin.AccessOps
}, metrics *Metrics) http.Handler {
	return b.socketHandler(m, ops, metrics, HTTPOptions{})
}

func (b *Broker) socketHandler(m *LiveSessions, ops interface {
	admin.Ops
	admin.AccessOps
}, metrics *Metrics, o HTTPOptions) http.Handler {
	mux := http.NewServeMux()
	o.Loopback = false // a unix socket has no Host to check
	mux.Handle("/", b.HTTPHandler(m, o))
	if metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	}
	mux.Handle("/admin/", admin.Handler(ops))
	acc := admin.AccessHandler(ops)
	mux.Handle("/admin/access", acc)
	mux.Handle("/admin/access/", acc)
	mux.Handle("/admin/access-events", acc)
	return mux
}
