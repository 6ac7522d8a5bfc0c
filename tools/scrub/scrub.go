// Package scrub keeps every part of a secret out of bytes that leave the
// broker: what an upstream returned on its way to an agent, a log or the
// audit, and (with Contains) what an agent sends.
//
// A Scrubber matches the literal forms of its secrets — raw, base64 (both
// alphabets, padded or not, at every alignment inside a larger base64
// stream), hex (any case, with or without separators), URL-encoded,
// JSON-escaped and UTF-16 — and any part of one at least min(8, half the
// form) bytes long, and replaces each with Redacted. It then looks at the
// body as a client would decode it (JSON escapes, percent-encoding, HTML
// entities, lines joined); a form found only there cannot be mapped back to
// exact bytes, so the whole input is withheld instead.
package scrub

import (
	"bytes"
	"slices"
	"strings"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"
)

// Redacted replaces every form of a secret.
const Redacted = "[REDACTED]"

// WithheldNote says why a body was withheld: a form of a secret was found
// in a decoded view of it.
const WithheldNote = "a credential was found in an encoded form; the response was withheld"

// Outcome says what Scrub did to its input.
type Outcome uint8

const (
	// Clean: nothing of a secret was found; the input is returned as it is.
	Clean Outcome = iota
	// Replaced: every form (or long part of one) found was replaced by
	// Redacted in place.
	Replaced
	// Withheld: a form was found that cannot be replaced in place (in a
	// decoded view of the input); the output is Redacted alone.
	Withheld
)

func (o Outcome) String() string {
	switch o {
	case Clean:
		return "clean"
	case Replaced:
		return "replaced"
	case Withheld:
		return "withheld"
	}
	return "unknown"
}

// Scrubber finds and removes every form of its secrets. It is immutable
// after New (until Wipe) and safe for concurrent use; build one per call or
// per secret version and pass it around.
type Scrubber struct {
	m        *matcher
	patterns int
	// touchesMarker is set when some part of a form can overlap Redacted
	// itself, so replacing one occurrence can form another across the
	// marker's edge.
	touchesMarker bool
	// wiped is set by Wipe: the Scrubber no longer knows its secrets and
	// fails closed.
	wiped atomic.Bool
}

// New builds a Scrubber for the given secret values; empty values are
// ignored. Basic-auth credentials are covered when the caller passes
// "user:password" as one secret (and the password alone as another).
func New(secrets ...[]byte) *Scrubber {
	type key struct {
		s    string
		fold bool
	}
	var fs []form
	seen := map[key]bool{}
	for _, secret := range secrets {
		for _, f := range formsOf(secret) {
			if seen[key{string(f.b), f.fold}] {
				continue
			}
			seen[key{string(f.b), f.fold}] = true
			fs = append(fs, f)
		}
	}
	s := &Scrubber{m: newMatcher(fs), patterns: len(fs)}
	for _, f := range fs {
		s.touchesMarker = s.touchesMarker || touchesMarker(f, s.m.g)
	}
	return s
}

// Wipe zeroes what the Scrubber holds of its secrets — every form, and the
// filters built from them — as far as Go allows, for a cache that drops a
// secret. Strings New made on the way are not reachable and cannot be
// zeroed. A wiped Scrubber fails closed: Scrub withholds every input and
// Contains reports every input. Wipe must not run while another goroutine
// uses the Scrubber; a second Wipe does nothing.
func (s *Scrubber) Wipe() {
	if s.wiped.Swap(true) {
		return
	}
	m := s.m
	for i := range m.forms {
		clear(m.forms[i].b)
	}
	clear(m.qbits)
	clear(m.gbits)
	clear(m.pairs[:])
	clear(m.foldPairs[:])
	clear(m.interesting[:])
}

// Patterns returns the number of distinct literal forms matched.
func (s *Scrubber) Patterns() int { return s.patterns }

// Margin is how many bytes past a cut a reader should keep so that a form
// the cut falls into is whole when scrubbed (see Capped).
func (s *Scrubber) Margin() int { return 2*s.m.maxLen + 32 }

// Scrub returns b with every form of every secret, and every part of a form
// at least min(8, half the form) bytes long, replaced by Redacted, and what
// it did. Overlapping and adjacent matches become one Redacted, so no part
// of a form stands next to the marker; a match is widened to whole UTF-8
// characters. When a form is found only in a decoded view of b (JSON
// escapes, percent-encoding, HTML entities, base64 or hex split across
// lines), the output is Redacted alone and the Outcome Withheld. With
// Clean, it returns b itself, not a copy. It is idempotent and treats b as
// opaque bytes, so invalid UTF-8 is fine.
func (s *Scrubber) Scrub(b []byte) ([]byte, Outcome) {
	if s.wiped.Load() {
		return []byte(Redacted), Withheld
	}
	out, replaced, withheld := s.literal(b)
	if withheld || s.encoded(out, 0) {
		return []byte(Redacted), Withheld
	}
	if replaced {
		return out, Replaced
	}
	return b, Clean
}

// Bytes is Scrub reporting only whether anything was found: a withheld
// input comes back as Redacted alone.
func (s *Scrubber) Bytes(b []byte) ([]byte, bool) {
	out, o := s.Scrub(b)
	return out, o != Clean
}

// String is Bytes for strings: it returns str itself when nothing matched.
func (s *Scrubber) String(str string) (string, bool) {
	out, ok := s.Bytes(readOnly(str))
	if !ok {
		return str, false
	}
	return string(out), true
}

// ContainsString is Contains for strings.
func (s *Scrubber) ContainsString(str string) bool { return s.Contains(readOnly(str)) }

// readOnly returns the bytes of str without copying them, for the
// scrubber's own reads: Scrub, Bytes and Contains never write to their
// input (a changed input is always a new slice), and String copies any
// result before it leaves.
func readOnly(str string) []byte { return unsafe.Slice(unsafe.StringData(str), len(str)) }

// Contains reports whether b holds any form of a secret, or a part of one
// that Scrub would redact, literally or in a decoded view. It is the check
// for what an agent sends: arguments that carry a credential mean the agent
// has seen one, or is guessing one and watching for the redaction.
func (s *Scrubber) Contains(b []byte) bool {
	if s.wiped.Load() {
		return true
	}
	return len(s.m.find(b, nil, true)) > 0 || s.encoded(b, 0)
}

// Capped scrubs a body of which at most max bytes may be returned. b is
// what was read: at least max+Margin() bytes when more says the body goes
// on past b. The scrub runs on all of b before the cut, so a form the cut
// falls into is redacted whole (no prefix of it is left), and the last
// Margin() bytes of a b that was itself cut short are dropped, since a form
// may begin there. It returns the scrubbed body (nil when withheld), whether
// it was cut, and the Outcome.
func (s *Scrubber) Capped(b []byte, max int, more bool) ([]byte, bool, Outcome) {
	out, o := s.Scrub(b)
	if o == Withheld {
		return nil, more || len(b) > max, o
	}
	if more {
		out = Cut(out, len(out)-s.Margin())
	}
	cut := more || len(out) > max
	return Cut(out, max), cut, o
}

// Cut returns b cut to at most n bytes, never inside a Redacted marker
// (the cut moves to the marker's start) or inside a UTF-8 character.
func Cut(b []byte, n int) []byte {
	if n >= len(b) {
		return b
	}
	n = max(n, 0)
	lo := max(0, n-len(Redacted)+1)
	if i := bytes.Index(b[lo:min(len(b), n+len(Redacted)-1)], []byte(Redacted)); i >= 0 && lo+i < n {
		n = lo + i
	}
	for i := n; i > 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if i < n && !utf8.FullRune(b[i:n]) {
				n = i
			}
			break
		}
	}
	return b[:n]
}

// maxRounds bounds the replacement rounds for secrets that can overlap
// Redacted; real bodies need one or two.
const maxRounds = 8

// literal replaces every match of a literal form. withheld says a chain of
// matches across marker edges did not end within maxRounds.
func (s *Scrubber) literal(b []byte) (out []byte, replaced, withheld bool) {
	spans := s.m.find(b, nil, false)
	if len(spans) == 0 {
		return b, false, false
	}
	if !s.touchesMarker {
		return replace(b, spans, nil), true, false
	}
	// Some part of a form can overlap the marker, so a replacement can
	// complete a match across the marker's edge: repeat until nothing
	// outside markers matches. Every round turns at least one byte that is
	// not part of a marker into marker, so this ends; but a body built as a
	// chain of such matches would need a round per link, so past maxRounds
	// the whole body is withheld (fail closed, in linear time).
	for round := 0; ; round++ {
		slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
		markers := markerRuns(b)
		spans = outside(spans, markers)
		if len(spans) == 0 {
			return b, round > 0, false
		}
		if round == maxRounds {
			return nil, true, true
		}
		b = replace(b, spans, markers)
		spans = s.m.find(b, spans[:0], false)
	}
}

// span is the half-open byte range [start, end) of b.
type span struct{ start, end int }

// replace returns a copy of b in which each maximal group of overlapping or
// adjacent spans, together with the markers it touches, is one Redacted.
// A group is widened to whole UTF-8 characters. Groups of markers alone are
// copied as they are.
func replace(b []byte, spans, markers []span) []byte {
	type item struct {
		span
		marker bool
	}
	items := make([]item, 0, len(spans)+len(markers))
	for _, sp := range spans {
		items = append(items, item{runeBounds(b, sp), false})
	}
	for _, m := range markers {
		items = append(items, item{m, true})
	}
	slices.SortFunc(items, func(a, b item) int { return a.start - b.start })

	out := make([]byte, 0, len(b))
	last := 0
	for i := 0; i < len(items); {
		g, redact := items[i].span, !items[i].marker
		for i++; i < len(items) && items[i].start <= g.end; i++ {
			g.end = max(g.end, items[i].end)
			redact = redact || !items[i].marker
		}
		g.start = max(g.start, last)
		out = append(out, b[last:g.start]...)
		if redact {
			out = append(out, Redacted...)
		} else {
			out = append(out, b[g.start:g.end]...)
		}
		last = g.end
	}
	return append(out, b[last:]...)
}

// runeBounds widens sp so it neither starts nor ends inside a UTF-8
// character of b, so a redaction keeps valid text valid.
func runeBounds(b []byte, sp span) span {
	for i := 0; i < utf8.UTFMax-1 && sp.start > 0 && sp.start < len(b) && !utf8.RuneStart(b[sp.start]); i++ {
		sp.start--
	}
	for i := 0; i < utf8.UTFMax-1 && sp.end < len(b) && !utf8.RuneStart(b[sp.end]); i++ {
		sp.end++
	}
	return sp
}

// markerRuns returns the runs of adjacent Redacted markers in b, in order.
func markerRuns(b []byte) []span {
	var runs []span
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(Redacted))
		if j < 0 {
			return runs
		}
		m := span{i + j, i + j + len(Redacted)}
		if n := len(runs); n > 0 && runs[n-1].end == m.start {
			runs[n-1].end = m.end
		} else {
			runs = append(runs, m)
		}
		i = m.end
	}
}

// outside returns the spans that are not wholly inside one of runs; both
// are in order of start.
func outside(spans, runs []span) []span {
	out := spans[:0]
	j := 0
	for _, sp := range spans {
		for j < len(runs) && runs[j].end <= sp.start {
			j++
		}
		if j < len(runs) && runs[j].start <= sp.start && sp.end <= runs[j].end {
			continue
		}
		out = append(out, sp)
	}
	return out
}

// touchesMarker reports whether a part of f of g or more bytes can share a
// byte with Redacted: it must hold one of its brackets, or lie wholly in
// "REDACTED".
func touchesMarker(f form, g int) bool {
	if bytes.ContainsAny(f.b, "[]") {
		return true
	}
	inner := Redacted[1 : len(Redacted)-1]
	if f.fold {
		inner = strings.ToLower(inner)
	}
	for i := 0; i+g <= len(inner); i++ {
		if bytes.Contains(f.b, []byte(inner[i:i+g])) {
			return true
		}
	}
	return false
}
