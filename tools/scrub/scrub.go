// Package scrub removes every cheaply checkable form of a secret from bytes:
// raw, base64 (both alphabets, padded or not, at every alignment inside a
// larger base64 stream), hex, URL-encoded and JSON-escaped. It is the last
// step before anything an upstream returned reaches an agent, a log or the
// audit.
package scrub

import (
	"bytes"
	"slices"
)

// Redacted replaces every form of a secret.
const Redacted = "[REDACTED]"

// Scrubber replaces every encoded form of its secrets with Redacted. It is
// immutable after New and safe for concurrent use; build one per call or
// per tool.
type Scrubber struct {
	patterns int
	// filter has bit h set when some pattern of two or more bytes starts
	// with the byte pair h (first byte high). Scanning tests it at every
	// position and looks further only on a hit.
	filter [1 << 16 / 64]uint64
	// byPair holds the patterns of two or more bytes by their first two
	// bytes, longest first, so the first one that matches is the longest.
	byPair map[uint16][][]byte
	// single marks one-byte patterns (a one-byte raw secret).
	single    [256]bool
	hasSingle bool
	// touchesMarker is set when some pattern can overlap Redacted itself,
	// so replacing one occurrence can form another across the marker's edge.
	touchesMarker bool
}

// New builds a Scrubber for the given secret values; empty values are
// ignored. For each secret it precomputes the raw value and every distinct
// derived form of at least four bytes:
//   - base64, standard and URL alphabets, padded and unpadded, at the three
//     alignments a secret can have inside a larger base64 stream (encoded
//     behind 0, 1 or 2 filler bytes, keeping only the characters the secret
//     fully determines, and the forms it takes at the end of a stream);
//   - hex, lower and upper case;
//   - URL-encoded as url.QueryEscape and url.PathEscape produce it and with
//     every byte percent-encoded, each with upper- and lower-case hex;
//   - JSON string contents: encoding/json's form, the form without HTML
//     escaping (also with "\/"), every escapable byte as \u00XX (lower and
//     upper hex), and every character \u-escaped.
//
// Basic-auth credentials are covered when the caller passes "user:password"
// as one secret.
func New(secrets ...[]byte) *Scrubber {
	s := &Scrubber{byPair: make(map[uint16][][]byte)}
	seen := make(map[string]bool)
	for _, secret := range secrets {
		for _, p := range forms(secret) {
			if seen[string(p)] {
				continue
			}
			seen[string(p)] = true
			s.patterns++
			if overlapsMarker(p) {
				s.touchesMarker = true
			}
			if len(p) == 1 {
				s.single[p[0]], s.hasSingle = true, true
				continue
			}
			h := pair(p[0], p[1])
			s.filter[h>>6] |= 1 << (h & 63)
			s.byPair[h] = append(s.byPair[h], p)
		}
	}
	for _, ps := range s.byPair {
		slices.SortStableFunc(ps, func(a, b []byte) int { return len(b) - len(a) })
	}
	return s
}

// Patterns returns the number of distinct precomputed patterns.
func (s *Scrubber) Patterns() int { return s.patterns }

// Bytes returns b with every occurrence of every pattern replaced by
// Redacted, and whether anything was replaced. Overlapping and adjacent
// occurrences become one Redacted, so no part of an encoded form is left
// standing next to the marker. It returns b itself, not a copy, when nothing
// matched. It is idempotent (Bytes of its own output changes nothing) and
// treats b as opaque bytes, so invalid UTF-8 is fine.
func (s *Scrubber) Bytes(b []byte) ([]byte, bool) {
	if at, _ := s.next(b, 0); at < 0 {
		return b, false
	}
	if !s.touchesMarker {
		return s.replace(b, s.spans(b), nil), true
	}
	// Some pattern can overlap the marker, so a replacement can complete an
	// occurrence across the marker's edge: repeat until nothing outside
	// markers matches. Every round turns at least one byte that is not part
	// of a marker into marker, so this ends; but a body built as a chain of
	// such occurrences would need a round per link, so past maxRounds the
	// whole body is withheld (fail closed, in linear time).
	changed := false
	for round := 0; ; round++ {
		markers := markerRuns(b)
		spans := outside(s.spans(b), markers)
		if len(spans) == 0 {
			return b, changed
		}
		if round == maxRounds {
			return []byte(Redacted), true
		}
		b, changed = s.replace(b, spans, markers), true
	}
}

// maxRounds bounds the replacement rounds Bytes makes for secrets that can
// overlap Redacted; real bodies need one or two.
const maxRounds = 8

// String is Bytes for strings: it returns str itself when nothing matched.
func (s *Scrubber) String(str string) (string, bool) {
	out, ok := s.Bytes([]byte(str))
	if !ok {
		return str, false
	}
	return string(out), true
}

func pair(a, b byte) uint16 { return uint16(a)<<8 | uint16(b) }

// next returns the first position at or after i where a pattern starts, and
// the length of the longest pattern there, or -1.
func (s *Scrubber) next(b []byte, i int) (at, n int) {
	if i < 0 {
		i = 0
	}
	for ; i+1 < len(b); i++ {
		h := pair(b[i], b[i+1])
		if s.filter[h>>6]&(1<<(h&63)) != 0 {
			for _, p := range s.byPair[h] {
				if bytes.HasPrefix(b[i:], p) {
					return i, len(p)
				}
			}
		}
		if s.hasSingle && s.single[b[i]] {
			return i, 1
		}
	}
	if i < len(b) && s.hasSingle && s.single[b[i]] {
		return i, 1
	}
	return -1, 0
}

// span is the half-open byte range [start, end) of b.
type span struct{ start, end int }

// spans returns, for every position of b where a pattern starts, the range
// of the longest pattern there, in order of start.
func (s *Scrubber) spans(b []byte) []span {
	var out []span
	for i := 0; ; {
		at, n := s.next(b, i)
		if at < 0 {
			return out
		}
		out = append(out, span{at, at + n})
		i = at + 1
	}
}

// replace returns a copy of b in which each maximal group of overlapping or
// adjacent spans, together with the markers it touches, is one Redacted.
// Groups of markers alone are copied as they are.
func (s *Scrubber) replace(b []byte, spans, markers []span) []byte {
	type item struct {
		span
		marker bool
	}
	items := make([]item, 0, len(spans)+len(markers))
	for _, sp := range spans {
		items = append(items, item{sp, false})
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

// overlapsMarker reports whether p, placed somewhere next to or over
// Redacted, can share at least one byte with it (agreeing on every shared
// byte).
func overlapsMarker(p []byte) bool {
	const m = Redacted
	for d := -(len(p) - 1); d < len(m); d++ { // p starts at offset d of m
		lo, hi := max(0, d), min(len(m), d+len(p))
		if string(p[lo-d:hi-d]) == m[lo:hi] {
			return true
		}
	}
	return false
}
