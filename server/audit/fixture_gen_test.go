package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/vault"
)

// TestWriteV1Fixture writes testdata/v1 with the buntdb audit log of this
// version of the package: a data dir's vault.db (holding the checkpoint),
// its master key and audit.db. It runs only with KEYHOLE_AUDIT_WRITE_FIXTURE=1.
func TestWriteV1Fixture(t *testing.T) {
	if os.Getenv("KEYHOLE_AUDIT_WRITE_FIXTURE") != "1" {
		t.Skip("set KEYHOLE_AUDIT_WRITE_FIXTURE=1 to write testdata/v1")
	}
	dir := filepath.Join("testdata", "v1")
	for _, f := range []string{"vault.db", "audit.db", "master.key"} {
		os.Remove(filepath.Join(dir, f))
	}
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x42}, 32))
	if err := os.WriteFile(filepath.Join(dir, "master.key"), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ks := vault.KeySource{KeyFile: filepath.Join(dir, "master.key")}
	v, err := vault.Create(filepath.Join(dir, "vault.db"), ks)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.Set("github_token", []byte("ghp_fixtureFixtureFixture0123456789"), "fixture"); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)}
	l, err := Open(Options{
		Path: filepath.Join(dir, "audit.db"), Key: v.DeriveKey("keyhole audit v1"),
		Checkpoint: v, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	step := func() { clk.Add(90 * time.Second) }
	// Old calls, pruned below: they leave the anchor.
	for range 3 {
		mustWrite(t, l, denied("ses_old", "github"))
		step()
		mustCall(t, l, allowed("ses_old", "github"), 200)
		step()
	}
	if err := v.Touch("github_token", clk.Now()); err != nil {
		t.Fatal(err)
	}
	clk.Add(24 * time.Hour)
	if n, err := l.Prune(clk.Now().Add(-time.Hour)); err != nil || n != 6 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	// Every field a record can hold.
	full := Record{
		Session: "ses_full", Scope: "triage", Client: "claude-code/1.0.3", Tool: "github", Kind: "http",
		Method: "POST", Host: "api.github.com", Path: "/repos/acme/api/issues/7/comments",
		QueryNames: []string{"page", "per_page"},
		Args:       json.RawMessage(`{"method":"POST","path":"/repos/acme/api/issues/7/comments","body":{"body":"hi"}}`),
		Decision:   Allow, Grant: "triage[1]", Credential: "github_token", CredVersion: 3,
	}
	p, err := l.Begin(ctx, full)
	if err != nil {
		t.Fatal(err)
	}
	step()
	if err := p.Finish(ctx, Record{Decision: Allow, Status: 201, BytesIn: 310, BytesOut: 1024, Duration: 183 * time.Millisecond, Scrubbed: true}); err != nil {
		t.Fatal(err)
	}
	s3 := Record{
		Session: "ses_s3", Scope: "archive_report", Tool: "archive_bucket", Kind: "s3",
		Bucket: "acme-archive", Action: "get", Key: "reports/2026/q1.csv",
		Args: json.RawMessage(`{"action":"get","key":"reports/2026/q1.csv"}`), Decision: Allow,
		Credential: "aws_archive_ro", CredVersion: 1,
	}
	step()
	p, err = l.Begin(ctx, s3)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(ctx, Record{Decision: Error, Code: "upstream_error", Reason: "upstream: connection reset", Duration: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	step()
	odd := denied("ses_\xff\xfeodd", "tool\nwith\x1b[2Knewline")
	odd.Path = "/é/" + strings.Repeat("a", 300)
	odd.Args = json.RawMessage(`{"body":"` + strings.Repeat("x", MaxArgs+100) + `"}`)
	mustWrite(t, l, odd)
	step()
	if _, err := l.Write(ctx, Record{Session: "-", Scope: "-", Tool: "keyhole.reload", Decision: Allow, Reason: "config reloaded from /etc/keyhole/keyhole.yaml"}); err != nil {
		t.Fatal(err)
	}
	step()
	// A call the process never finished: an intent without outcome.
	if _, err := l.Begin(ctx, allowed("ses_full", "github")); err != nil {
		t.Fatal(err)
	}
	step()
	mustWrite(t, l, denied("ses_full", "github"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// What this version reads from the file: every record as Export writes
	// it, and every entry's seq and MAC.
	ro, err := Open(Options{Path: filepath.Join(dir, "audit.db"), Key: v.DeriveKey("keyhole audit v1"), Checkpoint: v, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var exp bytes.Buffer
	if err := ro.Export(&exp, "jsonl", Filter{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "records.jsonl"), exp.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var macs bytes.Buffer
	for seq := uint64(1); seq <= ro.head.Seq; seq++ {
		if mac, ok, _ := ro.macAt(seq); ok {
			fmt.Fprintf(&macs, "%d %s\n", seq, mac)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "macs.txt"), macs.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := ro.Verify()
	if err != nil || !rep.OK {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	t.Logf("wrote %s: %+v", dir, rep)
}
