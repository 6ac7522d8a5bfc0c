package tools

import (
	"encoding/json"
)

// httpDecodeJSON decodes arguments into maps, slices, strings,
// json.Number, bools and nil, refusing nesting deeper than httpMaxDepth, a
// key repeated in one object, and trailing data. Map keys are kept exactly
// as sent. Problems are found in the order they appear in data, each with
// its own message.
//
// It is a single pass over data that allocates only what it returns, where
// encoding/json's Decoder.Token allocates for every token (it was a tenth
// of a call's allocations). Strings with escapes or bytes outside printable
// ASCII are decoded by encoding/json itself, so every string is exactly
// what it would have made of it; TestDecodeJSONMatchesDecoder checks the
// whole against a Decoder.Token decoder.
func httpDecodeJSON(data []byte) (any, error) {
	p := jsonArgs{data: data}
	p.space()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i < len(p.data) {
		return nil, httpArgErr("arguments: unexpected data after the JSON value")
	}
	return v, nil
}

var (
	errArgsNotJSON = httpArgErr("arguments: not valid JSON")
	errArgsDeep    = httpArgErr("arguments: nested deeper than 64 levels")
	errArgsRepeat  = httpArgErr("arguments: an object repeats a key")
)

// jsonArgs is the state of httpDecodeJSON: data and the offset reached.
type jsonArgs struct {
	data []byte
	i    int
}

func (p *jsonArgs) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value decodes the value at p.i, inside depth containers.
func (p *jsonArgs) value(depth int) (any, error) {
	if p.i >= len(p.data) {
		return nil, errArgsNotJSON
	}
	switch c := p.data[p.i]; {
	case c == '{':
		if depth >= httpMaxDepth {
			return nil, errArgsDeep
		}
		return p.object(depth)
	case c == '[':
		if depth >= httpMaxDepth {
			return nil, errArgsDeep
		}
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return s, nil
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	}
	return nil, errArgsNotJSON
}

func (p *jsonArgs) literal(lit string) error {
	if len(p.data)-p.i < len(lit) || string(p.data[p.i:p.i+len(lit)]) != lit {
		return errArgsNotJSON
	}
	p.i += len(lit)
	return nil
}

func (p *jsonArgs) object(depth int) (any, error) {
	p.i++ // {
	m := map[string]any{}
	p.space()
	if p.i < len(p.data) && p.data[p.i] == '}' {
		p.i++
		return m, nil
	}
	for {
		if p.i >= len(p.data) || p.data[p.i] != '"' {
			return nil, errArgsNotJSON
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, errArgsRepeat
		}
		p.space()
		if p.i >= len(p.data) || p.data[p.i] != ':' {
			return nil, errArgsNotJSON
		}
		p.i++
		p.space()
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		m[k] = v
		p.space()
		if p.i >= len(p.data) {
			return nil, errArgsNotJSON
		}
		switch p.data[p.i] {
		case ',':
			p.i++
			p.space()
		case '}':
			p.i++
			return m, nil
		default:
			return nil, errArgsNotJSON
		}
	}
}

func (p *jsonArgs) array(depth int) (any, error) {
	p.i++ // [
	a := []any{}
	p.space()
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		return a, nil
	}
	for {
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		p.space()
		if p.i >= len(p.data) {
			return nil, errArgsNotJSON
		}
		switch p.data[p.i] {
		case ',':
			p.i++
			p.space()
		case ']':
			p.i++
			return a, nil
		default:
			return nil, errArgsNotJSON
		}
	}
}

// str decodes the string at p.i (its opening quote).
func (p *jsonArgs) str() (string, error) {
	start := p.i
	p.i++
	plain := true // printable ASCII, no escape: the bytes are the value
	for ; p.i < len(p.data); p.i++ {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			raw := p.data[start:p.i]
			if plain {
				return knownString(raw[1 : len(raw)-1]), nil
			}
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return "", errArgsNotJSON
			}
			return s, nil
		case c == '\\':
			plain = false
			p.i++ // the escaped byte; encoding/json checks the escape
		case c < 0x20:
			return "", errArgsNotJSON
		case c >= 0x7f:
			plain = false
		}
	}
	return "", errArgsNotJSON
}

// knownString returns the argument names and methods every call of a
// generic http tool sends without allocating, and any other b as a new
// string.
func knownString(b []byte) string {
	switch string(b) {
	case "method":
		return "method"
	case "path":
		return "path"
	case "query":
		return "query"
	case "headers":
		return "headers"
	case "body":
		return "body"
	case "GET":
		return "GET"
	case "HEAD":
		return "HEAD"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "PATCH":
		return "PATCH"
	case "DELETE":
		return "DELETE"
	case "OPTIONS":
		return "OPTIONS"
	}
	return string(b)
}

// number decodes the number at p.i as a json.Number of its exact text,
// checking RFC 8259's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *jsonArgs) number() (any, error) {
	start := p.i
	d := p.data
	if p.i < len(d) && d[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(d) && d[p.i] == '0':
		p.i++
	case p.i < len(d) && d[p.i] >= '1' && d[p.i] <= '9':
		p.digits()
	default:
		return nil, errArgsNotJSON
	}
	if p.i < len(d) && d[p.i] == '.' {
		p.i++
		if !p.digits() {
			return nil, errArgsNotJSON
		}
	}
	if p.i < len(d) && (d[p.i] == 'e' || d[p.i] == 'E') {
		p.i++
		if p.i < len(d) && (d[p.i] == '+' || d[p.i] == '-') {
			p.i++
		}
		if !p.digits() {
			return nil, errArgsNotJSON
		}
	}
	return json.Number(d[start:p.i]), nil
}

// digits skips a run of digits and reports whether there was one.
func (p *jsonArgs) digits() bool {
	start := p.i
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}
