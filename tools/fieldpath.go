package tools

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// A response.fields path is a plain path in gjson's syntax: components
// separated by ".", each one of
//
//   - a key, matched exactly against an object's member names; "\" escapes
//     one ASCII punctuation character, so "fav\.movie" is the key
//     fav.movie and "\@odata\.context" the key @odata.context;
//   - an index, all digits, which selects an array's element (and on an
//     object is the member of that name);
//   - "#" alone, which on an array is its length when it ends the path and
//     otherwise applies the rest of the path to every element.
//
// Everything else gjson's syntax offers can build a value that is at no
// named place of the document, or return whole elements the projection
// was written to keep back, so it is refused wherever it appears, with an
// error naming it: modifiers (@this, @reverse, @values, @dig, ...), queries
// (#(...) and #(...)#, and the old #[...]), wildcards (* and ?), multipaths
// ({...} and [...]), literals (!true), the pipe (|) and JSON-lines paths
// (..0).
//
// gjson itself is never handed a path: fieldGet walks the parsed
// components over the document, because gjson reads into a string value
// when a component is applied to it (gjson.Get(`["[1,2]"]`, "#.0") is
// [1]).

// fieldStep is one component of a plain path.
type fieldStep struct {
	// all is "#": every element of an array (or its length, last).
	all bool
	// name is the unescaped key, or the index as written.
	name string
}

// fieldPlainHelp ends every refusal of a path.
const fieldPlainHelp = `; response.fields takes plain paths: keys, array indexes, "#" for every element of an array, and "\." for a dot in a key`

// parseFieldPath parses a response.fields path, or returns an error that
// names the construct it refuses and where.
func parseFieldPath(path string) ([]fieldStep, error) {
	switch {
	case path == "":
		return nil, fmt.Errorf("is empty")
	case !utf8.ValidString(path):
		return nil, fmt.Errorf("is not valid UTF-8")
	case strings.HasPrefix(path, ".."):
		return nil, fieldRefusal(0, `a JSON-lines path ".."`)
	}
	var steps []fieldStep
	var key []byte
	start := 0 // offset of the component being read
	for i := 0; i <= len(path); i++ {
		if i == len(path) || path[i] == '.' {
			switch comp := path[start:i]; comp {
			case "":
				return nil, fmt.Errorf("has an empty component at offset %d (a leading, trailing or doubled \".\")%s", i, fieldPlainHelp)
			case "#":
				steps = append(steps, fieldStep{all: true})
			default:
				steps = append(steps, fieldStep{name: string(key)})
			}
			key, start = key[:0], i+1
			continue
		}
		c := path[i]
		switch {
		case c == '\\':
			if i+1 == len(path) || !isASCIIPunct(path[i+1]) {
				return nil, fmt.Errorf(`has a "\" at offset %d that escapes no punctuation character; write "\." for a dot in a key%s`, i, fieldPlainHelp)
			}
			i++
			key = append(key, path[i])
		case c == '#' && i == start && (i+1 == len(path) || path[i+1] == '.'):
			// "#" alone: every element of an array.
		default:
			if err := fieldSpecial(path, i); err != nil {
				return nil, err
			}
			key = append(key, c)
		}
	}
	return steps, nil
}

// fieldSpecial refuses path[i] when it is a character of gjson's syntax
// that a plain path does not use unescaped.
func fieldSpecial(path string, i int) error {
	switch c := path[i]; {
	case c == '#' && i+1 < len(path) && (path[i+1] == '(' || path[i+1] == '['):
		return fieldRefusal(i, fmt.Sprintf("a query %q", path[i:i+2]+"…"+closing(path[i+1])))
	case c == '#':
		return fmt.Errorf(`has a "#" at offset %d inside a component; "#" stands alone for every element of an array (write "\#" for the character)%s`, i, fieldPlainHelp)
	case c == '@':
		name := path[i+1:]
		if n := strings.IndexAny(name, ".|:,}]) "); n >= 0 {
			name = name[:n]
		}
		return fieldRefusal(i, fmt.Sprintf("a modifier %q", "@"+name))
	case c == '{' || c == '[':
		return fieldRefusal(i, fmt.Sprintf("a multipath %q", string(c)+"…"+closing(c)))
	case c == '*' || c == '?':
		return fieldRefusal(i, fmt.Sprintf("a wildcard %q", string(c)))
	case c == '|':
		return fieldRefusal(i, `a pipe "|" (write ".")`)
	case c == '!':
		return fieldRefusal(i, `a literal "!"`)
	case c == '(' || c == ')' || c == '}' || c == ']':
		return fieldRefusal(i, fmt.Sprintf("a bracket %q of a query or multipath", string(c)))
	case c <= ' ' || c == 0x7f:
		return fmt.Errorf("must not contain spaces or control characters")
	}
	return nil
}

func fieldRefusal(at int, what string) error {
	return fmt.Errorf("%s at offset %d is not allowed%s", what, at, fieldPlainHelp)
}

func closing(open byte) string {
	switch open {
	case '(':
		return ")"
	case '[':
		return "]"
	}
	return "}"
}

func isASCIIPunct(c byte) bool {
	return '!' <= c && c <= '/' || ':' <= c && c <= '@' || '[' <= c && c <= '`' || '{' <= c && c <= '~'
}

// fieldGet returns the value at path in v, as gjson would for a plain
// path on a document of objects and arrays, or a Result that does not
// exist. A path that is not plain exists nowhere.
func fieldGet(v gjson.Result, path string) gjson.Result {
	steps, err := parseFieldPath(path)
	if err != nil {
		return gjson.Result{}
	}
	return fieldWalk(v, steps)
}

func fieldWalk(v gjson.Result, steps []fieldStep) gjson.Result {
	for i, st := range steps {
		switch {
		case st.all && v.IsArray():
			if i == len(steps)-1 {
				n := 0
				v.ForEach(func(_, _ gjson.Result) bool { n++; return true })
				return gjson.Result{Type: gjson.Number, Raw: strconv.Itoa(n), Num: float64(n)}
			}
			var b strings.Builder
			b.WriteByte('[')
			k := 0
			v.ForEach(func(_, el gjson.Result) bool {
				r := fieldWalk(el, steps[i+1:])
				if r.Exists() {
					if k > 0 {
						b.WriteByte(',')
					}
					k++
					b.WriteString(r.Raw)
				}
				return true
			})
			b.WriteByte(']')
			return gjson.Result{Type: gjson.JSON, Raw: b.String()}
		case v.IsObject():
			name := st.name
			if st.all {
				name = "#" // gjson reads "#" on an object as a member name
			}
			var found gjson.Result
			v.ForEach(func(k, val gjson.Result) bool {
				if k.String() == name {
					found = val
					return false
				}
				return true
			})
			v = found
		case v.IsArray() && isDigits(st.name):
			idx, err := strconv.ParseUint(st.name, 10, 64)
			if err != nil {
				return gjson.Result{}
			}
			var found gjson.Result
			var n uint64
			v.ForEach(func(_, el gjson.Result) bool {
				if n == idx {
					found = el
					return false
				}
				n++
				return true
			})
			v = found
		default:
			// A component applied to a string, number, literal or an
			// array by key: nothing there.
			return gjson.Result{}
		}
		if !v.Exists() {
			return v
		}
	}
	return v
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
