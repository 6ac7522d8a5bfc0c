// Package relay is the stdio side of a shared broker: EnsureBroker starts
// one in the background when none answers on the data dir's socket, and
// Serve relays one MCP client's stdio to it as its own session (the
// gopls -remote=auto pattern), so several editor windows share one vault,
// one audit chain and one set of limits.
package relay

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
// broker stops. If the broker goes away, pending requests get a JSON-RPC
// error and Serve returns an error.
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

	tr, err := transport.NewStreamableHTTP("http://keyhole/mcp",
		transport.WithHTTPBasicClient(admin.SocketClient(dataDir)),
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}),
		transport.WithContinuousListening(),
	)
	if err != nil {
		return fmt.Errorf("keyhole: relay: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := tr.Start(ctx); err != nil {
		return fmt.Errorf("keyhole: relay: %w", err)
	}
	defer tr.Close()

	r := &relay{tr: tr, out: bufio.NewWriter(out), log: log, cancel: cancel}
	tr.SetNotificationHandler(func(n mcp.JSONRPCNotification) { r.write(n) })
	return r.run(ctx, server.CapLines(in, server.MaxMessageBytes))
}

type relay struct {
	tr     *transport.StreamableHTTP
	log    *slog.Logger
	cancel context.CancelFunc

	mu  sync.Mutex // serializes writes to out
	out *bufio.Writer

	brokerErr error
	errOnce   sync.Once
	wg        sync.WaitGroup
}

// message is just enough of a JSON-RPC message to route it.
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
}

func (r *relay) run(ctx context.Context, in io.Reader) error {
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		br := bufio.NewReaderSize(in, 64<<10)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	for {
		select {
		case line := <-lines:
			r.handle(ctx, line)
		case err := <-readErr:
			r.wg.Wait()
			if errors.Is(err, io.EOF) {
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
		r.write(mcp.NewJSONRPCError(mcp.NewRequestId(nil), mcp.PARSE_ERROR, "Parse error", nil))
		return
	}
	switch {
	case m.Method == "":
		// A response to a server request; keyhole makes none.
		return
	case len(m.ID) == 0 || string(m.ID) == "null":
		var n mcp.JSONRPCNotification
		if json.Unmarshal(line, &n) == nil {
			if err := r.tr.SendNotification(ctx, n); err != nil {
				r.brokerGone(err)
			}
		}
		return
	}
	var req transport.JSONRPCRequest
	if err := json.Unmarshal(line, &req); err != nil {
		r.write(mcp.NewJSONRPCError(mcp.NewRequestId(nil), mcp.INVALID_REQUEST, "Invalid request", nil))
		return
	}
	if req.Method == string(mcp.MethodInitialize) {
		// The MCP session is established by initialize: wait for it.
		r.forward(ctx, req)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.forward(ctx, req)
	}()
}

func (r *relay) forward(ctx context.Context, req transport.JSONRPCRequest) {
	resp, err := r.tr.SendRequest(ctx, req)
	if err != nil {
		r.write(mcp.NewJSONRPCError(req.ID, mcp.INTERNAL_ERROR, "keyhole broker unavailable; restart the MCP server", nil))
		r.brokerGone(err)
		return
	}
	if req.Method == string(mcp.MethodInitialize) && resp.Error == nil {
		var res struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		if json.Unmarshal(resp.Result, &res) == nil && res.ProtocolVersion != "" {
			r.tr.SetProtocolVersion(res.ProtocolVersion)
		}
	}
	r.write(resp)
}

func (r *relay) brokerGone(err error) {
	r.errOnce.Do(func() {
		r.brokerErr = fmt.Errorf("keyhole: lost the broker: %w", err)
		r.log.Error("lost the keyhole broker", server.LogError, err)
		r.cancel()
	})
}

func (r *relay) write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out.Write(b)
	r.out.WriteByte('\n')
	r.out.Flush()
}
