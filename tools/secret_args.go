package tools

import (
	"strings"

	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// ArgsCarrySecret reports whether raw arguments, as an agent sent them,
// hold any form of a secret of sc, or a part of one that a response would
// have redacted (eight characters of a token, literal or in an encoding a
// client decodes). Only an agent that has seen the credential, or is
// guessing it and watching for the redaction, sends one: the caller
// refuses such a call before anything goes upstream and ends the session
// (invariant 9). It works on arguments that do not even parse, so call it
// before Prepare.
func ArgsCarrySecret(sc *scrub.Scrubber, args []byte) bool {
	return sc.Contains(args)
}

// CarriesSecret reports whether the prepared call holds a secret of sc, or
// a part of one, in the values that would go upstream: path segments (each
// decoded, and the path as a whole), query names and values (decoded, and
// as encoded on the wire), header names and values, the body, and the s3
// key, prefix, delimiter and continuation token — besides the raw
// arguments. A decoding that Prepare does (one percent-decoding of the
// path, JSON re-encoding of a body object) cannot hide a credential from
// it.
func (c *Call) CarriesSecret(sc *scrub.Scrubber) bool {
	has := func(vals ...string) bool {
		for _, v := range vals {
			if v != "" && sc.ContainsString(v) {
				return true
			}
		}
		return false
	}
	if sc.Contains(c.Args) || has(c.Request.Key, "/"+strings.Join(c.Request.Segments, "/")) || has(c.Request.Segments...) {
		return true
	}
	if h := c.http; h != nil {
		if has(h.query.Encode()) || sc.Contains(h.body) {
			return true
		}
		for k, vs := range h.query {
			if has(k) || has(vs...) {
				return true
			}
		}
		for k, vs := range h.header {
			if has(k) || has(vs...) {
				return true
			}
		}
	}
	if s := c.s3; s != nil && has(s.delimiter, s.token) {
		return true
	}
	return false
}
