package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIDemoRunsAndLeavesNothingBehind(t *testing.T) {
	h := newHome(t)
	tmp := filepath.Join(h.dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	h.env = append(h.env, "TMPDIR="+tmp)
	r := h.ok("", "demo")
	for _, want := range []string{
		"1. Read the open issues",
		"keyhole      DENY  not_granted: DELETE /repos/acme/api/issues/43",
		`"authorization":"Bearer [REDACTED]"`,
		"audit log ok: ",
		"claude mcp add keyhole -- keyhole stdio --scope triage\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("keyhole demo stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("keyhole demo coloured output that is not a terminal")
	}
	if r.stderr != "" {
		t.Errorf("keyhole demo stderr = %q, want nothing", r.stderr)
	}
	// No config, data dir or key under HOME, and its temp dir removed.
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "tmp" {
		t.Errorf("keyhole demo left %v in HOME, want only the empty tmp", entries)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("keyhole demo left %d entries in TMPDIR (first %s)", len(left), left[0].Name())
	}
}
