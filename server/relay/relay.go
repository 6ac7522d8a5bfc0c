// Package relay is the stdio side of a shared broker: EnsureBroker starts
// one in the background when none answers on the data dir's socket, and
// Serve relays one MCP client's stdio to it as its own session (the
// gopls -remote=auto pattern), so several editor windows share one vault,
// one audit chain and one set of limits.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sync"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
)

// Serve serves one MCP client on in/out through the broker that owns
// dataDir, as its own session of scope of the config file at config (an
// absolute path): the gopls -remote pattern, so many editor windows share
// one vault, one audit chain and one set of limits, each running its own
// project's config. The session ends when in reaches EOF, or when the
// broker stops.
//
// Whatever the client sends, the relay answers and goes on: a message
// over server.MaxMessageBytes gets a JSON-RPC error naming the limit, one
// the broker refuses gets the broker's error, and once the session has
// ended (its tripwire fired, it was revoked or expired) every request is
// told why. Only when the broker itself goes away do pending requests get
// a JSON-RPC error and Serve return an error.
func Serve(ctx context.Context, dataDir, config, scope string, in io.Reader, out io.Writer, log *slog.Logger) error {
	ad, err := admin.Dial(dataDir)
	if err != nil {
		return err
	}
	defer ad.Close()
	info, tok, err := ad.SessionNew(admin.SessionRequest{
		Scope:         scope,
		Label:         fmt.Sprintf("stdio pid %d", os.Getpid()),
		Config:        config,
		Relay:         true,
		ClientVersion: server.Version,
	})
	if err != nil {
		return err
	}
	if info.Config != config {
		// A broker from before configs were named runs its own: never
		// run a scope of a config this client did not resolve.
		ad.SessionEnd(info.ID)
		return fmt.Errorf("keyhole: the running broker cannot run the config %s (it would run %q instead); it is an older keyhole: run `keyhole stop`, then start this client again", config, info.Config)
	}
	log.Info("session started via broker", server.LogSession, info.ID, server.LogScope, scope, server.LogConfig, info.Config)
	defer func() {
		if err := ad.SessionEnd(info.ID); err != nil {
			log.Warn("end session", server.LogSession, info.ID, server.LogError, err)
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &relay{
		dataDir: dataDir, token: tok, session: info.ID, admin: ad,
		out: server.NewLineWriter(out), log: log, cancel: cancel,
	}
	defer r.close()
	return r.run(ctx, in)
}

type relay struct {
	dataDir, token, session string
	admin                   *admin.Client
	log                     *slog.Logger
	cancel                  context.CancelFunc
	out                     *server.LineWriter

	// tr is made for the first message: a client that starts with
	// initialize speaks a revision before 2026-07-28 and gets the
	// broker's event stream; one that starts with server/discover speaks
	// 2026-07-28, which has neither a handshake nor that stream.
	trOnce sync.Once
	tr     *transport.StreamableHTTP
	trErr  error
	// initialize is the client's handshake, resent if the broker forgot
	// the MCP session (it was idle longer than the broker keeps one).
	initMu     sync.Mutex
	initialize *transport.JSONRPCRequest

	// dead, once set, is why the session is over: every request is
	// answered with it, and nothing more goes to the broker.
	deadMu sync.Mutex
	dead   string

	brokerErr error
	errOnce   sync.Once
	wg        sync.WaitGroup
}

// message is just enough of a JSON-RPC message to route it.
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		Meta *mcp.Meta `json:"_meta"`
	} `json:"params"`
}

// headersKey carries a message's per-request headers (the standard
// headers of protocol revision 2026-07-28) to the transport.
type headersKey struct{}

func (r *relay) transport(ctx context.Context, first string) (*transport.StreamableHTTP, error) {
	r.trOnce.Do(func() {
		opts := []transport.StreamableHTTPCOption{
			transport.WithHTTPBasicClient(admin.SocketClient(r.dataDir)),
			transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + r.token}),
			transport.WithHTTPHeaderFunc(func(ctx context.Context) map[string]string {
				h, _ := ctx.Value(headersKey{}).(map[string]string)
				return h
			}),
			// mcp-go's transport logs its housekeeping ("listening to
			// server forever", retries of its event stream); stderr is the
			// user's, so it goes there only at --log-level debug. The relay
			// logs what matters itself.
			transport.WithHTTPLogger(slog.New(demoted{r.log.Handler()})),
		}
		if first == string(mcp.MethodInitialize) {
			// Only a client on a revision before 2026-07-28 initializes:
			// its notifications come on the standalone GET stream, which
			// this (deprecated for the new revision) option keeps open.
			//lint:ignore SA1019 for clients on the older revisions only
			opts = append(opts, transport.WithContinuousListening())
		}
		tr, err := transport.NewStreamableHTTP("http://keyhole/mcp", opts...)
		if err == nil {
			err = tr.Start(ctx)
		}
		if err != nil {
			r.trErr = fmt.Errorf("keyhole: relay: %w", err)
			return
		}
		tr.SetNotificationHandler(func(n mcp.JSONRPCNotification) { r.out.WriteMessage(n) })
		r.tr = tr
	})
	return r.tr, r.trErr
}

func (r *relay) close() {
	if r.tr != nil {
		r.tr.Close()
	}
}

func (r *relay) run(ctx context.Context, in io.Reader) error {
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		readErr <- server.ReadMessages(in, func(line []byte) error {
			select {
			case lines <- line:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, r.out.WriteMessage)
	}()
	for {
		select {
		case line := <-lines:
			r.handle(ctx, line)
		case err := <-readErr:
			r.wg.Wait()
			if err == nil || errors.Is(err, context.Canceled) {
				return r.brokerErr
			}
			return err
		case <-ctx.Done():
			r.wg.Wait()
			return r.brokerErr
		}
	}
}

func (r *relay) handle(ctx context.Context, line []byte) {
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		r.out.WriteMessage(mcp.NewJSONRPCError(mcp.NewRequestId(nil), mcp.PARSE_ERROR, "Parse error", nil))
		return
	}
	if m.Method == "" {
		return // a response to a server request; keyhole makes none
	}
	if dead := r.deadSession(); dead != "" {
		if len(m.ID) > 0 && string(m.ID) != "null" {
			var req transport.JSONRPCRequest
			if json.Unmarshal(line, &req) == nil {
				r.answerFailure(req, dead)
			}
		}
		return
	}
	tr, err := r.transport(ctx, m.Method)
	if err != nil {
		r.brokerGone(err)
		return
	}
	ctx = context.WithValue(ctx, headersKey{}, r.headers(tr, m, line))
	if len(m.ID) == 0 || string(m.ID) == "null" {
		var n mcp.JSONRPCNotification
		if json.Unmarshal(line, &n) == nil {
			if err := tr.SendNotification(ctx, n); err != nil {
				r.failed(err, "notification "+m.Method)
			}
		}
		return
	}
	var req transport.JSONRPCRequest
	if err := json.Unmarshal(line, &req); err != nil {
		r.out.WriteMessage(mcp.NewJSONRPCError(mcp.NewRequestId(nil), mcp.INVALID_REQUEST, "Invalid request", nil))
		return
	}
	if req.Method == string(mcp.MethodInitialize) {
		// The MCP session is established by initialize: wait for it.
		r.forward(ctx, tr, req)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.forward(ctx, tr, req)
	}()
}

// headers returns the standard headers protocol revision 2026-07-28
// requires over HTTP, for a message that declares that revision; the
// transport is switched to it on the first such message.
func (r *relay) headers(tr *transport.StreamableHTTP, m message, line []byte) map[string]string {
	version := m.Params.Meta.ProtocolVersion()
	if !mcp.IsModernProtocol(version) {
		return nil
	}
	tr.SetProtocolVersion(version)
	var p struct {
		Params json.RawMessage `json:"params"`
	}
	json.Unmarshal(line, &p)
	h := mcp.StandardHeaders(version, mcp.MCPMethod(m.Method), p.Params)
	h[mcp.HeaderProtocolVersion] = version
	return h
}

func (r *relay) forward(ctx context.Context, tr *transport.StreamableHTTP, req transport.JSONRPCRequest) {
	resp, err := tr.SendRequest(ctx, req)
	if errors.Is(err, transport.ErrSessionTerminated) && req.Method != string(mcp.MethodInitialize) && r.reinitialize(ctx, tr) {
		resp, err = tr.SendRequest(ctx, req)
	}
	if err != nil {
		r.answerFailure(req, r.failed(err, req.Method))
		return
	}
	if req.Method == string(mcp.MethodInitialize) && resp.Error == nil {
		var res struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		if json.Unmarshal(resp.Result, &res) == nil && res.ProtocolVersion != "" {
			tr.SetProtocolVersion(res.ProtocolVersion)
		}
		r.initMu.Lock()
		r.initialize = &req
		r.initMu.Unlock()
	}
	r.out.WriteMessage(resp)
}

// reinitialize starts a new MCP session for the client after the broker
// forgot its old one (idle longer than the broker keeps one), by sending
// the client's own handshake again. The keyhole session, its limits and
// counters are the same: they belong to the token.
func (r *relay) reinitialize(ctx context.Context, tr *transport.StreamableHTTP) bool {
	r.initMu.Lock()
	defer r.initMu.Unlock()
	if r.initialize == nil {
		return false
	}
	resp, err := tr.SendRequest(ctx, *r.initialize)
	if err != nil || resp.Error != nil {
		return false
	}
	n := mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{Method: string(mcp.MethodNotificationInitialized)}}
	if err := tr.SendNotification(ctx, n); err != nil {
		return false
	}
	r.log.Info("the broker had closed this client's idle MCP session; started a new one", server.LogSession, r.session)
	return true
}

// failed classifies an error of the transport and returns what to tell
// the client. Only a broker that cannot be reached ends the relay; a
// session that is over, or a message the broker refused, is told to the
// client and the relay goes on.
func (r *relay) failed(err error, what string) string {
	var authErr *transport.AuthorizationRequiredError
	var urlErr *url.Error
	switch {
	case errors.As(err, &authErr):
		return r.sessionOver()
	case errors.As(err, &urlErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		r.brokerGone(err)
		return "keyhole broker unavailable; restart the MCP server"
	case errors.Is(err, context.Canceled):
		return "request cancelled"
	default:
		r.log.Warn("the broker refused a message", "method", what, server.LogError, err)
		return "keyhole refused this message: " + err.Error()
	}
}

// sessionOver asks the broker why the session's token no longer works,
// and from then on answers every request with that, without the broker:
// the transport is closed, so its event stream stops asking too.
func (r *relay) sessionOver() string {
	why := "keyhole no longer accepts this session's token; restart the MCP server"
	if info, err := r.admin.SessionShow(r.session); err == nil && info.DeadReason() != "" {
		why = info.DeadReason()
	}
	r.deadMu.Lock()
	first := r.dead == ""
	if first {
		r.dead = why
	}
	r.deadMu.Unlock()
	if first {
		r.log.Warn("the session is over; requests are answered with why", server.LogSession, r.session, "why", why)
		go r.tr.Close()
	}
	return why
}

func (r *relay) deadSession() string {
	r.deadMu.Lock()
	defer r.deadMu.Unlock()
	return r.dead
}

// answerFailure answers a request that got no response: a tool call with
// a tool error the agent reads, anything else with a JSON-RPC error.
func (r *relay) answerFailure(req transport.JSONRPCRequest, msg string) {
	if req.Method == string(mcp.MethodToolsCall) {
		res, err := json.Marshal(mcp.NewToolResultError(msg))
		if err == nil {
			r.out.WriteMessage(transport.NewJSONRPCResultResponse(req.ID, res))
			return
		}
	}
	r.out.WriteMessage(mcp.NewJSONRPCError(req.ID, mcp.INTERNAL_ERROR, msg, nil))
}

func (r *relay) brokerGone(err error) {
	r.errOnce.Do(func() {
		r.brokerErr = fmt.Errorf("keyhole: lost the broker: %w", err)
		r.log.Error("lost the keyhole broker", server.LogError, err)
		r.cancel()
	})
}

// demoted logs every record at debug level.
type demoted struct{ slog.Handler }

func (d demoted) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.Handler.Enabled(ctx, slog.LevelDebug)
}

func (d demoted) Handle(ctx context.Context, rec slog.Record) error {
	rec.Level = slog.LevelDebug
	return d.Handler.Handle(ctx, rec)
}

func (d demoted) WithAttrs(a []slog.Attr) slog.Handler { return demoted{d.Handler.WithAttrs(a)} }
func (d demoted) WithGroup(n string) slog.Handler      { return demoted{d.Handler.WithGroup(n)} }
