package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"go.yaml.in/yaml/v3"
)

// patternWords says in words what a value that fails one of the schema's
// patterns should look like, by the pattern's place in the schema; a
// regular expression means nothing to most people.
var patternWords = map[string]string{
	"/$defs/duration/pattern":              "%q is not a duration; write a number and a unit, e.g. 30s, 15m, 1h or 7d",
	"/$defs/scope/properties/rate/pattern": "%q is not a rate; write N/s, N/m or N/h (calls per second, minute or hour), e.g. 5/s",
	"/$defs/name/pattern":                  "%q is not a name: use lower-case letters, digits, _ and -, starting with a letter",
}

// patternProblem words a pattern failure at key, whose value is in root.
func patternProblem(root *yaml.Node, e *jsonschema.ValidationError, key string) string {
	_, ptr, _ := strings.Cut(e.AbsoluteKeywordLocation, "#")
	value := valueAt(root, key)
	if w, ok := patternWords[ptr]; ok {
		return fmt.Sprintf(w, value)
	}
	return fmt.Sprintf("%q does not have the form this key takes (see `keyhole config schema`)", value)
}

// valueAt is the scalar at a key path, as written.
func valueAt(root *yaml.Node, key string) string {
	n := root
	for _, el := range parseKey(key) {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		next, _ := child(n, el)
		if next == nil {
			return ""
		}
		n = next
	}
	return n.Value
}

// rawSchema is the schema as plain JSON, to find the keys an object takes.
var rawSchema = sync.OnceValue(func() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(Schema, &m)
	return m
})

// allowedKeys lists the properties of the schema object at ptr (a JSON
// pointer into the schema), following a $ref.
func allowedKeys(ptr string) []string {
	var node any = rawSchema()
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		node = m[strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")]
	}
	m, ok := node.(map[string]any)
	if !ok {
		return nil
	}
	if ref, ok := m["$ref"].(string); ok && strings.HasPrefix(ref, "#") {
		return allowedKeys(strings.TrimPrefix(ref, "#"))
	}
	props, _ := m["properties"].(map[string]any)
	return slices.Sorted(maps.Keys(props))
}

// nearest returns the allowed key a misspelled one most likely meant, or
// "" when none is close: at most two edits (a swap of neighbours is one),
// and fewer than half its letters.
func nearest(key string, allowed []string) string {
	best, bestDist := "", 3
	for _, a := range allowed {
		d := editDistance(strings.ToLower(key), a)
		if d < bestDist && d*2 < len(a) {
			best, bestDist = a, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent letters.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
