package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// tokenDecodeJSON is the decoder httpDecodeJSON replaced (encoding/json's
// Decoder.Token), kept as its oracle.
func tokenDecodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := tokenDecodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, httpArgErr("arguments: unexpected data after the JSON value")
	}
	return v, nil
}

func tokenDecodeValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, httpArgErr("arguments: not valid JSON")
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	if depth >= httpMaxDepth {
		return nil, httpArgErr("arguments: nested deeper than 64 levels")
	}
	switch delim {
	case '{':
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, httpArgErr("arguments: not valid JSON")
			}
			k, _ := kt.(string)
			if _, dup := m[k]; dup {
				return nil, httpArgErr("arguments: an object repeats a key")
			}
			if m[k], err = tokenDecodeValue(dec, depth+1); err != nil {
				return nil, err
			}
		}
		if _, err := dec.Token(); err != nil {
			return nil, httpArgErr("arguments: not valid JSON")
		}
		return m, nil
	case '[':
		a := []any{}
		for dec.More() {
			v, err := tokenDecodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, httpArgErr("arguments: not valid JSON")
		}
		return a, nil
	}
	return nil, httpArgErr("arguments: not valid JSON")
}

// jsonDecodeCorpus is arguments valid and not, each problem alone and
// several in one.
var jsonDecodeCorpus = []string{
	`{}`, `[]`, `{"method":"GET","path":"/repos/acme/api/issues/1"}`,
	`{"method":"POST","path":"/x","body":{"a":[1,2.5,-3e10,0,-0.0,1E+2,true,false,null,"s"]}}`,
	` {"a" : 1 , "b":[ ] , "c":{ } } `, "\t\n\r{\"a\":\"b\"}\n",
	`{"k":"\u00e9\u2028\ud83d\ude00 \\ \" \/ \b\f\n\r\t"}`, `{"\u006d":"x","m":"y"}`, `{"m":"x","\u006d":"y"}`,
	`{"a":"\ud800"}`, `{"a":"\udc00x"}`, "{\"a\":\"\xff\xfe\"}", "{\"\xff\":1,\"\xfe\":2}", "{\"\xff\":1,\"\xfe\":1}",
	`{"a":"é"}`, `{"a":1,"a":2}`, `{"a":1,"b":{"a":2},"a":3}`, `{"a":1,"a":tru}`, `{"a":tru,"a":1}`,
	`{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{"a" 1}`, `{"a":1 "b":2}`, `{'a':1}`, `{a:1}`, `[1,]`, `[,1]`, `[1 2]`,
	`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`, `{"a":1e+}`, `{"a":+1}`, `{"a":0x10}`, `{"a":NaN}`,
	`{"a":Infinity}`, `{"a":tr}`, `{"a":nul}`, `{"a":falsey}`, `{"a":truex}`, `{"a":"x"}x`, `{"a":"x"}{}`, `{"a":"x"} 1`,
	`{"a":"x"}]`, `{"a":"x"`, `{"a":"x`, `{"a`, `{`, `[`, `"`, ``, ` `, `1`, `"s"`, `true`, `null`, `[1,"a",{"b":[]}]`,
	"{\"a\":\"x\x01\"}", "{\"a\":\"\\x\"}", `{"a":"\u12"}`, `{"a":"\uzzzz"}`, `{"a":"\`, `{"a":1}` + "\x00",
	`{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	strings.Repeat("[", 64) + strings.Repeat("]", 64), strings.Repeat("[", 65) + strings.Repeat("]", 65),
	strings.Repeat("[", 65) + "x", strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64),
	strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65), `{"a":1,"a":` + strings.Repeat("[", 70),
	`{"a":-0}`, `{"a":-01}`, `{"a":1.5e-7}`, `{"a":123456789012345678901234567890}`, `{"a":1E400}`,
}

// TestDecodeJSONMatchesDecoder: the single-pass decoder makes the same
// values, and finds the same first problem, as a Decoder.Token decoder.
func TestDecodeJSONMatchesDecoder(t *testing.T) {
	for _, in := range jsonDecodeCorpus {
		checkDecodeJSON(t, []byte(in))
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, in := range jsonDecodeCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkDecodeJSON(t, in) })
}

func checkDecodeJSON(t *testing.T, in []byte) {
	t.Helper()
	got, gerr := httpDecodeJSON(in)
	want, werr := tokenDecodeJSON(in)
	if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
		t.Fatalf("httpDecodeJSON(%q) error = %v, want %v", in, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("httpDecodeJSON(%q) = %#v, want %#v", in, got, want)
	}
}

// TestGenericArgsFastPath: every argument object the Go check of the
// generic schema passes, the compiled schema accepts too (so skipping it
// changes nothing), over objects built from every key the schema names
// and some it does not, each with values of every JSON type.
func TestGenericArgsFastPath(t *testing.T) {
	tool := compileTest(t, Config{Kind: "http", BaseURL: "https://api.example.com", Credential: Credential{Secret: "tok", Inject: "bearer"}})
	values := []any{
		"GET", "POST", "OPTIONS", "get", "TRACE", "", "/x", json.Number("1"), json.Number("-2.5"), true, false, nil,
		map[string]any{}, map[string]any{"a": "b"}, map[string]any{"a": json.Number("1")}, map[string]any{"a": nil},
		map[string]any{"a": "b", "c": []any{}}, []any{}, []any{"a"}, []any{json.Number("1"), map[string]any{}},
	}
	keys := []string{"method", "path", "query", "headers", "body", "extra", "Method"}
	passed, checked := 0, 0
	// Every object of up to three of the keys, each with every value, and
	// every complete request shape with each value in each place.
	var build func(obj map[string]any, from int, left int)
	check := func(obj map[string]any) {
		checked++
		if !httpGenericArgsValid(obj) {
			return
		}
		passed++
		if err := tool.schema.Validate(obj); err != nil {
			t.Fatalf("httpGenericArgsValid(%v) = true, but the schema says %v", obj, err)
		}
	}
	build = func(obj map[string]any, from int, left int) {
		check(obj)
		if left == 0 {
			return
		}
		for i := from; i < len(keys); i++ {
			for _, v := range values {
				next := map[string]any{keys[i]: v}
				for k, x := range obj {
					next[k] = x
				}
				build(next, i+1, left-1)
			}
		}
	}
	build(map[string]any{}, 0, 3)
	for _, k := range keys {
		for _, v := range values {
			obj := map[string]any{"method": "POST", "path": "/x", "query": map[string]any{"q": "1"}, "headers": map[string]any{"X-A": "b"}, "body": "s"}
			obj[k] = v
			check(obj)
		}
	}
	if passed == 0 || passed == checked {
		t.Fatalf("the fast path passed %d of %d objects; the test does not exercise it", passed, checked)
	}
}
