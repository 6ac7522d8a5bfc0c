package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const testValue = "ghp_S3cr3tVALUE_0123456789abcdefXYZ"

// leaks reports every cheap encoding of value found in out.
func leaks(out []byte, value string) []string {
	forms := map[string]string{
		"raw":          value,
		"base64":       base64.StdEncoding.EncodeToString([]byte(value)),
		"base64-raw":   base64.RawStdEncoding.EncodeToString([]byte(value)),
		"base64url":    base64.URLEncoding.EncodeToString([]byte(value)),
		"hex":          hex.EncodeToString([]byte(value)),
		"hex-upper":    strings.ToUpper(hex.EncodeToString([]byte(value))),
		"byte-decimal": strings.Trim(fmt.Sprint([]byte(value)), "[]"),
	}
	var found []string
	for name, form := range forms {
		if bytes.Contains(out, []byte(form)) {
			found = append(found, name)
		}
	}
	return found
}

func TestSecretNeverPrints(t *testing.T) {
	s := newSecret([]byte(testValue))
	if got := string(s.Bytes()); got != testValue {
		t.Fatalf("Bytes() = %q, want the value", got)
	}
	type exported struct{ S Secret }
	type unexported struct{ s Secret }
	cases := map[string]string{
		"verbs":              fmt.Sprintf("%v %+v %#v %s %q %x %X %d %T", s, s, s, s, s, s, s, s, s),
		"pointer":            fmt.Sprintf("%v %+v %#v %s %x", &s, &s, &s, &s, &s),
		"exported field":     fmt.Sprintf("%v %+v %#v", exported{s}, exported{s}, exported{s}),
		"unexported field":   fmt.Sprintf("%v %+v %#v", unexported{s}, unexported{s}, unexported{s}),
		"slice":              fmt.Sprintf("%v %#v", []Secret{s}, []Secret{s}),
		"map":                fmt.Sprintf("%v", map[string]Secret{"k": s}),
		"String":             s.String(),
		"GoString":           s.GoString(),
		"Sprint":             fmt.Sprint(s) + fmt.Sprintln(s),
		"error wrapping %v":  fmt.Errorf("call failed: %v", s).Error(),
		"Sprintf width/flag": fmt.Sprintf("%-40v|%08x|%+q", s, s, s),
	}
	for name, out := range cases {
		t.Run(name, func(t *testing.T) {
			if found := leaks([]byte(out), testValue); len(found) > 0 {
				t.Fatalf("output %q leaks the value as %v", out, found)
			}
			if name != "unexported field" && !strings.Contains(out, redacted) {
				t.Fatalf("output %q does not say %s", out, redacted)
			}
		})
	}
}

func TestSecretLogAndJSON(t *testing.T) {
	s := newSecret([]byte(testValue))
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("call", "secret", s, "ptr", &s, slog.Any("any", s), "group", slog.GroupValue(slog.Any("inner", s)), "struct", struct{ Token Secret }{s})
	text := slog.New(slog.NewTextHandler(&buf, nil))
	text.Info("call", "secret", s, "ptr", &s)
	if found := leaks(buf.Bytes(), testValue); len(found) > 0 {
		t.Fatalf("slog output %s leaks the value as %v", buf.Bytes(), found)
	}
	if n := strings.Count(buf.String(), redacted); n < 7 {
		t.Fatalf("slog output %s has %d %s, want 7", buf.Bytes(), n, redacted)
	}

	js, err := json.Marshal(map[string]any{"s": s, "p": &s, "in": struct{ Token Secret }{s}})
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	if want := `{"in":{"Token":"[REDACTED]"},"p":"[REDACTED]","s":"[REDACTED]"}`; string(js) != want {
		t.Fatalf("json.Marshal = %s, want %s", js, want)
	}
}

func TestZeroSecret(t *testing.T) {
	var s Secret
	if s.Bytes() != nil {
		t.Fatalf("zero Secret Bytes() = %v, want nil", s.Bytes())
	}
	if got := fmt.Sprint(s); got != redacted {
		t.Fatalf("fmt.Sprint(zero Secret) = %q, want %q", got, redacted)
	}
}
