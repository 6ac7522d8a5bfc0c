// Package config reads keyhole.yaml: it validates the whole file against
// the embedded JSON Schema, hands tools: to package tools and scopes: to
// package policy (each owns the types and checks of its section), owns
// the top level and the audit: section, and reports every problem at once
// as file:line:column: key.path: message.
package config

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"go.yaml.in/yaml/v3"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools"
)

// Starter is the commented keyhole.yaml that `keyhole init` writes.
//
//go:embed starter.yaml
var Starter []byte

// Schema is the JSON Schema of keyhole.yaml, as `keyhole config schema`
// prints it.
//
//go:embed keyhole.schema.json
var Schema []byte

// maxConfigBytes caps the config file: a config is hand-written text.
const maxConfigBytes = 4 << 20

// Config is keyhole.yaml as written. The server owns the top level and the
// audit: section; tools and policy own the types of their sections.
type Config struct {
	Version int                           `yaml:"version"`
	Tools   map[string]tools.Config       `yaml:"tools"`
	Scopes  map[string]policy.ScopeConfig `yaml:"scopes"`
	Audit   Audit                         `yaml:"audit"`
}

// Audit is the audit: section of keyhole.yaml.
type Audit struct {
	Arguments string `yaml:"arguments"` // full (default) | hashed | none
	Retention string `yaml:"retention"` // Go duration or days ("90d"); "" keeps everything
	Mirror    string `yaml:"mirror"`    // optional JSON-lines copy of every record
	Anchor    string `yaml:"anchor"`    // optional file outside the data dir: every checkpoint appended
}

// Loaded is a checked and compiled configuration.
type Loaded struct {
	Path string
	// Source is the file's bytes as loaded: a session keeps them, so it
	// runs this config across reloads and restarts whatever the file says
	// later.
	Source []byte
	// Digest is the hex SHA-256 of the file as read: the config's identity
	// (an approval is bound to the config its session runs).
	Digest    string
	Config    Config
	Tools     map[string]tools.Tool
	Policy    *policy.Policy
	Retention time.Duration
}

// Error is every problem found in one config file, each located at
// file:line:column and a key path.
type Error struct {
	Path     string
	Problems []Problem
}

// Problem is one located problem of a config file.
type Problem struct {
	Line, Column int
	Key          string
	Msg          string
}

func (p Problem) format(file string) string {
	loc := file
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d:%d", file, p.Line, p.Column)
	}
	if p.Key == "" {
		return loc + ": " + p.Msg
	}
	return loc + ": " + p.Key + ": " + p.Msg
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.format(e.Path)
	}
	return strings.Join(lines, "\n")
}

// compiledSchema is the config schema, compiled once per process.
var compiledSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft2020
	if err := c.AddResource("keyhole.schema.json", bytes.NewReader(Schema)); err != nil {
		return nil, fmt.Errorf("config: config schema: %w", err)
	}
	s, err := c.Compile("keyhole.schema.json")
	if err != nil {
		return nil, fmt.Errorf("config: config schema: %w", err)
	}
	return s, nil
})

// ToolEnv is what tools take from their surroundings rather than from the
// config (a resolver, the broker's own addresses); the zero ToolEnv uses
// the system resolver.
type ToolEnv = tools.Env

// Load reads, validates and compiles the config file at path. Every
// problem is reported at once in a *Error; a config with any problem
// is not returned.
func Load(path string, env tools.Env) (*Loaded, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, env)
}

// ReadFile reads a config file's bytes, at most 4 MiB, with the errors
// Load gives.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config: no config at %s (create one with `keyhole init`, or pass --config): %w", path, err)
		}
		return nil, fmt.Errorf("config: read config: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxConfigBytes+1)); err != nil {
		return nil, fmt.Errorf("config: read config %s: %w", path, err)
	}
	if buf.Len() > maxConfigBytes {
		return nil, fmt.Errorf("config: config %s is larger than %d bytes", path, maxConfigBytes)
	}
	return buf.Bytes(), nil
}

// Parse is Load on bytes already read; path names them in errors.
func Parse(path string, data []byte, env tools.Env) (*Loaded, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{Path: path, Problems: []Problem{yamlProblem(err)}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &Error{Path: path, Problems: []Problem{{Msg: "empty config; start from `keyhole init`"}}}
	}
	root := doc.Content[0]

	value, err := nodeValue(root, 0)
	if err != nil {
		return nil, &Error{Path: path, Problems: []Problem{*err}}
	}
	schema, serr := compiledSchema()
	if serr != nil {
		return nil, serr
	}
	var problems []Problem
	var explained map[string]bool
	if verr := schema.Validate(value); verr != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(verr, &ve) {
			return nil, fmt.Errorf("config: validate config: %w", verr)
		}
		problems, explained = schemaProblems(root, ve)
	}

	var cfg Config
	if err := root.Decode(&cfg); err != nil {
		if len(problems) > 0 {
			// The schema already said why the shape is wrong.
			return nil, &Error{Path: path, Problems: problems}
		}
		return nil, &Error{Path: path, Problems: []Problem{yamlProblem(err)}}
	}
	// Semantic checks run even when the schema found problems, so a
	// person sees every problem at once; a key the schema already
	// reported is not reported twice.
	if env.Tokens == nil {
		// The tools of one config that share an OAuth 2.0 secret share
		// its tokens.
		env.Tokens = tools.NewTokens()
	}
	loaded, errs := compileConfig(cfg, env)
	problems = mergeProblems(problems, locate(root, errs), explained)
	if len(problems) > 0 {
		return nil, &Error{Path: path, Problems: problems}
	}
	loaded.Path = path
	loaded.Source = bytes.Clone(data)
	loaded.Digest = Hash(data)
	return loaded, nil
}

// Hash is the hex SHA-256 of a config file's bytes: the name of that
// version of the config.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// mergeProblems adds semantic problems whose key no schema problem covers
// and that no misspelled key explains (a tool whose credential is
// misspelled has no credential secret either: one mistake, one problem).
func mergeProblems(schema, semantic []Problem, explained map[string]bool) []Problem {
	if len(schema) == 0 {
		return semantic
	}
	covered := make(map[string]bool, len(schema))
	for _, p := range schema {
		covered[p.Key] = true
	}
	out := schema
	for _, p := range semantic {
		if !covered[p.Key] && !explainedBy(p.Key, explained) {
			out = append(out, p)
		}
	}
	return sortProblems(out)
}

// compileConfig runs each package's own checks over its section.
func compileConfig(cfg Config, env tools.Env) (*Loaded, []error) {
	var errs []error
	l := &Loaded{Config: cfg, Tools: make(map[string]tools.Tool, len(cfg.Tools))}
	infos := make(map[string]policy.ToolInfo, len(cfg.Tools))
	for _, name := range slices.Sorted(maps.Keys(cfg.Tools)) {
		t, terrs := tools.Compile(name, cfg.Tools[name], env)
		errs = append(errs, terrs...)
		if t != nil {
			l.Tools[name] = t
			infos[name] = t.Info()
		} else {
			// Still let policy check grants against the tool's kind.
			infos[name] = policy.ToolInfo{Kind: cfg.Tools[name].Kind, Method: cfg.Tools[name].Method, Path: cfg.Tools[name].Path}
		}
	}
	p, perrs := policy.Compile(cfg.Scopes, infos)
	errs = append(errs, perrs...)
	l.Policy = p
	switch cfg.Audit.Arguments {
	case "", "full", "hashed", "none":
	default:
		errs = append(errs, &policy.FieldError{Path: "audit.arguments", Msg: `must be "full", "hashed" or "none"`})
	}
	if cfg.Audit.Retention != "" {
		d, err := ParseRetention(cfg.Audit.Retention)
		if err != nil {
			errs = append(errs, &policy.FieldError{Path: "audit.retention", Msg: err.Error()})
		}
		l.Retention = d
	}
	return l, errs
}

// ParseRetention parses a retention period: a positive duration
// (ParseDuration: "720h", "90d").
func ParseRetention(s string) (time.Duration, error) {
	d, err := ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration like 720h or 90d", s)
	}
	return d, nil
}

// ParseDuration parses a duration as keyhole reads them everywhere, in
// keyhole.yaml and on the command line: a Go duration that may start
// with days ("90s", "1h30m", "7d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	d, err := policy.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write a number and a unit, e.g. 30s, 15m, 1h or 7d", s)
	}
	return d, nil
}
