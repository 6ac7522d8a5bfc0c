package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
)

// Client is Admin over a running broker's unix socket.
type Client struct {
	http *http.Client
}

var _ Admin = (*Client)(nil)

// Dial connects to the broker that owns dataDir, or fails with
// ErrNoBroker.
func Dial(dataDir string) (*Client, error) {
	c := &Client{http: SocketClient(dataDir)}
	resp, err := c.http.Get("http://keyhole/healthz")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBroker, err)
	}
	resp.Body.Close()
	return c, nil
}

// do sends one admin request and decodes the answer into out (nil: none
// expected). body, if set, is JSON-encoded, and the encoding zeroed once
// sent.
func (c *Client) do(method, path string, body, out any) error {
	var rd io.Reader
	var enc []byte
	if body != nil {
		var err error
		if enc, err = json.Marshal(body); err != nil {
			return err
		}
		defer clear(enc)
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, "http://keyhole"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("keyhole: broker: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.NewDecoder(resp.Body).Decode(&eb) != nil || eb.Error == "" {
			return fmt.Errorf("keyhole: broker answered %s", strconv.Quote(resp.Status))
		}
		switch eb.Code {
		case "secret_not_found":
			return fmt.Errorf("%s: %w", eb.Error, vault.ErrNotFound)
		case "session_not_found":
			return fmt.Errorf("%s: %w", eb.Error, sessions.ErrNotFound)
		case "access_request_not_found":
			return brokerError{eb.Error, access.ErrNotFound}
		case "access_request_not_open":
			return brokerError{eb.Error, access.ErrNotOpen}
		case "console_off":
			return fmt.Errorf("keyhole: %w", ErrNoConsole)
		}
		return fmt.Errorf("%s", eb.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("keyhole: broker answered %s: %w", strconv.Quote(resp.Status), err)
	}
	return nil
}

// brokerError is the broker's message for an error of a known kind.
type brokerError struct {
	msg  string
	kind error
}

func (e brokerError) Error() string { return e.msg }
func (e brokerError) Unwrap() error { return e.kind }

func secretPath(name string) string { return "/admin/secrets/" + url.PathEscape(name) }

// Remote implements Admin: a Client always goes to a broker.
func (c *Client) Remote() bool { return true }

// Close releases the client's connections.
func (c *Client) Close() error { c.http.CloseIdleConnections(); return nil }

// SecretSet implements Ops.
func (c *Client) SecretSet(name string, value []byte, desc string) error {
	return c.do(http.MethodPost, secretPath(name), secretBody{Value: value, Description: desc}, nil)
}

// SecretRotate implements Ops.
func (c *Client) SecretRotate(name string, value []byte) (SecretMeta, error) {
	var m SecretMeta
	err := c.do(http.MethodPost, secretPath(name)+"/rotate", secretBody{Value: value}, &m)
	return m, err
}

// SecretMeta implements Ops.
func (c *Client) SecretMeta(name string) (SecretMeta, error) {
	var m SecretMeta
	err := c.do(http.MethodGet, secretPath(name), nil, &m)
	return m, err
}

// SecretList implements Ops.
func (c *Client) SecretList() ([]SecretMeta, error) {
	var ms []SecretMeta
	err := c.do(http.MethodGet, "/admin/secrets", nil, &ms)
	return ms, err
}

// SecretDelete implements Ops.
func (c *Client) SecretDelete(name string) error {
	return c.do(http.MethodDelete, secretPath(name), nil, nil)
}

// SecretLoginStart implements Ops.
func (c *Client) SecretLoginStart(name, redirectURL string) (LoginStart, error) {
	var l LoginStart
	err := c.do(http.MethodPost, secretPath(name)+"/login", loginStartBody{RedirectURL: redirectURL}, &l)
	return l, err
}

// SecretLoginFinish implements Ops.
func (c *Client) SecretLoginFinish(name, state, code string) (SecretMeta, error) {
	var m SecretMeta
	err := c.do(http.MethodPost, secretPath(name)+"/login/finish", loginFinishBody{State: state, Code: code}, &m)
	return m, err
}

// SessionNew implements Ops.
func (c *Client) SessionNew(req SessionRequest) (SessionInfo, string, error) {
	var r sessionNewResult
	err := c.do(http.MethodPost, "/admin/sessions", req, &r)
	return r.Session, r.Token, err
}

// SessionList implements Ops.
func (c *Client) SessionList(all bool) ([]SessionInfo, error) {
	var list []SessionInfo
	err := c.do(http.MethodGet, "/admin/sessions?all="+strconv.FormatBool(all), nil, &list)
	return list, err
}

// SessionShow implements Ops.
func (c *Client) SessionShow(id string) (SessionInfo, error) {
	var info SessionInfo
	err := c.do(http.MethodGet, "/admin/sessions/"+url.PathEscape(id), nil, &info)
	return info, err
}

// SessionRevoke implements Ops.
func (c *Client) SessionRevoke(id, scope string, all bool) ([]string, error) {
	path := "/admin/sessions/revoke-all"
	switch {
	case id != "":
		path = "/admin/sessions/" + url.PathEscape(id) + "/revoke"
	case scope != "":
		path = "/admin/scopes/" + url.PathEscape(scope) + "/revoke"
	case !all:
		return nil, fmt.Errorf("keyhole: revoke needs a session id, a scope or all")
	}
	var r revokedResult
	err := c.do(http.MethodPost, path, nil, &r)
	return r.IDs, err
}

// SessionEnd implements Ops.
func (c *Client) SessionEnd(id string) error {
	return c.do(http.MethodPost, "/admin/sessions/"+url.PathEscape(id)+"/end", nil, nil)
}

// Reload implements Ops.
func (c *Client) Reload(config string) (Reloaded, error) {
	var r Reloaded
	err := c.do(http.MethodPost, "/admin/reload", reloadBody{Config: config}, &r)
	return r, err
}

// Status implements Ops.
func (c *Client) Status() (Status, error) {
	var s Status
	err := c.do(http.MethodGet, "/admin/status", nil, &s)
	return s, err
}

// Stop implements Ops.
func (c *Client) Stop() (Stopping, error) {
	var s Stopping
	err := c.do(http.MethodPost, "/admin/stop", nil, &s)
	return s, err
}
