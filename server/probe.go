package server

import (
	"context"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// secretInArgs is why a session ends when a call's arguments carry a
// credential: only an agent that saw one, or is guessing one and watching
// for the redaction, sends it (invariant 9).
const secretInArgs = "the arguments of a call carried a credential, or a part of one, which an agent never holds"

// probeScrubbers returns a scrubber for the secret of every tool the
// session's scope grants, the called tool's first: a credential of any of
// them in the arguments of any call is a probe. A secret that cannot be
// read is skipped (its tool's calls fail anyway, and nothing of it can
// be echoed).
func (b *Broker) probeScrubbers(s *Session, called tools.Tool, cs *callSecrets) []*scrub.Scrubber {
	others := b.secretTools(s)
	out := make([]*scrub.Scrubber, 0, 1+len(others))
	if sc := cs.scrubber(called); sc != nil {
		out = append(out, sc)
	}
	for _, t := range others {
		if t.SecretName() == called.SecretName() {
			continue
		}
		if sc := cs.scrubber(t); sc != nil {
			out = append(out, sc)
		}
	}
	return out
}

// secretTools returns, for each secret the session's scope grants a tool
// of, the first such tool in the scope's order; built once per scope.
func (b *Broker) secretTools(s *Session) []tools.Tool {
	sc := s.Scope()
	if v, ok := b.scopeSecrets.Load(sc); ok {
		return v.([]tools.Tool)
	}
	var list []tools.Tool
	seen := map[string]bool{}
	for _, n := range sc.Tools() {
		t, ok := s.cfg.Tools[n]
		if !ok || t.SecretName() == "" || seen[t.SecretName()] {
			continue
		}
		seen[t.SecretName()] = true
		list = append(list, t)
	}
	v, _ := b.scopeSecrets.LoadOrStore(sc, list)
	return v.([]tools.Tool)
}

// argsProbe reports whether raw arguments, or the call prepared from them
// (nil before Prepare), carry a credential of any of the scrubbers.
func argsProbe(scs []*scrub.Scrubber, args []byte, call *tools.Call) bool {
	for _, sc := range scs {
		if call == nil && tools.ArgsCarrySecret(sc, args) {
			return true
		}
		if call != nil && call.CarriesSecret(sc) {
			return true
		}
	}
	return false
}

// tripOnSecret ends the session at once, with its own code and reason,
// for a call whose arguments carried a credential. Nothing went upstream;
// the record keeps the call with every credential scrubbed from it.
func (b *Broker) tripOnSecret(ctx context.Context, s *Session, rec *audit.Record, scs []*scrub.Scrubber) *Outcome {
	d := s.Trip(b.now(), policy.CodeSecretInArguments, secretInArgs)
	rec.Code, rec.Reason = d.Code, d.Reason
	for _, sc := range scs {
		scrubRecord(rec, sc)
	}
	b.log.Warn("arguments carried a credential; session ended", LogSession, s.ID(), LogTool, rec.Tool)
	return b.deny(ctx, rec, "denied: "+d.Reason)
}
