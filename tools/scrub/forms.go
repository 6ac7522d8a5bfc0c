package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// minDerived is the shortest derived (encoded) form worth matching; shorter
// ones would redact ordinary text. The raw secret is always matched.
const minDerived = 4

// maxPart is the longest part of a form that may stand unredacted, plus one:
// a run of maxPart or more bytes of a form is redacted wherever it appears.
// Secrets are high-entropy, so eight of their characters in a row are not
// chance.
const maxPart = 8

// form is one literal form of a secret as it may appear in a body.
type form struct {
	// b is the form; lower-case when fold is set.
	b []byte
	// k is the shortest run of b that is redacted: min(8, half of b) for
	// most forms, so a cut or a partial echo leaves at most seven of its
	// characters standing. Separators in hex forms and the second byte of
	// UTF-16 code units do not count (see formsOf).
	k int
	// fold says b is matched ASCII-case-insensitively: hex digits, and
	// the hex digits of percent and \u escapes, may come in any case.
	fold bool
	// sep, when set, is the separator between the bytes of a hex form; it
	// does not count toward k.
	sep byte
	// unit, when set, starts each escape of a form that escapes every
	// character ('%' or a backslash): k counts escapes, not bytes, since
	// the eight bytes `\u0053\u` are one character of the secret, and chance.
	unit byte
}

// weight is how much of f the run f.b[i:j] holds, in the units of k.
func (f *form) weight(i, j int) int {
	switch {
	case f.unit != 0:
		return bytes.Count(f.b[i:j], []byte{f.unit})
	case f.sep != 0:
		return j - i - bytes.Count(f.b[i:j], []byte{f.sep})
	}
	return j - i
}

// partK is min(8, half of n rounded up): the shortest part of an n-byte
// form that is redacted.
func partK(n int) int { return min(maxPart, (n+1)/2) }

// forms returns the bytes of every form of secret a Scrubber matches, the
// raw value first. It returns nil for an empty secret. Tests use it to see
// exactly what is covered.
func forms(secret []byte) [][]byte {
	fs := formsOf(secret)
	out := make([][]byte, len(fs))
	for i, f := range fs {
		out[i] = f.b
	}
	return out
}

// formsOf returns every literal form of secret with the shortest part of it
// that is redacted:
//   - the raw value;
//   - base64, standard and URL alphabets, padded and unpadded, at the three
//     alignments a secret can have inside a larger base64 stream;
//   - hex in any case, plain and with ":", " " or "-" between bytes (a
//     part must hold eight hex digits; separators do not count);
//   - URL-encoded as url.QueryEscape and url.PathEscape produce it (upper-
//     and lower-case hex) and with every byte percent-encoded (any case; a
//     part must hold eight escapes);
//   - JSON string contents: encoding/json's form, the form without HTML
//     escaping (also with "\/"), every escapable byte as \u00XX, and every
//     character \u-escaped (any case; a part must hold eight escapes);
//   - UTF-16, little- and big-endian (a part must hold eight characters).
//
// Derived forms shorter than four bytes are left out.
func formsOf(secret []byte) []form {
	if len(secret) == 0 {
		return nil
	}
	type key struct {
		s    string
		fold bool
	}
	seen := map[key]bool{{string(secret), false}: true}
	out := []form{{b: bytes.Clone(secret), k: partK(len(secret))}}
	add := func(s string, k int, fold bool) {
		if fold {
			s = strings.ToLower(s)
		}
		if len(s) < minDerived || seen[key{s, fold}] {
			return
		}
		seen[key{s, fold}] = true
		out = append(out, form{b: []byte(s), k: min(k, len(s)), fold: fold})
	}
	addSeparated := func(s string, k int, sep byte) {
		if !seen[key{s, true}] {
			seen[key{s, true}] = true
			out = append(out, form{b: []byte(s), k: k, fold: true, sep: sep})
		}
	}
	for _, f := range base64Forms(secret) {
		add(f, partK(len(f)), false)
	}
	h := hex.EncodeToString(secret)
	hk := partK(len(h))
	add(h, hk, true)
	if len(secret) > 1 {
		// k counts the hex digits of a part, not its separators.
		for _, sep := range []byte{':', ' ', '-'} {
			addSeparated(hexSeparated(secret, string(sep)), hk, sep)
		}
	}
	for _, f := range percentForms(secret) {
		add(f, partK(len(f)), false)
		add(lowerPercent(f), partK(len(f)), false)
	}
	addEscaped := func(s string, k int, unit byte) {
		s = strings.ToLower(s)
		if !seen[key{s, true}] {
			seen[key{s, true}] = true
			out = append(out, form{b: []byte(s), k: k, fold: true, unit: unit})
		}
	}
	addEscaped(everyBytePercent(secret), partK(len(secret)), '%')
	for _, f := range jsonForms(secret) {
		add(f, partK(len(f)), false)
	}
	if all := everyCharJSON(secret); all != "" {
		addEscaped(all, partK(strings.Count(all, `\`)), '\\')
	}
	for _, f := range utf16Forms(secret) {
		// Counted in characters, like the raw value: two bytes a unit.
		add(f, 2*partK(len(f)/2), false)
	}
	return out
}

// base64Forms returns the base64 forms of s in the standard and URL
// alphabets at the three alignments s can have inside a larger base64
// stream. For alignment k the secret is encoded behind k filler bytes and
// only characters fully determined by s are kept (the GitHub Actions masking
// technique); the forms s takes at the end of a stream (with the final,
// partly zero-filled character, padded and unpadded) are kept too.
func base64Forms(s []byte) []string {
	var out []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k := 0; k < 3; k++ {
			buf := make([]byte, k+len(s))
			copy(buf[k:], s)
			padded := enc.EncodeToString(buf)
			first := (8*k + 5) / 6      // first character with no filler bits
			end := 8 * (k + len(s)) / 6 // characters fully determined by the input
			if end > first {
				out = append(out, padded[first:end])
			}
			out = append(out, strings.TrimRight(padded, "=")[first:], padded[first:])
		}
	}
	return out
}

// hexSeparated returns s in hex with sep between bytes.
func hexSeparated(s []byte, sep string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(hex.EncodeToString([]byte{c}))
	}
	return b.String()
}

// percentForms returns s URL-encoded as url.QueryEscape and url.PathEscape
// do; both with upper-case hex.
func percentForms(s []byte) []string {
	return []string{url.QueryEscape(string(s)), url.PathEscape(string(s))}
}

// everyBytePercent returns s with every byte percent-encoded.
func everyBytePercent(s []byte) string {
	var all strings.Builder
	for _, c := range s {
		all.WriteByte('%')
		all.WriteString(hex.EncodeToString([]byte{c}))
	}
	return all.String()
}

// lowerPercent returns s with the two hex digits after every '%' in lower case.
func lowerPercent(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerASCII(b[i+1]), lowerASCII(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// jsonForms returns s as it appears inside a JSON string (without quotes):
// encoding/json's form (which escapes <, > and &), the form of encoders that
// do not escape HTML, that form with "/" escaped as "\/", and the control
// bytes and "\<>& (and also /') written as \u00xx (lower and upper hex).
func jsonForms(s []byte) []string {
	var out []string
	if m, err := json.Marshal(string(s)); err == nil {
		out = append(out, string(m[1:len(m)-1]))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(string(s)); err == nil {
		plain := strings.TrimSuffix(buf.String(), "\n")
		plain = plain[1 : len(plain)-1]
		out = append(out, plain, strings.ReplaceAll(plain, "/", `\/`))
	}
	// Encoders differ on whether "/" and "'" are escaped too.
	for _, escaped := range []string{`"\<>&`, `"\<>&/'`} {
		var lower, upper strings.Builder
		for _, c := range s {
			if c < 0x20 || strings.IndexByte(escaped, c) >= 0 {
				lower.WriteString(`\u00` + hex.EncodeToString([]byte{c}))
				upper.WriteString(`\u00` + strings.ToUpper(hex.EncodeToString([]byte{c})))
				continue
			}
			lower.WriteByte(c)
			upper.WriteByte(c)
		}
		out = append(out, lower.String(), upper.String())
	}
	return out
}

// everyCharJSON returns s with every character \u-escaped (surrogate pairs
// beyond the BMP), or "" when s is not UTF-8.
func everyCharJSON(s []byte) string {
	if !utf8.Valid(s) {
		return ""
	}
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(string(s))) {
		b.WriteString(`\u` + hex.EncodeToString([]byte{byte(u >> 8), byte(u)}))
	}
	return b.String()
}

// utf16Forms returns s in UTF-16LE and UTF-16BE, or nil when s is not UTF-8.
func utf16Forms(s []byte) []string {
	if !utf8.Valid(s) {
		return nil
	}
	units := utf16.Encode([]rune(string(s)))
	le := make([]byte, 0, 2*len(units))
	be := make([]byte, 0, 2*len(units))
	for _, u := range units {
		le = binary.LittleEndian.AppendUint16(le, u)
		be = binary.BigEndian.AppendUint16(be, u)
	}
	return []string{string(le), string(be)}
}
