package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/vault"
)

// More files in a data dir.
const (
	SessionsFile = "sessions.db"
	SocketFile   = "keyhole.sock"
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
func (b *Broker) SocketHandler(m *Sessions, v *vault.Vault, reload func() error, metrics *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", b.HTTPHandler(m, HTTPOptions{}))
	if metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	}
	svc := &brokerAdmin{m: m, v: v, reload: reload}
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		var req adminRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			writeAdmin(w, adminResponse{Error: "bad request: " + err.Error()})
			return
		}
		writeAdmin(w, svc.do(r.URL.Path[len("/admin/"):], req))
	})
	return mux
}

type adminRequest struct {
	Name        string        `json:"name,omitempty"`
	Value       []byte        `json:"value,omitempty"`
	Description string        `json:"description,omitempty"`
	Scope       string        `json:"scope,omitempty"`
	TTL         time.Duration `json:"ttl,omitempty"`
	Label       string        `json:"label,omitempty"`
	ID          string        `json:"id,omitempty"`
	All         bool          `json:"all,omitempty"`
}

type adminResponse struct {
	Error    string               `json:"error,omitempty"`
	NotFound bool                 `json:"not_found,omitempty"`
	Meta     *vault.Meta          `json:"meta,omitempty"`
	Metas    []vault.Meta         `json:"metas,omitempty"`
	Session  *policy.SessionInfo  `json:"session,omitempty"`
	Sessions []policy.SessionInfo `json:"sessions,omitempty"`
	Token    string               `json:"token,omitempty"`
	IDs      []string             `json:"ids,omitempty"`
}

func writeAdmin(w http.ResponseWriter, resp adminResponse) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// brokerAdmin runs admin operations inside the broker.
type brokerAdmin struct {
	m      *Sessions
	v      *vault.Vault
	reload func() error
}

func (s *brokerAdmin) do(op string, req adminRequest) adminResponse {
	var resp adminResponse
	var err error
	switch op {
	case "secret/set":
		err = s.v.Set(req.Name, req.Value, req.Description)
	case "secret/rotate":
		var m vault.Meta
		m, err = s.v.Rotate(req.Name, req.Value)
		resp.Meta = &m
	case "secret/meta":
		var m vault.Meta
		m, err = s.v.Meta(req.Name)
		resp.Meta = &m
	case "secret/list":
		resp.Metas, err = s.v.List()
	case "secret/delete":
		err = s.v.Delete(req.Name)
	case "session/new":
		var info policy.SessionInfo
		info, resp.Token, err = s.m.Create(req.Scope, req.TTL, req.Label)
		resp.Session = &info
	case "session/list":
		resp.Sessions, err = s.m.List(req.All)
	case "session/show":
		var info policy.SessionInfo
		info, err = s.m.Show(req.ID)
		resp.Session = &info
	case "session/revoke":
		resp.IDs, err = s.m.Revoke(req.ID, req.Scope, req.All, "revoked by operator")
	case "session/end":
		err = s.m.End(req.ID, "ended by client")
	case "reload":
		err = s.reload()
	default:
		err = fmt.Errorf("unknown admin operation %q", op)
	}
	for i := range req.Value {
		req.Value[i] = 0
	}
	if err != nil {
		resp = adminResponse{Error: err.Error(), NotFound: errors.Is(err, vault.ErrNotFound)}
	}
	return resp
}

// adminClient is Admin over a running broker's socket.
type adminClient struct {
	http *http.Client
}

// DialAdmin connects to the broker that owns dataDir, or fails with
// ErrNoBroker.
func DialAdmin(dataDir string) (Admin, error) {
	c := &adminClient{http: SocketClient(dataDir)}
	resp, err := c.http.Get("http://keyhole/healthz")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBroker, err)
	}
	resp.Body.Close()
	return c, nil
}

// SocketClient is an HTTP client that talks to the broker's unix socket;
// the URL's host is ignored.
func SocketClient(dataDir string) *http.Client {
	path := filepath.Join(dataDir, SocketFile)
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func (c *adminClient) call(op string, req adminRequest) (adminResponse, error) {
	body, err := json.Marshal(req)
	for i := range req.Value {
		req.Value[i] = 0
	}
	if err != nil {
		return adminResponse{}, err
	}
	resp, err := c.http.Post("http://keyhole/admin/"+op, "application/json", bytes.NewReader(body))
	clear(body)
	if err != nil {
		return adminResponse{}, fmt.Errorf("keyhole: broker: %w", err)
	}
	defer resp.Body.Close()
	var out adminResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return adminResponse{}, fmt.Errorf("keyhole: broker answered %s", strconv.Quote(resp.Status))
	}
	if out.Error != "" {
		if out.NotFound {
			return out, fmt.Errorf("%s: %w", out.Error, vault.ErrNotFound)
		}
		return out, errors.New(out.Error)
	}
	return out, nil
}

func (c *adminClient) Remote() bool { return true }
func (c *adminClient) Close() error { c.http.CloseIdleConnections(); return nil }

func (c *adminClient) SecretSet(name string, value []byte, desc string) error {
	_, err := c.call("secret/set", adminRequest{Name: name, Value: bytes.Clone(value), Description: desc})
	return err
}

func (c *adminClient) SecretRotate(name string, value []byte) (vault.Meta, error) {
	r, err := c.call("secret/rotate", adminRequest{Name: name, Value: bytes.Clone(value)})
	if err != nil || r.Meta == nil {
		return vault.Meta{}, err
	}
	return *r.Meta, nil
}

func (c *adminClient) SecretMeta(name string) (vault.Meta, error) {
	r, err := c.call("secret/meta", adminRequest{Name: name})
	if err != nil || r.Meta == nil {
		return vault.Meta{}, err
	}
	return *r.Meta, nil
}

func (c *adminClient) SecretList() ([]vault.Meta, error) {
	r, err := c.call("secret/list", adminRequest{})
	return r.Metas, err
}

func (c *adminClient) SecretDelete(name string) error {
	_, err := c.call("secret/delete", adminRequest{Name: name})
	return err
}

func (c *adminClient) SessionNew(scope string, ttl time.Duration, label string) (policy.SessionInfo, string, error) {
	r, err := c.call("session/new", adminRequest{Scope: scope, TTL: ttl, Label: label})
	if err != nil || r.Session == nil {
		return policy.SessionInfo{}, "", err
	}
	return *r.Session, r.Token, nil
}

func (c *adminClient) SessionList(all bool) ([]policy.SessionInfo, error) {
	r, err := c.call("session/list", adminRequest{All: all})
	return r.Sessions, err
}

func (c *adminClient) SessionShow(id string) (policy.SessionInfo, error) {
	r, err := c.call("session/show", adminRequest{ID: id})
	if err != nil || r.Session == nil {
		return policy.SessionInfo{}, err
	}
	return *r.Session, nil
}

func (c *adminClient) SessionRevoke(id, scope string, all bool) ([]string, error) {
	r, err := c.call("session/revoke", adminRequest{ID: id, Scope: scope, All: all})
	return r.IDs, err
}

func (c *adminClient) SessionEnd(id string) error {
	_, err := c.call("session/end", adminRequest{ID: id})
	return err
}

func (c *adminClient) Reload() error {
	_, err := c.call("reload", adminRequest{})
	return err
}
