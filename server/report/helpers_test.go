package report

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

var t0 = time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)

// world is a log, a config and the vault's metadata that a test scripts
// calls into, as the broker would record them.
type fixture struct {
	t   *testing.T
	log *audit.Log
	cfg *config.Loaded
	src *Sources
}

func newFixture(t *testing.T, yaml string, secrets []vault.Meta, sessions []policy.SessionInfo) *fixture {
	t.Helper()
	cfg, err := config.Parse("keyhole.yaml", []byte(yaml), tools.Env{})
	if err != nil {
		t.Fatalf("config.Parse = %v", err)
	}
	l, err := audit.Open(audit.Options{Path: filepath.Join(t.TempDir(), "audit.sqlite"), Key: bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &fixture{t: t, log: l, cfg: cfg, src: &Sources{Log: l, Config: cfg, Secrets: secrets, Sessions: sessions, Now: t0.Add(24 * time.Hour)}}
}

// call records one call of session (scope, client) at time at, as the
// broker does: the tool prepares the arguments, the scope decides, and
// an allowed call gets an intent and an outcome (status 200, bytes),
// anything else one record. It returns the call's seq.
func (f *fixture) call(at time.Time, session, scope, client, tool, args string, bytesIn int64) uint64 {
	f.t.Helper()
	rec := audit.Record{Time: at, Session: session, Scope: scope, Client: client, Tool: tool, Args: json.RawMessage(args)}
	sc, ok := f.cfg.Policy.Scope(scope)
	if !ok {
		f.t.Fatalf("no scope %s", scope)
	}
	tl, ok := f.cfg.Tools[tool]
	if !ok || !sc.HasTool(tool) {
		d := sc.Decide(policy.Request{Tool: tool})
		rec.Decision, rec.Code, rec.Reason = audit.Deny, d.Code, d.Reason
		return f.write(rec)
	}
	rec.Kind, rec.Credential = tl.Kind(), tl.SecretName()
	c, err := tl.Prepare(json.RawMessage(args))
	if err != nil {
		rec.Decision, rec.Code, rec.Reason = audit.Deny, "invalid_arguments", err.Error()
		return f.write(rec)
	}
	af := c.AuditFields()
	rec.Method, rec.Host, rec.Path, rec.QueryNames, rec.Bucket, rec.Action, rec.Key = af.Method, af.Host, af.Path, af.QueryNames, af.Bucket, af.Action, af.Key
	d := sc.Decide(c.Request)
	if !d.Allow {
		rec.Decision, rec.Code, rec.Reason = audit.Deny, d.Code, d.Reason
		return f.write(rec)
	}
	rec.Decision, rec.Grant = audit.Allow, d.Grant
	for _, m := range f.src.Secrets {
		if m.Name == rec.Credential {
			rec.CredVersion = m.Version
		}
	}
	p, err := f.log.Begin(context.Background(), rec)
	if err != nil {
		f.t.Fatal(err)
	}
	out := rec
	out.Status, out.BytesIn, out.Duration, out.CredentialKind = 200, bytesIn, 20*time.Millisecond, tools.CredStatic
	if err := p.Finish(context.Background(), out); err != nil {
		f.t.Fatal(err)
	}
	return p.Seq()
}

func (f *fixture) write(rec audit.Record) uint64 {
	f.t.Helper()
	seq, err := f.log.Write(context.Background(), rec)
	if err != nil {
		f.t.Fatal(err)
	}
	return seq
}

func (f *fixture) session(id string, o SessionOptions) *SessionReport {
	f.t.Helper()
	rep, err := Session(context.Background(), f.src, id, o)
	if err != nil {
		f.t.Fatalf("Session(%s, %+v) = %v", id, o, err)
	}
	return rep
}

// answer returns the facts of question id, decoded from the report's JSON
// as a program reading `--json` would.
func answer[T any](t *testing.T, rep *SessionReport, id string) (string, T) {
	t.Helper()
	var zero T
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Questions []struct {
			ID     string          `json:"id"`
			Answer string          `json:"answer"`
			Facts  json.RawMessage `json:"facts"`
		} `json:"questions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, q := range doc.Questions {
		if q.ID == id {
			var f T
			if err := json.Unmarshal(q.Facts, &f); err != nil {
				t.Fatalf("facts of %s: %v", id, err)
			}
			return q.Answer, f
		}
	}
	t.Fatalf("no question %s", id)
	return "", zero
}

func yamlUnmarshal(s string, v any) error { return yaml.Unmarshal([]byte(s), v) }
