package vault

import (
	"errors"
	"strings"
	"testing"
)

func TestReplaceSwapsOnlyTheExpectedValue(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	mustSet(t, v, "oauth", `{"client_id":"c","refresh_token":"rt1"}`)
	if err := v.SetStatus("oauth", "needs login"); err != nil {
		t.Fatal(err)
	}

	m, err := v.Replace("oauth", []byte(`{"client_id":"c","refresh_token":"rt1"}`), []byte(`{"client_id":"c","refresh_token":"rt2"}`))
	if err != nil || m.Version != 2 || m.Status != "" {
		t.Fatalf("Replace(current value) = %+v, %v; want version 2, status cleared", m, err)
	}
	// A caller that read rt1 and lost the race changes nothing.
	_, err = v.Replace("oauth", []byte(`{"client_id":"c","refresh_token":"rt1"}`), []byte(`{"client_id":"c","refresh_token":"rt3"}`))
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("Replace(stale value) = %v, want ErrChanged", err)
	}
	got, err := v.Get("oauth")
	if err != nil || string(got.Bytes()) != `{"client_id":"c","refresh_token":"rt2"}` {
		t.Fatalf("Get after a stale Replace = %v; want the value of the winning Replace", err)
	}
	if _, err := v.Replace("nope", []byte("a"), []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Replace(missing) = %v, want ErrNotFound", err)
	}
	if _, err := v.Replace("oauth", got.Bytes(), nil); !errors.Is(err, ErrEmptyValue) {
		t.Fatalf("Replace(empty) = %v, want ErrEmptyValue", err)
	}
}

func TestSetStatusIsMetadataOnly(t *testing.T) {
	v, _ := newVault(t, randomKey(t))
	mustSet(t, v, "oauth", "value")
	if err := v.SetStatus("oauth", "needs login:\x1b[2K refused\n"+strings.Repeat("x", 400)); err != nil {
		t.Fatal(err)
	}
	m, err := v.Meta("oauth")
	if err != nil || m.Version != 1 || !strings.HasPrefix(m.Status, "needs login:") || strings.ContainsAny(m.Status, "\x1b\n") || len(m.Status) > 256 {
		t.Fatalf("Meta after SetStatus = %+v, %v; want version 1 and a cleaned status of at most 256 bytes", m, err)
	}
	list, _ := v.List()
	if len(list) != 1 || list[0].Status != m.Status {
		t.Fatalf("List = %+v, want the status", list)
	}
	if _, err := v.Rotate("oauth", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if m, _ := v.Meta("oauth"); m.Status != "" {
		t.Fatalf("status after Rotate = %q, want cleared", m.Status)
	}
	if err := v.SetStatus("nope", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetStatus(missing) = %v, want ErrNotFound", err)
	}
}
