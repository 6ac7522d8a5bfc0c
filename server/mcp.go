package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
)

// Version is keyhole's version, set by the linker for releases.
var Version = "dev"

type sessionKey struct{}

// WithSession binds an MCP request context to a keyhole session.
func WithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// SessionFrom returns the session a request context is bound to.
func SessionFrom(ctx context.Context) (*Session, bool) {
	s, ok := ctx.Value(sessionKey{}).(*Session)
	return s, ok && s != nil
}

// mcp returns the broker's MCP server, built on first use.
func (b *Broker) mcp() *mcpserver.MCPServer {
	b.mcpOnce.Do(func() { b.mcpSrv = b.newMCPServer() })
	return b.mcpSrv
}

// registerTools adds a handler for every tool of cfg the MCP server does
// not know yet. Handlers look tools up in the calling session's own
// config, so a session keeps the tools it started with across reloads.
func (b *Broker) registerTools(srv *mcpserver.MCPServer, cfg *config.Loaded) {
	for _, name := range slices.Sorted(maps.Keys(cfg.Tools)) {
		if srv.GetTool(name) == nil {
			srv.AddTool(dispatchTool(name), b.handler(name))
		}
	}
}

// dispatchSchema is the input schema of the tools registered with mcp-go.
var dispatchSchema = json.RawMessage(`{"type":"object"}`)

// dispatchTool is a tool as registered with mcp-go: only its name, which
// routes a tools/call to its handler. Nobody sees it: tools/list shows
// each session the tools its scope grants, described and narrowed by
// scopeTools (the tool filter replaces the registered list), and the
// handler validates the arguments against the tool's own schema.
//
// The schema is the smallest one on purpose: for every tools/call of the
// 2026-07-28 protocol mcp-go reads the registered tool's input schema for
// x-mcp-header bindings, re-marshalling it from scratch each time (see
// BENCHMARKS.md); keyhole's schemas bind no header, so the answer is the
// same and the smallest schema makes it cheapest.
func dispatchTool(name string) mcp.Tool {
	return mcp.NewToolWithRawSchema(name, "", dispatchSchema)
}

// newMCPServer returns an MCP server that serves the broker's tools. Every
// request must carry a session (WithSession): tools/list shows only the
// tools the session's scope grants, each described with what the scope
// allows, and a call to any other tool is refused as unknown.
func (b *Broker) newMCPServer() *mcpserver.MCPServer {
	hooks := &mcpserver.Hooks{}
	// How many MCP sessions mcp-go holds: what one token could grow
	// without the cap of HTTPOptions.SessionsPerToken.
	hooks.AddOnRegisterSession(func(context.Context, mcpserver.ClientSession) { b.mcpSessions.Add(1) })
	hooks.AddOnUnregisterSession(func(context.Context, mcpserver.ClientSession) { b.mcpSessions.Add(-1) })
	hooks.AddAfterInitialize(func(ctx context.Context, _ any, req *mcp.InitializeRequest, _ *mcp.InitializeResult) {
		if s, ok := SessionFrom(ctx); ok {
			s.SetClient(req.Params.ClientInfo.Name, req.Params.ClientInfo.Version)
		}
	})
	// Calls to tools that do not exist, or that the scope does not grant,
	// are refused by mcp-go before a handler runs; they are still calls,
	// so they are counted and audited here.
	hooks.AddOnError(func(ctx context.Context, _ any, method mcp.MCPMethod, msg any, err error) {
		if method != mcp.MethodToolsCall || !errors.Is(err, mcpserver.ErrToolNotFound) {
			return
		}
		s, ok := SessionFrom(ctx)
		if !ok {
			return
		}
		name := ""
		if req, ok := msg.(*mcp.CallToolRequest); ok {
			name = req.Params.Name
		}
		b.Call(ctx, s, name, nil)
	})

	srv := mcpserver.NewMCPServer("keyhole", Version,
		mcpserver.WithToolCapabilities(false),
		mcpserver.WithRecovery(),
		mcpserver.WithHooks(hooks),
		mcpserver.WithInstructions("keyhole brokers API credentials. Call the listed tools; each tool's description says what this session may do. You never hold a credential; denied calls explain what was denied."),
		mcpserver.WithToolFilter(func(ctx context.Context, all []mcp.Tool) []mcp.Tool {
			s, ok := SessionFrom(ctx)
			if !ok {
				return nil
			}
			return b.scopeTools(s.cfg, s.Scope())
		}),
	)
	return srv
}

// clientOf names the MCP client of a request: from the MCP session (set by
// initialize, or per request in the stateless protocol), else the session's.
func clientOf(ctx context.Context, s *Session) string {
	if cs := mcpserver.ClientSessionFromContext(ctx); cs != nil {
		if ci, ok := cs.(mcpserver.SessionWithClientInfo); ok {
			if info := ci.GetClientInfo(); info.Name != "" {
				return info.Name + "/" + info.Version
			}
		}
	}
	return s.Client()
}

// handler is the mcp-go handler of one tool name.
func (b *Broker) handler(name string) mcpserver.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		s, ok := SessionFrom(ctx)
		if !ok {
			return mcp.NewToolResultError("no keyhole session is bound to this connection"), nil
		}
		args := req.Params.RawArguments
		if len(args) == 0 {
			if req.Params.Arguments == nil {
				args = json.RawMessage("{}")
			} else if raw, err := json.Marshal(req.Params.Arguments); err == nil {
				args = raw
			}
		}
		return toolResult(b.Call(ctx, s, name, args)), nil
	}
}

// toolResult turns an outcome into what the agent sees. This is the one
// place a denial or failure becomes an MCP tool error.
func toolResult(o *Outcome) *mcp.CallToolResult {
	if o.Result == nil {
		return mcp.NewToolResultError(o.Message)
	}
	var structured any = o.Result.Structured
	if len(o.Result.StructuredJSON) > 0 {
		// The bytes that were checked for every form of the secret.
		structured = o.Result.StructuredJSON
	}
	res := mcp.NewToolResultStructured(structured, o.Result.Text)
	res.IsError = o.Result.UpstreamError
	if o.Note != "" {
		res.Content = append(res.Content, mcp.NewTextContent("("+o.Note+")"))
	}
	return res
}

// scopeTools is the tool list the sessions of a scope of cfg see, built
// once per compiled scope (a scope belongs to one config).
func (b *Broker) scopeTools(cfg *config.Loaded, sc *policy.Scope) []mcp.Tool {
	if v, ok := b.toolLists.Load(sc); ok {
		return v.([]mcp.Tool)
	}
	names := sc.Tools()
	list := make([]mcp.Tool, 0, len(names))
	for _, n := range names {
		if t, ok := cfg.Tools[n]; ok {
			list = append(list, mcpTool(t, sc))
		}
	}
	v, _ := b.toolLists.LoadOrStore(sc, list)
	return v.([]mcp.Tool)
}

// mcpTool describes a tool to the model, with what the scope allows on it
// (nil: the tool alone).
func mcpTool(t tools.Tool, sc *policy.Scope) mcp.Tool {
	desc := t.Description()
	readOnly := true
	if sc != nil {
		if allowed := sc.Summary(t.Name()); len(allowed) > 0 {
			desc = fmt.Sprintf("%s\n\nThis session may only: %s. Anything else is denied.", desc, strings.Join(allowed, "; "))
		}
		readOnly = sc.ReadOnly(t.Name())
	}
	tool := mcp.NewToolWithRawSchema(t.Name(), desc, narrowMethods(t, sc))
	tool.Annotations.ReadOnlyHint = &readOnly
	open := true
	tool.Annotations.OpenWorldHint = &open
	return tool
}

// Build is what `keyhole version --json` prints.
type Build struct {
	Version  string `json:"version"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
	// Protocols are the MCP revisions keyhole serves, newest first.
	Protocols []string `json:"mcp_protocols"`
}

// BuildInfo describes this binary.
func BuildInfo() Build {
	return Build{Version: Version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, Protocols: slices.Clone(mcp.ValidProtocolVersions)}
}

// narrowMethods is the tool's input schema as a scope's session sees it:
// the method of a generic http tool limited to the methods the scope
// grants on it, so the model is not offered a method every call of which
// is denied. Other schemas are the tool's own.
func narrowMethods(t tools.Tool, sc *policy.Scope) json.RawMessage {
	schema := t.InputSchema()
	if sc == nil || t.Kind() != "http" || t.Info().Method != "" {
		return schema
	}
	methods := sc.Methods(t.Name())
	if len(methods) == 0 {
		return schema
	}
	var doc map[string]any
	if json.Unmarshal(schema, &doc) != nil {
		return schema
	}
	props, _ := doc["properties"].(map[string]any)
	method, _ := props["method"].(map[string]any)
	if method == nil {
		return schema
	}
	method["enum"] = methods
	out, err := json.Marshal(doc)
	if err != nil {
		return schema
	}
	return out
}
