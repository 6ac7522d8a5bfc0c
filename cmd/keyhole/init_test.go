package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestASecondProjectReusesTheKeyAndVault (issue 13 item 3): `keyhole
// init` in a second project writes just its keyhole.yaml and says it
// reused the master key and vault; init --force never leaves a data dir
// that cannot start (vault, audit log and sessions move aside together,
// the old log still verifies with the old key), and refuses while a
// broker owns the data dir.
func TestASecondProjectReusesTheKeyAndVault(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	h.killBrokerAtCleanup(t)
	c := h.stdioClient(t)
	if _, err := call(c, "/issues/1"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	keyFile := filepath.Join(h.dir, "config", "keyhole", "master.key")
	dataDir := filepath.Join(h.dir, "data", "keyhole")
	key := readFile(t, keyFile)

	two := filepath.Join(h.dir, "two")
	os.MkdirAll(two, 0o755)
	r := h.runIn(two, "", "init")
	if r.code != 0 || !strings.Contains(r.stdout, "reused       "+keyFile) || !strings.Contains(r.stdout, "reused       "+filepath.Join(dataDir, "vault.db")) ||
		!strings.Contains(r.stdout, "created      keyhole.yaml") || strings.Count(r.stdout, "created") != 1 {
		t.Fatalf("init in a second project = exit %d\n%s%s\nwant just keyhole.yaml created, the key and vault reused", r.code, r.stdout, r.stderr)
	}
	// (The running broker writes its checkpoints into the vault: what
	// must not change is the key, and the vault's secrets.)
	if readFile(t, keyFile) != key {
		t.Fatal("init in a second project changed the master key")
	}
	if r := h.runIn(two, "", "secret", "list"); !strings.Contains(r.stdout, "github_token") {
		t.Fatalf("secret list in the second project = %q, want the shared vault's github_token", r.stdout)
	}
	if r := h.runIn(two, "", "init"); r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("init again = exit %d %q", r.code, r.stderr)
	}

	// --force refuses while a broker owns the data dir, and changes nothing.
	c = h.stdioClient(t)
	if r := h.runIn(two, "", "init", "--force"); r.code != 1 || !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, "keyhole stop") {
		t.Fatalf("init --force beside a broker = exit %d %q; want a refusal naming keyhole stop", r.code, r.stderr)
	}
	if readFile(t, keyFile) != key {
		t.Fatal("a refused init --force changed the master key")
	}
	if r := h.runIn(two, "", "secret", "list"); !strings.Contains(r.stdout, "github_token") {
		t.Fatalf("secret list after a refused init --force = %q, want the vault as it was", r.stdout)
	}
	c.Close()
	h.ok("", "stop")

	r = h.runIn(two, "", "init", "--force")
	if r.code != 0 {
		t.Fatalf("init --force = exit %d %q", r.code, r.stderr)
	}
	m := regexp.MustCompile(`KEYHOLE_KEY_FILE=(\S+) keyhole audit verify --data-dir (\S+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("init --force = %q; want the command that verifies the old log", r.stdout)
	}
	for _, name := range []string{"vault.db", "audit.sqlite", "sessions.db"} {
		if _, err := os.Stat(filepath.Join(m[2], name)); err != nil {
			t.Fatalf("init --force did not move %s aside with the vault: %v", name, err)
		}
	}
	if readFile(t, m[1]) != key || readFile(t, keyFile) == key {
		t.Fatal("init --force did not keep the old key and write a new one")
	}
	// The data dir starts: a broker opens the new vault and a new log.
	h.env = append(h.env, "KEYHOLE_CONFIG="+filepath.Join(two, "keyhole.yaml"))
	c = h.stdioClient(t)
	c.Close()
	if r := h.ok("", "audit", "verify"); !strings.Contains(r.stdout, "chain intact") {
		t.Fatalf("audit verify after init --force = %q", r.stdout)
	}
	// The old log still verifies with the old key.
	h.env = append(h.env, "KEYHOLE_KEY_FILE="+m[1])
	old := h.runIn(h.dir, "", "--data-dir", m[2], "audit", "verify")
	if old.code != 0 || !strings.Contains(old.stdout, "chain intact") || strings.Contains(old.stdout, " 0 entries") {
		t.Fatalf("the old log with the old key = exit %d %q %q; want it intact", old.code, old.stdout, old.stderr)
	}
}

// TestAuditArchiveIsTheWayOutOfALogThatDoesNotMatchItsCheckpoint (issue
// 13 item 3): a log cut behind its checkpoint stops the broker from
// starting; `keyhole audit archive` moves it aside, where it still
// verifies with its key (and says it was cut), and starts a new chain
// whose first record names the archived head; the broker starts again.
func TestAuditArchiveIsTheWayOutOfALogThatDoesNotMatchItsCheckpoint(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	h.killBrokerAtCleanup(t)
	c := h.stdioClient(t)
	for i := 0; i < 3; i++ {
		call(c, fmt.Sprintf("/issues/%d", i))
	}
	c.Close()
	if r := h.run("", "audit", "archive"); r.code != 1 || !strings.Contains(r.stderr, "keyhole stop") {
		t.Fatalf("audit archive beside a broker = exit %d %q; want a refusal naming keyhole stop", r.code, r.stderr)
	}
	h.ok("", "stop")

	// Cut the newest entry, as a crash of the disk or an intruder might.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(h.dir, "data", "keyhole", "audit.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`DELETE FROM entries WHERE seq = (SELECT max(seq) FROM entries)`)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if r := h.run("", "stdio", "--scope", "triage"); r.code != 1 || !strings.Contains(r.stderr, "does not match its checkpoint") {
		t.Fatalf("stdio on a cut log = exit %d %q; want the broker's refusal", r.code, r.stderr)
	}
	if r := h.run("", "audit", "verify"); r.code != 1 || !strings.Contains(r.stdout, "TAMPERED") {
		t.Fatalf("audit verify of a cut log = exit %d %q", r.code, r.stdout)
	}

	r := h.ok("", "audit", "archive")
	m := regexp.MustCompile(`head seq (\d+)\) to (\S+); it is TAMPERED`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("audit archive = %q; want the archive dir, the head it kept and that it is tampered", r.stdout)
	}
	head, m := m[1], m[1:]
	if r := h.run("", "audit", "verify", "--archive", m[1]); r.code != 1 || !strings.Contains(r.stdout, "truncated") {
		t.Fatalf("audit verify --archive = exit %d %q; want the archived log verified with its key, and its cut reported", r.code, r.stdout)
	}
	if r := h.ok("", "audit", "verify"); !strings.Contains(r.stdout, "1 entries") {
		t.Fatalf("audit verify of the new chain = %q; want its first record only", r.stdout)
	}
	c = h.stdioClient(t)
	defer c.Close()
	if res, err := call(c, "/issues/9"); err != nil || res.IsError {
		t.Fatalf("a call after the archive: %v %+v", err, res)
	}
	var first struct{ Tool, Reason string }
	if err := json.Unmarshal([]byte(h.ok("", "audit", "show", "1").stdout), &first); err != nil || first.Tool != "keyhole.audit.archive" || !strings.Contains(first.Reason, m[1]) || !strings.Contains(first.Reason, "head seq "+head+" mac ") {
		t.Fatalf("the new chain's first record = %+v (%v); want keyhole.audit.archive naming the archived head", first, err)
	}
}
