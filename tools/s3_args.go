package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/keyhole-dev/keyhole/policy"
)

// s3MaxArgBytes caps the raw arguments of one s3 call.
const s3MaxArgBytes = 1 << 20

// s3MaxKeyBytes is S3's limit on the length of an object key.
const s3MaxKeyBytes = 1024

// s3ArgSchema is the argument schema of every s3 tool; %d is the tool's
// max_keys. The bucket is not an argument: it comes from the tool.
const s3ArgSchema = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["action"],
  "properties": {
    "action": {"enum": ["list", "get", "head"], "description": "list objects under a prefix, get an object's content, or head (metadata only)"},
    "prefix": {"type": "string", "maxLength": 1024, "description": "list: only keys that begin with this prefix"},
    "delimiter": {"type": "string", "minLength": 1, "maxLength": 64, "description": "list: group keys by this delimiter (usually /) into common_prefixes"},
    "max_keys": {"type": "integer", "minimum": 1, "description": "list: at most this many keys per page (capped at %d)"},
    "continuation_token": {"type": "string", "minLength": 1, "maxLength": 8192, "description": "list: next_continuation_token of the previous page"},
    "key": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "get, head: the object key"}
  },
  "if": {"properties": {"action": {"enum": ["get", "head"]}}},
  "then": {"required": ["key"]}
}`

// compileS3Schema compiles the argument schema for a tool capping list
// pages at maxKeys, and returns it with its JSON for tools/list.
func compileS3Schema(maxKeys int32) (*jsonschema.Schema, json.RawMessage, error) {
	raw := fmt.Sprintf(s3ArgSchema, maxKeys)
	schema, err := jsonschema.CompileString("keyhole:s3-arguments.json", raw)
	if err != nil {
		return nil, nil, fmt.Errorf("tools: s3 argument schema: %w", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(raw)); err != nil {
		return nil, nil, fmt.Errorf("tools: s3 argument schema: %w", err)
	}
	return schema, compact.Bytes(), nil
}

// Prepare validates the arguments against the tool's schema and turns
// them into a call: list → Request{Action: "list", Key: prefix}; get and
// head → Request{Action, Key: key}. Keys and prefixes are exact byte
// strings, never normalized; one with invalid UTF-8, a control character, a
// backslash or a "." or ".." segment is refused, since S3-compatible stores
// normalize those.
func (t *s3Tool) Prepare(args json.RawMessage) (*Call, error) {
	if len(args) > s3MaxArgBytes {
		return nil, &ArgError{Msg: "arguments are larger than 1 MiB"}
	}
	// encoding/json would turn invalid UTF-8 into U+FFFD: a key the agent
	// did not send. Refuse it instead.
	if !utf8.Valid(args) {
		return nil, &ArgError{Msg: "arguments are not valid UTF-8"}
	}
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage(`{}`)
	}
	m, err := s3DecodeArgs(args)
	if err != nil {
		return nil, &ArgError{Msg: err.Error()}
	}
	if err := t.schema.Validate(m); err != nil {
		return nil, &ArgError{Msg: s3SchemaMessage(err)}
	}
	str := func(name string) string { s, _ := m[name].(string); return s }
	action := str("action")
	sc := &s3Call{delimiter: str("delimiter"), token: str("continuation_token"), maxKeys: t.maxKeys}
	var key string
	switch action {
	case "list":
		if _, ok := m["key"]; ok {
			return nil, &ArgError{Msg: `"key" applies to get and head; list takes "prefix"`}
		}
		key = str("prefix")
		if n, ok := m["max_keys"].(json.Number); ok {
			// The schema checked it is an integer ≥ 1; anything that does
			// not fit is above the cap anyway.
			if v, err := n.Int64(); err == nil && v < int64(t.maxKeys) {
				sc.maxKeys = int32(v)
			}
		}
		if err := s3CheckKey("prefix", key); err != nil {
			return nil, err
		}
		if err := s3CheckText("delimiter", sc.delimiter); err != nil {
			return nil, err
		}
		if err := s3CheckText("continuation_token", sc.token); err != nil {
			return nil, err
		}
		at, ours, err := s3DecodeToken(sc.token)
		if err != nil {
			return nil, err
		}
		if ours {
			sc.token, sc.at = "", at
		}
	default: // get, head: the schema allows nothing else
		for _, name := range []string{"prefix", "delimiter", "max_keys", "continuation_token"} {
			if _, ok := m[name]; ok {
				return nil, &ArgError{Msg: fmt.Sprintf("%q applies to list only, not to %s", name, action)}
			}
		}
		key = str("key")
		if err := s3CheckKey("key", key); err != nil {
			return nil, err
		}
	}
	return &Call{
		Request: policy.Request{Tool: t.name, Action: action, Key: key},
		Args:    args,
		tool:    t,
		s3:      sc,
	}, nil
}

// s3DecodeArgs decodes a JSON object of arguments, refusing duplicate
// names (which decoders resolve differently) and trailing data.
func s3DecodeArgs(args []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.UseNumber()
	notObject := errors.New("arguments must be a JSON object")
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, notObject
	}
	m := make(map[string]any)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errors.New("arguments are not valid JSON")
		}
		name, _ := tok.(string)
		if _, dup := m[name]; dup {
			return nil, errors.New("an argument appears more than once")
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New("arguments are not valid JSON")
		}
		m[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, errors.New("arguments are not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("arguments hold data after the JSON object")
	}
	return m, nil
}

// s3CheckText refuses a string argument with invalid UTF-8 or a control
// character. U+FFFD counts as invalid: it is what a JSON decoder makes of
// a lone surrogate escape. The error names the argument, never its value.
func s3CheckText(name, s string) error {
	if !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) {
		return &ArgError{Msg: name + " is not valid UTF-8"}
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return &ArgError{Msg: name + " contains a control character"}
	}
	return nil
}

// s3CheckKey refuses an object key or prefix that is too long, not valid
// UTF-8, holds a control character, a backslash or a "." or ".." segment.
func s3CheckKey(name, key string) error {
	if len(key) > s3MaxKeyBytes {
		return &ArgError{Msg: fmt.Sprintf("%s is longer than %d bytes", name, s3MaxKeyBytes)}
	}
	if err := s3CheckText(name, key); err != nil {
		return err
	}
	if strings.Contains(key, `\`) {
		// Some S3-compatible stores read "\" as "/", which would walk
		// "a\..\b" out of a prefix; the http kind refuses it in paths too.
		return &ArgError{Msg: name + " contains a backslash, which S3-compatible stores may read as \"/\"; name the key exactly"}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "." || seg == ".." {
			return &ArgError{Msg: name + ` has a "." or ".." segment, which S3-compatible stores normalize; name the key exactly`}
		}
	}
	return nil
}

// s3SchemaMessage renders a schema validation error for the agent: where
// and what, one line per failed check, with values that came from the
// agent reduced to printable characters and kept short.
func s3SchemaMessage(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return "arguments do not match the tool's schema"
	}
	var lines []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := e.InstanceLocation
			if loc == "" {
				loc = "arguments"
			}
			lines = append(lines, s3Printable(loc+": "+e.Message, 200))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	if len(lines) > 5 {
		lines = append(lines[:5], fmt.Sprintf("and %d more", len(lines)-5))
	}
	return "invalid arguments: " + strings.Join(lines, "; ")
}

// s3Printable replaces non-printable runes with '?' and cuts s to max
// bytes.
func s3Printable(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}
