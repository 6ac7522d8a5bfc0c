// Package server wires keyhole together: the MCP server (mark3labs/mcp-go)
// over stdio and streamable HTTP, sessions bound to MCP connections, the
// call pipeline that takes one tools/call through the session's liveness,
// the arguments, policy, the vault, execution and the audit log, and the
// broker's lifecycle (the data dir, its socket, serve). Beside it:
// server/config reads keyhole.yaml, server/admin is the operator's API on
// the broker's socket, server/relay is the stdio side of a shared broker,
// server/demo is `keyhole demo`, server/audit the log, server/sessions
// the token store, and server/servertest the tests' shared harness.
//
// # Sessions
//
// Five types carry a session, each with its own meaning:
//
//   - policy.Session decides: a session's state, expiry and limits, and
//     every call's check against its scope. policy.SessionInfo is its
//     exportable state (what is stored and listed).
//   - sessions.Store persists: session records and the hashes of their
//     phantom tokens, in the data dir.
//   - server.Session serves: a policy.Session bound to the config it
//     started with and to the MCP client that runs it.
//   - server.LiveSessions are the phantom-token sessions a broker holds in
//     memory, found by token, flushed to the store.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/tools/scrub"
	"github.com/keyhole-dev/keyhole/vault"
)

// Secrets is what the broker needs from a secret store; *vault.Vault is one.
type Secrets interface {
	// Read returns a secret's value with the metadata of its version.
	Read(name string) (vault.Secret, vault.Meta, error)
	// Meta returns a secret's metadata; the broker reads it on every
	// call, so it should be cheap (the vault caches it).
	Meta(name string) (vault.Meta, error)
	Touch(name string, t time.Time) error
	// Replace and SetStatus store what a tool learns about its secret
	// (a rotated refresh token; that it needs a login).
	Replace(name string, prev, next []byte) (vault.Meta, error)
	SetStatus(name, status string) error
}

// AuditLog is what the broker needs from the audit log.
type AuditLog interface {
	// Begin durably records the intent of an allowed call before any byte
	// goes upstream.
	Begin(ctx context.Context, rec audit.Record) (PendingRecord, error)
	// Write records a complete call that never went upstream.
	Write(ctx context.Context, rec audit.Record) (uint64, error)
}

// PendingRecord is an intent awaiting its outcome.
type PendingRecord interface {
	Finish(ctx context.Context, outcome audit.Record) error
}

// auditLog makes an *audit.Log an AuditLog.
type auditLog struct{ *audit.Log }

// Begin implements AuditLog.
func (a auditLog) Begin(ctx context.Context, rec audit.Record) (PendingRecord, error) {
	p, err := a.Log.Begin(ctx, rec)
	if err != nil {
		return nil, err
	}
	return p, nil
}

var _ AuditLog = auditLog{}

// Broker runs the call pipeline for every session it serves.
type Broker struct {
	configs *Configs
	secrets Secrets
	audit   AuditLog
	// access holds calls that need a person's approval; nil denies them.
	access *access.Manager
	log    *slog.Logger
	now    func() time.Time
	// lastUsed throttles vault writes of a secret's last use to one a minute.
	lastUsed sync.Map // secret name -> time.Time
	metrics  *Metrics

	mcpOnce sync.Once
	mcpSrv  *mcpserver.MCPServer
	// toolLists caches what tools/list shows a scope's sessions:
	// *policy.Scope -> []mcp.Tool.
	toolLists sync.Map

	authFailOnce sync.Once
	authFail     *authFailures
	// mcpSessions counts the MCP sessions mcp-go holds open.
	mcpSessions atomic.Int64
	// cache holds decrypted secrets and their scrubbers (secretcache.go).
	cache secretCache
	// scopeSecrets caches, per scope, one tool of each secret it grants
	// (*policy.Scope -> []tools.Tool), for the argument check.
	scopeSecrets sync.Map
	// grants caches what a scope grants on each of its tools, as tools
	// see it (*policy.Scope -> map[string]callGrants).
	grants sync.Map
}

// MCPSessions is how many MCP sessions (initialize handshakes over HTTP,
// stdio clients) the broker holds open.
func (b *Broker) MCPSessions() int64 { return b.mcpSessions.Load() }

// Options configures a Broker.
type Options struct {
	// Config is the broker's own config: new sessions that name no
	// config get it.
	Config *config.Loaded
	// Env is what the tools of configs the broker loads later take from
	// their surroundings.
	Env     tools.Env
	Secrets Secrets
	Audit   AuditLog
	// Access, if set, holds calls that need a person's approval (access
	// requests); without it they are denied.
	Access *access.Manager
	Logger *slog.Logger
	// Now is the broker's clock; sessions expire by it. nil is time.Now.
	Now func() time.Time
	// Metrics, if set, counts calls.
	Metrics *Metrics
}

// NewBroker returns a broker for a loaded config.
func NewBroker(o Options) *Broker {
	b := &Broker{secrets: o.Secrets, audit: o.Audit, access: o.Access, log: o.Logger, now: o.Now, metrics: o.Metrics}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.configs = newConfigs(nil, o.Env, func(c *config.Loaded) {
		b.cache.evictAll() // a new config's tools get their own scrubbers
		b.registerTools(b.mcp(), c)
	})
	if o.Config != nil {
		b.configs.Set(o.Config)
	}
	return b
}

// Config returns the broker's own config: what new sessions that name no
// config start with.
func (b *Broker) Config() *config.Loaded { return b.configs.Default() }

// Configs returns every config the broker serves.
func (b *Broker) Configs() *Configs { return b.configs }

// SetConfig makes c the broker's own config for new sessions; running
// sessions keep the one they started with (pinned).
func (b *Broker) SetConfig(c *config.Loaded) {
	b.configs.Set(c)
	b.cache.evictAll() // a reload zeroes every cached secret, changed config or not
}

// secretChanged tells the broker that the value of secret name changed
// or was removed (an operator's set, rotate, rm or login, a tool's
// renewed token): its cached value and scrubbers are dropped now rather
// than at the next call, and zeroed once no call holds them.
func (b *Broker) secretChanged(name string) { b.cache.evict(name) }

// Call takes one tools/call through the pipeline and returns what the agent
// sees. It never returns a Go error for a denied or failed call: those are
// tool results with isError set.
func (b *Broker) Call(ctx context.Context, s *Session, name string, args json.RawMessage) *Outcome {
	start := b.now()
	rec := audit.Record{
		Time:    start.UTC(),
		Session: s.ID(),
		Scope:   s.Scope().Name(),
		Config:  s.cfg.Path,
		Client:  clientOf(ctx, s),
		Tool:    name,
	}
	cs := b.callSecrets()
	out := b.call(ctx, s, name, args, &rec, cs)
	cs.release()
	s.save(b.now())
	if s.Info(b.now()).State != policy.StateActive {
		// Expired, or ended by this call's tripwire: credentials minted
		// for it are revoked now.
		s.endMinted(ctx, b.log)
	}
	label := name
	if _, ok := s.cfg.Tools[name]; !ok {
		label = "(unknown)" // an agent must not grow the metric's label set
	}
	b.metrics.observe(label, string(out.Decision), b.now().Sub(start))
	return out
}

// Outcome is what a call produced: the agent's result or denial.
type Outcome struct {
	Decision audit.Decision
	// Message is the denial or error text shown to the agent.
	Message string
	// Result is set for a successful call.
	Result *tools.Result
	// Note, if set, is shown to the agent beside the result: what keyhole
	// did to it and what that means for the session.
	Note string
}

// scrubNote tells the agent a credential was removed from its result,
// and, when that counts toward the scope's max_denials, how many more end
// the session.
func scrubNote(t policy.Tripwire) string {
	const removed = "keyhole removed a credential from this result"
	switch {
	case t.Ended:
		return removed + "; that was one too many for this session's max_denials, so the session has ended: ask the user for a new session"
	case t.Counted:
		return fmt.Sprintf("%s; this counts toward the session's max_denials: %d more and the session ends", removed, t.Left)
	default:
		return removed
	}
}

func denied(msg string) *Outcome {
	return &Outcome{Decision: audit.Deny, Message: msg}
}

func failed(msg string) *Outcome {
	return &Outcome{Decision: audit.Error, Message: msg}
}

// call takes a call through the pipeline, in order: the session's
// liveness, the tool, the arguments (a credential in them ends the
// session), the scope's grants and limits, the secret (decrypted first so
// every record is scrubbed of it), the audit intent, the upstream, the
// audit outcome. Every path writes exactly one audit record.
func (b *Broker) call(ctx context.Context, s *Session, name string, args json.RawMessage, rec *audit.Record, cs *callSecrets) *Outcome {
	if d := s.Live(b.now()); !d.Allow {
		rec.Code, rec.Reason = d.Code, d.Reason
		return b.deny(ctx, rec, "denied: "+d.Reason)
	}
	tool, call, out := b.authorize(ctx, s, name, args, rec, cs)
	if out != nil {
		return out
	}
	return b.execute(ctx, s, tool, call, rec, cs)
}

// authorize resolves the tool, validates and normalizes the arguments and
// asks policy. A refused call is audited here and its Outcome returned.
func (b *Broker) authorize(ctx context.Context, s *Session, name string, args json.RawMessage, rec *audit.Record, cs *callSecrets) (tools.Tool, *tools.Call, *Outcome) {
	tool, ok := s.cfg.Tools[name]
	if !ok || !s.Scope().HasTool(name) {
		// Counted and audited like any denial; shown as an unknown tool.
		d := s.Decide(b.now(), policy.Request{Tool: name})
		rec.Code, rec.Reason = d.Code, d.Reason
		return nil, nil, b.deny(ctx, rec, fmt.Sprintf("unknown tool %q", name))
	}
	rec.Kind = tool.Kind()
	rec.Credential = tool.SecretName()
	rec.Args = args

	// Arguments that carry a credential are refused before anything else
	// and end the session (invariant 9): raw, then as Prepare decoded them.
	probe := b.probeScrubbers(s, tool, cs)
	if argsProbe(probe, args, nil) {
		return nil, nil, b.tripOnSecret(ctx, s, rec, probe)
	}
	call, err := tool.Prepare(args)
	if err != nil {
		// A probing agent's malformed calls count toward its tripwire.
		s.NoteDenial(b.now())
		var ae *tools.ArgError
		msg := "invalid arguments"
		if errors.As(err, &ae) {
			msg = "invalid arguments: " + ae.Msg
		}
		rec.Code, rec.Reason = codeInvalidArguments, msg
		return nil, nil, b.denyScrubbed(ctx, rec, tool, msg, cs)
	}
	describe(rec, call.AuditFields())
	if argsProbe(probe, args, call) {
		return nil, nil, b.tripOnSecret(ctx, s, rec, probe)
	}

	d := s.Decide(b.now(), call.Request)
	msg := "denied: " + d.Reason
	if d.Ask {
		// The call waits for a person: allowed once approved, else
		// denied with what the user must do (server/approval.go).
		d, msg = b.askPerson(ctx, s, tool, call, d, rec, cs)
	}
	if !d.Allow {
		rec.Code, rec.Reason = d.Code, d.Reason
		return nil, nil, b.denyScrubbed(ctx, rec, tool, msg, cs)
	}
	rec.Grant = d.Grant
	rec.Decision = audit.Allow
	return tool, call, nil
}

// execute runs an allowed call: the secret is decrypted, the intent made
// durable, the upstream called, and the outcome recorded before the agent
// sees anything.
func (b *Broker) execute(ctx context.Context, s *Session, tool tools.Tool, call *tools.Call, rec *audit.Record, cs *callSecrets) *Outcome {
	name := tool.Name()
	secret, err := cs.get(tool.SecretName())
	if err != nil {
		b.log.Error("secret unavailable", LogTool, name, LogSecret, tool.SecretName(), LogError, err)
		rec.Decision, rec.Code = audit.Error, "secret_unavailable"
		rec.Reason = fmt.Sprintf("secret %q unavailable: %v", tool.SecretName(), err)
		return b.write(ctx, rec, failed(fmt.Sprintf("keyhole cannot use the credential of tool %q; an operator must fix it (keyhole secret set %s)", name, tool.SecretName())))
	}
	rec.CredVersion = secret.version
	scrubber := secret.scrubber(tool)
	scrubRecord(rec, scrubber)

	pending, err := b.audit.Begin(ctx, *rec)
	if err != nil {
		b.log.Error("audit intent failed; call not made", LogTool, name, LogError, err)
		return failed("keyhole could not record this call in its audit log, so it was not made")
	}
	env := tools.CallEnv{
		Scrubber: scrubber,
		// A redirect hop is checked against the scope and the session's
		// liveness, spending none of its limits: it is part of this call.
		Authorize: func(r policy.Request) error {
			if d := s.Recheck(b.now(), r); !d.Allow {
				return errors.New(d.Reason)
			}
			return nil
		},
		Session: b.callSession(s, name),
		Secret:  secretWriter{secrets: b.secrets, name: tool.SecretName(), log: b.log, changed: b.secretChanged},
	}
	result, execErr := tool.Execute(ctx, call, secret.secret.Bytes(), env)
	b.touch(tool.SecretName())

	outcome := *rec
	outcome.Duration = b.now().Sub(rec.Time)
	var out *Outcome
	if execErr != nil {
		var ee *tools.ExecError
		msg, detail := "upstream call failed", ""
		if errors.As(execErr, &ee) {
			msg, detail = ee.Msg, ee.Detail
			outcome.Hops = auditHops(ee.Hops, scrubber)
			auditCredential(&outcome, ee.Credential)
		}
		// Belt and braces: the tool scrubs its errors; scrub again with the
		// secret in hand before anything is stored or shown.
		msg, _ = scrubber.String(msg)
		detail, _ = scrubber.String(detail)
		outcome.Decision, outcome.Code, outcome.Reason = audit.Error, "upstream_error", detail
		out = failed(msg)
	} else {
		outcome.Status = result.Status
		outcome.BytesIn, outcome.BytesOut = result.BytesIn, result.BytesOut
		outcome.Scrubbed = result.Scrubbed
		outcome.Hops = auditHops(result.Hops, scrubber)
		auditCredential(&outcome, result.Credential)
		out = &Outcome{Decision: audit.Allow, Result: result}
		if result.Scrubbed {
			out.Note = scrubNote(s.NoteScrubbed(b.now()))
		}
	}
	// The outcome is recorded even when the caller gave up: a cancelled call
	// is still a call, and it must not read as running or interrupted.
	if err := pending.Finish(context.WithoutCancel(ctx), outcome); err != nil {
		b.log.Error("audit outcome failed; result withheld", LogTool, name, LogError, err)
		return failed("keyhole could not record the outcome of this call in its audit log, so its result is withheld")
	}
	return out
}

// callGrants is what a scope grants on one tool, as tools see it.
type callGrants struct {
	s3   []policy.S3Grant
	http []policy.HTTPGrant
}

// callSession describes the call's session to its tool. The scope's
// grants on the tool are computed once per scope and shared by its calls
// (tools only read them).
func (b *Broker) callSession(s *Session, tool string) *tools.CallSession {
	sc := s.Scope()
	v, ok := b.grants.Load(sc)
	if !ok {
		m := map[string]callGrants{}
		for _, n := range sc.Tools() {
			m[n] = callGrants{s3: sc.S3Grants(n), http: sc.HTTPGrants(n)}
		}
		v, _ = b.grants.LoadOrStore(sc, m)
	}
	g := v.(map[string]callGrants)[tool]
	return &tools.CallSession{ID: s.ID(), Expires: s.Info(b.now()).Expires, S3: g.s3, HTTP: g.http}
}

// auditHops records the redirects a call followed, their paths scrubbed
// (an upstream chose them).
func auditHops(hops []tools.Hop, sc *scrub.Scrubber) []audit.Hop {
	var out []audit.Hop
	for _, h := range hops {
		p, _ := sc.String(h.Path)
		out = append(out, audit.Hop{Method: h.Method, Path: p, Status: h.Status})
	}
	return out
}

// denyScrubbed denies a call to a known tool. The agent chose the
// arguments, path, query names and object key, and the reason quotes them,
// so every form of the tool's secret is removed from the record and the
// message before either is kept or shown; the secret is decrypted for that
// alone. If it cannot be had, there is nothing to scrub with and the
// record is written as it is.
func (b *Broker) denyScrubbed(ctx context.Context, rec *audit.Record, tool tools.Tool, msg string, cs *callSecrets) *Outcome {
	if sc := cs.scrubber(tool); sc != nil {
		scrubRecord(rec, sc)
		msg, _ = sc.String(msg)
	}
	return b.deny(ctx, rec, msg)
}

// scrubRecord removes every form of a secret from the fields of rec that
// hold what the agent sent.
func scrubRecord(rec *audit.Record, sc *scrub.Scrubber) {
	rec.Args, _ = sc.Bytes(rec.Args)
	rec.Path, _ = sc.String(rec.Path)
	rec.Key, _ = sc.String(rec.Key)
	rec.Reason, _ = sc.String(rec.Reason)
	for i, n := range rec.QueryNames {
		rec.QueryNames[i], _ = sc.String(n)
	}
}

func (b *Broker) deny(ctx context.Context, rec *audit.Record, msg string) *Outcome {
	rec.Decision = audit.Deny
	return b.write(ctx, rec, denied(msg))
}

// write records a call that never went upstream. If the record cannot be
// written the agent gets an error, not the denial's detail.
func (b *Broker) write(ctx context.Context, rec *audit.Record, out *Outcome) *Outcome {
	rec.Duration = b.now().Sub(rec.Time)
	if _, err := b.audit.Write(context.WithoutCancel(ctx), *rec); err != nil {
		b.log.Error("audit write failed", LogTool, rec.Tool, LogError, err)
		return failed("keyhole could not record this call in its audit log")
	}
	b.log.Debug("call", LogSession, rec.Session, LogTool, rec.Tool, "decision", rec.Decision, "code", rec.Code)
	return out
}

// touch records a secret's last use, at most once a minute per secret.
func (b *Broker) touch(name string) {
	now := b.now()
	if v, ok := b.lastUsed.Load(name); ok && now.Sub(v.(time.Time)) < time.Minute {
		return
	}
	b.lastUsed.Store(name, now)
	if err := b.secrets.Touch(name, now); err != nil {
		b.log.Warn("record secret last use", LogSecret, name, LogError, err)
	}
}

// describe copies the canonical request into the audit record.
func describe(rec *audit.Record, f tools.AuditFields) {
	rec.Kind = f.Kind
	rec.Method, rec.Host, rec.Path, rec.QueryNames = f.Method, f.Host, f.Path, f.QueryNames
	rec.Bucket, rec.Action, rec.Key = f.Bucket, f.Action, f.Key
}
