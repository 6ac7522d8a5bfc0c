package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestFieldPathRefusesReshaping holds issue 22's paths and variants: every
// modifier, query, wildcard, multipath, literal and pipe is refused
// wherever it appears, and the error names it.
func TestFieldPathRefusesReshaping(t *testing.T) {
	tests := map[string]string{
		// The examples.
		`{@this}`:           `a multipath "{…}" at offset 0`,
		`[@this]`:           `a multipath "[…]" at offset 0`,
		`#.{number,@this}`:  `a multipath "{…}" at offset 2`,
		`#.[number,@this]`:  `a multipath "[…]" at offset 2`,
		`{a:@dig:secret}`:   `a multipath "{…}" at offset 0`,
		`{"a":@reverse}`:    `a multipath "{…}" at offset 0`,
		`{x:@values}`:       `a multipath "{…}" at offset 0`,
		`#.{title,@this}`:   `a multipath "{…}" at offset 2`,
		`#(number>0)#`:      `a query "#(…)" at offset 0`,
		`items.#(number>0)`: `a query "#(…)" at offset 6`,
		// Modifiers anywhere.
		`@this`:            `a modifier "@this" at offset 0`,
		`a.@this`:          `a modifier "@this" at offset 2`,
		`#.@this`:          `a modifier "@this" at offset 2`,
		`a.@reverse.0`:     `a modifier "@reverse" at offset 2`,
		`@dig:secret`:      `a modifier "@dig" at offset 0`,
		`a.b@values`:       `a modifier "@values" at offset 3`,
		`items.@pretty:{}`: `a modifier "@pretty" at offset 6`,
		`a.@keys`:          `a modifier "@keys" at offset 2`,
		// Queries, old and new.
		`friends.#(last=="Murphy").first`:  `a query "#(…)" at offset 8`,
		`friends.#(last=="Murphy")#.first`: `a query "#(…)" at offset 8`,
		`friends.#[last=="Murphy"].first`:  `a query "#[…]" at offset 8`,
		`children.#(%"*a*")#`:              `a query "#(…)" at offset 9`,
		// Wildcards.
		`a.*`:        `a wildcard "*" at offset 2`,
		`child*.2`:   `a wildcard "*" at offset 5`,
		`c?ildren.0`: `a wildcard "?" at offset 1`,
		`*`:          `a wildcard "*" at offset 0`,
		`#.*`:        `a wildcard "*" at offset 2`,
		// Multipaths and their pieces inside components.
		`a.{b,c}`: `a multipath "{…}" at offset 2`,
		`a.[0]`:   `a multipath "[…]" at offset 2`,
		`a[0]`:    `a multipath "[…]" at offset 1`,
		`a}`:      `a bracket "}" of a query or multipath at offset 1`,
		`a)`:      `a bracket ")" of a query or multipath at offset 1`,
		`a(b)`:    `a bracket "(" of a query or multipath at offset 1`,
		// Literals and pipes.
		`!true`:       `a literal "!" at offset 0`,
		`#.!"secret"`: `a literal "!" at offset 2`,
		`a|b`:         `a pipe "|" (write ".") at offset 1`,
		`friends|#`:   `a pipe "|" (write ".") at offset 7`,
		// JSON lines and empty components.
		`..0`:  `a JSON-lines path ".." at offset 0`,
		`a..b`: `has an empty component at offset 2`,
		`.a`:   `has an empty component at offset 0`,
		`a.`:   `has an empty component at offset 2`,
		// "#" stands alone; "\" escapes punctuation only.
		`#a`:   `has a "#" at offset 0 inside a component`,
		`a#`:   `has a "#" at offset 1 inside a component`,
		`a.#b`: `has a "#" at offset 2 inside a component`,
		`\##`:  `has a "#" at offset 2 inside a component`,
		`a\`:   `has a "\" at offset 1 that escapes no punctuation character`,
		`a\b`:  `has a "\" at offset 1 that escapes no punctuation character`,
		`a\0`:  `has a "\" at offset 1 that escapes no punctuation character`,
		// Bytes no key path holds.
		"a b":    `must not contain spaces or control characters`,
		"a\tb":   `must not contain spaces or control characters`,
		"a\x00":  `must not contain spaces or control characters`,
		"a\xffb": `is not valid UTF-8`,
		"":       `is empty`,
	}
	for path, want := range tests {
		steps, err := parseFieldPath(path)
		if err == nil {
			t.Errorf("parseFieldPath(%q) = %+v, want refused: %s", path, steps, want)
			continue
		}
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("parseFieldPath(%q) = %q, want it to start %q", path, err, want)
		}
		// And config check refuses it, naming the field.
		_, errs := Compile("api", Config{Kind: "http", BaseURL: "https://api.example.com", Credential: Credential{Secret: "tok", Inject: "bearer"}, Response: Response{Fields: []string{path}}}, Env{})
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), "tools.api.response.fields[0]: "+strconv.Quote(path)+" "+want) {
			t.Errorf("Compile(response.fields [%q]) = %v, want one error naming %s", path, errs, want)
		}
	}
}

func TestFieldPathAcceptsPlainPaths(t *testing.T) {
	tests := map[string][]fieldStep{
		`number`:             {{name: "number"}},
		`user.login`:         {{name: "user"}, {name: "login"}},
		`items.#.title`:      {{name: "items"}, {all: true}, {name: "title"}},
		`#.user.login`:       {{all: true}, {name: "user"}, {name: "login"}},
		`friends.#`:          {{name: "friends"}, {all: true}},
		`#.#`:                {{all: true}, {all: true}},
		`#`:                  {{all: true}},
		`children.0`:         {{name: "children"}, {name: "0"}},
		`fav\.movie`:         {{name: "fav.movie"}},
		`\@odata\.context`:   {{name: "@odata.context"}},
		`a\*b\?`:             {{name: "a*b?"}},
		`\#`:                 {{name: "#"}},
		`\#.x`:               {{name: "#"}, {name: "x"}},
		`a\|b\!c\\d`:         {{name: "a|b!c\\d"}},
		`a\{b\}\[c\]\(d\)`:   {{name: "a{b}[c](d)"}},
		`a-b_c:d$e,f=g<h>%~`: {{name: "a-b_c:d$e,f=g<h>%~"}},
		`"quoted"`:           {{name: `"quoted"`}},
		`ключ.名前`:            {{name: "ключ"}, {name: "名前"}},
	}
	for path, want := range tests {
		got, err := parseFieldPath(path)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("parseFieldPath(%q) = %+v, %v; want %+v", path, got, err, want)
		}
	}
}

// syntaxDoc is the example document of gjson's SYNTAX.md.
const syntaxDoc = `{
  "name": {"first": "Tom", "last": "Anderson"},
  "age":37,
  "children": ["Sara","Alex","Jack"],
  "fav.movie": "Deer Hunter",
  "friends": [
    {"first": "Dale", "last": "Murphy", "age": 44, "nets": ["ig", "fb", "tw"]},
    {"first": "Roger", "last": "Craig", "age": 68, "nets": ["fb", "tw"]},
    {"first": "Jane", "last": "Murphy", "age": 47, "nets": ["ig", "tw"]}
  ]
}`

func TestFieldGetAsGJSONDocuments(t *testing.T) {
	tests := map[string]string{
		"name.last":         `"Anderson"`,
		"age":               `37`,
		"children":          `["Sara","Alex","Jack"]`,
		"children.0":        `"Sara"`,
		"children.3":        ``,
		"children.00":       `"Sara"`,
		"friends.1.first":   `"Roger"`,
		`fav\.movie`:        `"Deer Hunter"`,
		"friends.#":         `3`,
		"friends.#.age":     `[44,68,47]`,
		"friends.#.nets.#":  `[3,2,2]`,
		"friends.#.nets.0":  `["ig","fb","ig"]`,
		"friends.#.missing": `[]`,
		"name.#":            ``,
		"age.x":             ``,
		"children.x":        ``,
		"friends.first":     ``,
		"nope":              ``,
	}
	doc := gjson.Parse(syntaxDoc)
	for path, want := range tests {
		got := fieldGet(doc, path)
		if got.Raw != want || got.Exists() != (want != "") {
			t.Errorf("fieldGet(syntax doc, %q) = %q (exists %v), want %q", path, got.Raw, got.Exists(), want)
		}
		if g := gjson.Get(syntaxDoc, path); want != "" && g.Raw != want {
			t.Errorf("gjson.Get(syntax doc, %q) = %q, want %q: the walker must agree with gjson", path, g.Raw, want)
		}
	}
}

// TestFieldGetDoesNotReadIntoStrings is why keyhole walks the path itself:
// gjson applies a component to a string by scanning its text for the first
// "{" or "[", so "#.0" on an array of strings returned values found inside
// them (and for one of them, invalid JSON).
func TestFieldGetDoesNotReadIntoStrings(t *testing.T) {
	tests := []struct{ doc, path string }{
		{`["[1,2]"]`, "#.0"},
		{`["[\"secret\",2]"]`, "#.0"},
		{`"[1,2]"`, "0"},
		{`{"a":"[7]"}`, "a.0"},
		{`[{"a":"{\"k\":1}"}]`, "#.a.k"},
	}
	for _, tt := range tests {
		got := fieldGet(gjson.Parse(tt.doc), tt.path)
		if got.Exists() && got.Raw != "[]" {
			t.Errorf("fieldGet(%s, %q) = %s; nothing is at that place", tt.doc, tt.path, got.Raw)
		}
	}
	if g := gjson.Get(`["[\"secret\",2]"]`, "#.0"); g.Raw == "[]" {
		t.Logf("gjson no longer reads into strings (%s); the walker may not be needed", g.Raw)
	}
}

// --- the differential: a plain path takes from a document only what is at
// a named place of it ---

// jnode is a JSON value decoded in document order, first member of a name
// winning as in gjson.
type jnode struct {
	kind byte // '{', '[', '"', '0' (number), 't', 'f', 'n'
	keys []string
	vals []*jnode
	str  string // string value, or a number's literal
}

func decodeJSON(doc string) (*jnode, error) {
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	n, err := decodeNode(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	return n, nil
}

func decodeNode(dec *json.Decoder) (*jnode, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		n := &jnode{kind: byte(v)}
		for dec.More() {
			if v == '{' {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k.(string))
			}
			c, err := decodeNode(dec)
			if err != nil {
				return nil, err
			}
			n.vals = append(n.vals, c)
		}
		_, err := dec.Token()
		return n, err
	case string:
		return &jnode{kind: '"', str: v}, nil
	case json.Number:
		return &jnode{kind: '0', str: string(v)}, nil
	case bool:
		if v {
			return &jnode{kind: 't'}, nil
		}
		return &jnode{kind: 'f'}, nil
	}
	return &jnode{kind: 'n'}, nil
}

// hasDuplicates reports whether some object under n repeats a name.
func (n *jnode) hasDuplicates() bool {
	seen := map[string]bool{}
	for _, k := range n.keys {
		if seen[k] {
			return true
		}
		seen[k] = true
	}
	for _, c := range n.vals {
		if c.hasDuplicates() {
			return true
		}
	}
	return false
}

// encode writes n canonically: compact, strings re-encoded.
func (n *jnode) encode(b *bytes.Buffer) {
	switch n.kind {
	case '{', '[':
		b.WriteByte(n.kind)
		for i, c := range n.vals {
			if i > 0 {
				b.WriteByte(',')
			}
			if n.kind == '{' {
				k, _ := json.Marshal(n.keys[i])
				b.Write(k)
				b.WriteByte(':')
			}
			c.encode(b)
		}
		b.WriteByte(n.kind + 2)
	case '"':
		s, _ := json.Marshal(n.str)
		b.Write(s)
	case '0':
		b.WriteString(n.str)
	case 't':
		b.WriteString("true")
	case 'f':
		b.WriteString("false")
	default:
		b.WriteString("null")
	}
}

// refGet is the meaning of a plain path, on the decoded document: the
// value at the named place, nil for none. intoString says a component was
// applied to a string, where gjson reads the string's text.
func refGet(n *jnode, steps []fieldStep) (v *jnode, intoString bool) {
	for i, st := range steps {
		switch {
		case n.kind == '"':
			return nil, true
		case st.all && n.kind == '[':
			if i == len(steps)-1 {
				return &jnode{kind: '0', str: strconv.Itoa(len(n.vals))}, false
			}
			out := &jnode{kind: '['}
			for _, el := range n.vals {
				r, in := refGet(el, steps[i+1:])
				intoString = intoString || in
				if r != nil {
					out.vals = append(out.vals, r)
				}
			}
			return out, intoString
		case n.kind == '{':
			name := st.name
			if st.all {
				name = "#"
			}
			var next *jnode
			for j, k := range n.keys {
				if k == name {
					next = n.vals[j]
					break
				}
			}
			if next == nil {
				return nil, false
			}
			n = next
		case n.kind == '[' && isDigits(st.name):
			idx, err := strconv.ParseUint(st.name, 10, 64)
			if err != nil || idx >= uint64(len(n.vals)) {
				return nil, false
			}
			n = n.vals[idx]
		default:
			return nil, false
		}
	}
	return n, false
}

func canonical(t testing.TB, raw string) string {
	n, err := decodeJSON(raw)
	if err != nil {
		t.Fatalf("result %q is not JSON: %v", raw, err)
	}
	var b bytes.Buffer
	n.encode(&b)
	return b.String()
}

// checkPlainPath checks one document and path: when the path is accepted,
// keyhole's walker returns exactly the value at its named place, and so
// does gjson unless the path reaches into a string or a name repeats.
func checkPlainPath(t testing.TB, doc, path string) {
	steps, err := parseFieldPath(path)
	if err != nil || !json.Valid([]byte(doc)) {
		return
	}
	tree, err := decodeJSON(doc)
	if err != nil {
		return
	}
	ref, intoString := refGet(tree, steps)
	want := ""
	if ref != nil {
		var b bytes.Buffer
		ref.encode(&b)
		want = b.String()
	}
	got := fieldGet(gjson.Parse(doc), path)
	if got.Exists() != (ref != nil) || ref != nil && canonical(t, got.Raw) != want {
		t.Fatalf("fieldGet(%.200q, %q) = %.200q (exists %v), want %.200q", doc, path, got.Raw, got.Exists(), want)
	}
	// gjson takes the first member of a name where the rest of the path
	// matches, not the first member: with duplicate names it may answer
	// from a later one, which is a named place too, but not this one.
	if intoString || tree.hasDuplicates() {
		return
	}
	g := gjson.Get(doc, path)
	if g.Exists() != (ref != nil) || ref != nil && canonical(t, g.Raw) != want {
		t.Fatalf("gjson.Get(%.200q, %q) = %.200q (exists %v), want %.200q: an accepted path took more than the value at its place", doc, path, g.Raw, g.Exists(), want)
	}
}

// fieldEscape writes key as a path component, or "" when no plain path
// names it.
func fieldEscape(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c <= ' ' || c == 0x7f:
			return ""
		case isASCIIPunct(c) && !strings.ContainsRune("-_:$,=<>%~\"'&+;/^`", rune(c)):
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// randomDoc builds a document whose member names need every escape and
// collide with indexes and "#".
func randomDoc(r *rand.Rand, depth int) string {
	names := []string{"a", "b", "0", "1", "#", "a.b", "@this", "*", "a*", "?", "|", "\\", "!x", "{x}", "[0]", "(q)", "é", "", "a b", `"q"`, "00", "-1"}
	switch k := r.IntN(8); {
	case depth > 3 || k == 0:
		return []string{`1`, `-0.5e3`, `"s"`, `"[1,2]"`, `"{\"a\":9}"`, `"[\"x\",{\"a\":1}]"`, `true`, `null`, `"a\u002eb"`}[r.IntN(9)]
	case k < 4:
		var parts []string
		for range r.IntN(4) {
			name, _ := json.Marshal(names[r.IntN(len(names))])
			parts = append(parts, string(name)+":"+randomDoc(r, depth+1))
		}
		return "{" + strings.Join(parts, ",") + "}"
	default:
		var parts []string
		for range r.IntN(4) {
			parts = append(parts, randomDoc(r, depth+1))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
}

// randomPath names a place of doc, or one near it.
func randomPath(r *rand.Rand, n *jnode) string {
	var comps []string
walk:
	for len(comps) < 5 && r.IntN(5) > 0 {
		switch n.kind {
		case '{':
			if len(n.vals) == 0 || r.IntN(6) == 0 {
				comps = append(comps, []string{"a", "#", "0", `\#`, "zz"}[r.IntN(5)])
				n = &jnode{}
				continue
			}
			j := r.IntN(len(n.vals))
			c := fieldEscape(n.keys[j])
			if c == "" {
				break walk
			}
			comps = append(comps, c)
			n = n.vals[j]
		case '[':
			if r.IntN(3) == 0 || len(n.vals) == 0 {
				comps = append(comps, "#")
				if len(n.vals) == 0 {
					n = &jnode{}
				} else {
					n = n.vals[r.IntN(len(n.vals))]
				}
				continue
			}
			j := r.IntN(len(n.vals) + 1)
			comps = append(comps, strconv.Itoa(j))
			if j == len(n.vals) {
				n = &jnode{}
			} else {
				n = n.vals[j]
			}
		default:
			comps = append(comps, []string{"a", "0", "#"}[r.IntN(3)])
		}
	}
	if len(comps) == 0 {
		return "#"
	}
	return strings.Join(comps, ".")
}

// TestFieldPathDifferential runs the differential on generated documents
// and paths, deterministically; FuzzFieldPath explores further.
func TestFieldPathDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(22, 3))
	checked := 0
	for range 4000 {
		doc := randomDoc(r, 0)
		tree, err := decodeJSON(doc)
		if err != nil {
			t.Fatalf("generated %q: %v", doc, err)
		}
		for range 8 {
			path := randomPath(r, tree)
			if _, err := parseFieldPath(path); err != nil {
				t.Fatalf("generated path %q of %s refused: %v", path, doc, err)
			}
			checkPlainPath(t, doc, path)
			checked++
		}
	}
	for _, path := range []string{"name.last", "children.0", "friends.#.age", "friends.#.nets.#", `fav\.movie`, "friends.1", "#", "friends.#.nets.1"} {
		checkPlainPath(t, syntaxDoc, path)
	}
	t.Logf("%d documents and paths agree", checked)
}

func FuzzFieldPath(f *testing.F) {
	for _, s := range []struct{ doc, path string }{
		{syntaxDoc, "friends.#.first"},
		{syntaxDoc, `fav\.movie`},
		{syntaxDoc, "{@this}"},
		{syntaxDoc, "#.{title,@this}"},
		{`[{"number":1,"title":"a","secret":"s"}]`, "#.title"},
		{`[{"number":1,"title":"a","secret":"s"}]`, "#(number>0)#"},
		{`["[1,2]"]`, "#.0"},
		{`{"#":{"a":1},"0":[2]}`, "#.a"},
		{`{"a.b":{"@x":[1,[2,3]]}}`, `a\.b.\@x.1.#`},
		{`[[1,2],[3]]`, "#.#"},
	} {
		f.Add(s.doc, s.path)
	}
	f.Fuzz(func(t *testing.T, doc, path string) {
		if len(doc) > 1<<16 || len(path) > 256 {
			return
		}
		checkPlainPath(t, doc, path)
	})
}

// TestProjectionReturnsOnlyNamedFields drives an http tool's projection
// against an upstream whose elements hold a secret field and strings that
// look like JSON: only the named fields reach the agent.
func TestProjectionReturnsOnlyNamedFields(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"number":1,"title":"a","secret":"hunter2","tags":["[\"hunter2\"]"]},{"number":2,"title":"b","secret":"hunter3","tags":[]}]`)
	}))
	defer up.Close()
	tests := map[string]struct {
		fields []string
		want   string
	}{
		"each element":             {[]string{"#.number", "#.title"}, `[{"number":1,"title":"a"},{"number":2,"title":"b"}]`},
		"strings are not searched": {[]string{"0.tags.#.0"}, `{"0.tags.#.0":[]}`},
		"count":                    {[]string{"#"}, `{"#":2}`},
		"a tag string":             {[]string{"0.tags.0"}, `{"0.tags.0":"[\"hunter2\"]"}`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tool := compileTest(t, Config{BaseURL: up.URL, Response: Response{Fields: tc.fields}})
			res, err := tool.Execute(context.Background(), prepare(t, tool, `{"method":"GET","path":"/issues"}`), []byte(testToken), execEnv(tool, []byte(testToken)))
			if err != nil {
				t.Fatalf("Execute = %v", err)
			}
			body, _ := json.Marshal(res.Structured.(httpView).Body)
			if string(body) != tc.want {
				t.Fatalf("projection %q = %s, want %s", tc.fields, body, tc.want)
			}
			if name != "a tag string" && strings.Contains(res.Text+string(body), "hunter") {
				t.Fatalf("projection %q let a secret field through: %s", tc.fields, res.Text)
			}
		})
	}
}
