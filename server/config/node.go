package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"go.yaml.in/yaml/v3"

	"github.com/keyhole-dev/keyhole/policy"
)

// maxConfigDepth bounds nesting in the config (and alias expansion).
const maxConfigDepth = 64

var yamlLine = regexp.MustCompile(`^yaml: (?:unmarshal errors:\n\s*)?line (\d+): (.*)$`)

// yamlProblem turns a yaml.v3 error into a located problem.
func yamlProblem(err error) Problem {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Line: line, Column: 1, Msg: m[2]}
	}
	return Problem{Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// nodeValue converts a YAML node into the JSON data model the schema
// validator takes. Mapping keys must be strings; anchors are expanded up to
// maxConfigDepth.
func nodeValue(n *yaml.Node, depth int) (any, *Problem) {
	if depth > maxConfigDepth {
		return nil, &Problem{Line: n.Line, Column: n.Column, Msg: "nested too deeply"}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return nodeValue(n.Content[0], depth+1)
	case yaml.AliasNode:
		return nodeValue(n.Alias, depth+1)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!int" && k.Tag != "!!bool") {
				return nil, &Problem{Line: k.Line, Column: k.Column, Msg: "keys must be plain strings"}
			}
			if _, dup := m[k.Value]; dup {
				return nil, &Problem{Line: k.Line, Column: k.Column, Key: k.Value, Msg: "key appears twice"}
			}
			val, err := nodeValue(v, depth+1)
			if err != nil {
				return nil, err
			}
			m[k.Value] = val
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			val, err := nodeValue(c, depth+1)
			if err != nil {
				return nil, err
			}
			s = append(s, val)
		}
		return s, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, &Problem{Line: n.Line, Column: n.Column, Msg: err.Error()}
			}
			return b, nil
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				return nil, &Problem{Line: n.Line, Column: n.Column, Msg: "integer out of range"}
			}
			return json.Number(strconv.FormatInt(i, 10)), nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, &Problem{Line: n.Line, Column: n.Column, Msg: err.Error()}
			}
			return f, nil
		default:
			return n.Value, nil
		}
	}
	return nil, &Problem{Line: n.Line, Column: n.Column, Msg: "unsupported YAML node"}
}

var quotedName = regexp.MustCompile(`'((?:[^'\\]|\\.)*)'`)

// schemaProblems flattens a schema validation error into located problems,
// one per failing leaf, sorted by position, in words: a pattern names the
// form it wants, and an unknown key that is a misspelling of one the
// object takes says which. It also returns the key paths the problems
// already explain: the key a misspelling meant (whose absence, and
// whatever depends on it, is the same mistake), so no follow-on problem
// is reported for them.
func schemaProblems(root *yaml.Node, ve *jsonschema.ValidationError) ([]Problem, map[string]bool) {
	var leaves []*jsonschema.ValidationError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		leaves = append(leaves, e)
	}
	walk(ve)

	meant := map[string]string{} // misspelled key path -> the key it meant
	explained := map[string]bool{}
	for _, e := range leaves {
		if !isUnknownKey(e) {
			continue
		}
		key := pointerToKey(e.InstanceLocation)
		_, ptr, _ := strings.Cut(e.AbsoluteKeywordLocation, "#")
		allowed := allowedKeys(strings.TrimSuffix(ptr, "/additionalProperties"))
		for _, m := range quotedName.FindAllStringSubmatch(e.Message, -1) {
			if s := nearest(m[1], allowed); s != "" {
				meant[joinKey(key, m[1])] = s
				explained[joinKey(key, s)] = true
			}
		}
	}

	var out []Problem
	for _, e := range leaves {
		key := pointerToKey(e.InstanceLocation)
		switch {
		case isUnknownKey(e):
			for _, m := range quotedName.FindAllStringSubmatch(e.Message, -1) {
				k := joinKey(key, m[1])
				line, col := position(root, k, true)
				msg := "unknown key"
				if s := meant[k]; s != "" {
					msg = fmt.Sprintf("unknown key; did you mean %s?", s)
				}
				out = append(out, Problem{Line: line, Column: col, Key: k, Msg: msg})
			}
		case strings.HasSuffix(e.KeywordLocation, "/propertyNames") || strings.Contains(e.KeywordLocation, "/propertyNames/"):
			line, col := position(root, key, false)
			out = append(out, Problem{Line: line, Column: col, Key: key, Msg: "names must be lower-case letters, digits, _ and -, starting with a letter"})
		case strings.HasSuffix(e.KeywordLocation, "/required"):
			var missing []string
			for _, m := range quotedName.FindAllStringSubmatch(e.Message, -1) {
				if !explained[joinKey(key, m[1])] {
					missing = append(missing, m[1])
				}
			}
			if len(missing) > 0 {
				line, col := position(root, key, false)
				out = append(out, Problem{Line: line, Column: col, Key: key, Msg: "missing " + strings.Join(missing, ", ")})
			}
		case strings.HasSuffix(e.KeywordLocation, "/pattern"):
			line, col := position(root, key, false)
			out = append(out, Problem{Line: line, Column: col, Key: key, Msg: patternProblem(root, e, key)})
		default:
			line, col := position(root, key, false)
			out = append(out, Problem{Line: line, Column: col, Key: key, Msg: e.Message})
		}
	}
	return sortProblems(dedupe(out)), explained
}

func isUnknownKey(e *jsonschema.ValidationError) bool {
	return strings.HasSuffix(e.KeywordLocation, "/additionalProperties") && strings.HasSuffix(e.Message, "not allowed")
}

// explainedBy reports whether key is, or is under, a key in explained.
func explainedBy(key string, explained map[string]bool) bool {
	for k := range explained {
		if key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[") {
			return true
		}
	}
	return false
}

// locate places package-level field errors in the file.
func locate(root *yaml.Node, errs []error) []Problem {
	out := make([]Problem, 0, len(errs))
	for _, err := range errs {
		var fe *policy.FieldError
		if errors.As(err, &fe) {
			line, col := position(root, fe.Path, false)
			out = append(out, Problem{Line: line, Column: col, Key: fe.Path, Msg: fe.Msg})
			continue
		}
		out = append(out, Problem{Msg: err.Error()})
	}
	return sortProblems(out)
}

func dedupe(ps []Problem) []Problem {
	seen := make(map[Problem]bool, len(ps))
	out := ps[:0]
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func sortProblems(ps []Problem) []Problem {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Column < ps[j].Column
	})
	return ps
}

// pointerToKey turns a JSON pointer ("/scopes/triage/grants/1/paths/0")
// into a key path ("scopes.triage.grants[1].paths[0]"). Array indexes are
// told apart from map keys by being all digits under a known list key, which
// holds for keyhole.yaml: no map in it has numeric keys that matter.
func pointerToKey(ptr string) string {
	if ptr == "" || ptr == "/" {
		return ""
	}
	var b strings.Builder
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		if _, err := strconv.Atoi(tok); err == nil && b.Len() > 0 {
			fmt.Fprintf(&b, "[%s]", tok)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

func joinKey(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

// keyElem is one step of a key path: a map key or a list index.
type keyElem struct {
	key   string
	index int // -1 for a map key
}

func parseKey(path string) []keyElem {
	var out []keyElem
	for _, part := range strings.Split(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			out = append(out, keyElem{key: name, index: -1})
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			if !ok {
				break
			}
			n, err := strconv.Atoi(idx)
			if err != nil {
				break
			}
			out = append(out, keyElem{index: n})
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return out
}

// position finds the line and column of a key path in the document: the
// value's position, or the key's own when atKey (an unknown key). A path
// that does not exist (a missing required key) resolves to its deepest
// existing ancestor.
func position(root *yaml.Node, path string, atKey bool) (int, int) {
	n := root
	keyNode := root
	if path != "" {
		for _, el := range parseKey(path) {
			for n.Kind == yaml.AliasNode {
				n = n.Alias
			}
			next, k := child(n, el)
			if next == nil {
				break
			}
			n, keyNode = next, k
		}
	}
	if atKey && keyNode != nil {
		return keyNode.Line, keyNode.Column
	}
	return n.Line, n.Column
}

func child(n *yaml.Node, el keyElem) (value, key *yaml.Node) {
	switch {
	case n.Kind == yaml.MappingNode && el.index < 0:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == el.key {
				return n.Content[i+1], n.Content[i]
			}
		}
	case n.Kind == yaml.SequenceNode && el.index >= 0 && el.index < len(n.Content):
		return n.Content[el.index], n.Content[el.index]
	}
	return nil, nil
}
