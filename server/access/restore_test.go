package access

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

func TestApprovalSurvivesARestartWithinItsTTL(t *testing.T) {
	e := newTestEnv(t, nil)
	open := e.m.Ask(context.Background(), ask(noWait))
	approved := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/other" }))
	e.m.Approve(approved.ID, "os:alice", "ok", false, e.ss)
	e.clock.Advance(5 * time.Minute)
	e.restart()

	if r, err := e.m.Show(open.ID); err != nil || r.State != StateOpen || r.Waiting != 0 {
		t.Fatalf("open request after a restart = %+v, %v", r, err)
	}
	if ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/other" })); !ans.Approved || ans.ID != approved.ID {
		t.Fatalf("the approved request repeated after a restart = %+v", ans)
	}
	// An open request can still be answered, and a held call joins it.
	r, out := e.held(ask())
	if r.ID != open.ID {
		t.Fatalf("the repeat after a restart opened %s instead of joining %s", r.ID, open.ID)
	}
	e.m.Approve(open.ID, "os:alice", "", false, e.ss)
	if ans := answer(t, out); !ans.Approved || ans.ID != open.ID {
		t.Fatalf("the call held after a restart = %+v", ans)
	}
	if got := e.events(approved.ID); !slices.Equal(got, []string{"request", "approve", "use"}) {
		t.Fatalf("audit of %s = %v", approved.ID, got)
	}
}

func TestApprovalPastItsTTLAtARestartIsExpired(t *testing.T) {
	e := newTestEnv(t, nil)
	a := e.m.Ask(context.Background(), ask(noWait))
	e.m.Approve(a.ID, "os:alice", "", false, e.ss)
	b := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/other" }))
	e.m.Close()
	e.clock.Advance(11 * time.Minute)
	e.open()
	for _, id := range []string{a.ID, b.ID} {
		if r, _ := e.m.Show(id); r.State != StateExpired {
			t.Fatalf("%s after a restart past its ttl is %s, want expired", id, r.State)
		}
	}
	if got := e.events(a.ID); !slices.Equal(got, []string{"request", "approve", "expire"}) {
		t.Fatalf("audit of %s = %v", a.ID, got)
	}
	if ans := e.m.Ask(context.Background(), ask(noWait)); ans.Approved {
		t.Fatalf("an expired approval was used after a restart: %+v", ans)
	}
}

// A copy of the request file from before an approval was used, put back
// while the broker was down, does not bring the approval back: the audit
// chain shows it used.
func TestRolledBackFileCannotReuseAnApproval(t *testing.T) {
	e := newTestEnv(t, nil)
	a := e.m.Ask(context.Background(), ask(noWait))
	e.m.Approve(a.ID, "os:alice", "", false, e.ss)
	e.m.Close()
	before, err := os.ReadFile(e.opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	e.open()
	if ans := e.m.Ask(context.Background(), ask(noWait)); !ans.Approved {
		t.Fatalf("first use = %+v", ans)
	}
	e.m.Close()
	if err := os.WriteFile(e.opts.Path, before, 0o600); err != nil {
		t.Fatal(err)
	}
	e.open()
	if r, _ := e.m.Show(a.ID); r.State != StateUsed {
		t.Fatalf("after a rollback the request is %s, want used (as the audit shows)", r.State)
	}
	if ans := e.m.Ask(context.Background(), ask(noWait)); ans.Approved {
		t.Fatalf("a rolled-back approval was used twice: %+v", ans)
	}
}

// A record changed on disk without the master key fails its MAC: it is
// dropped, the drop is audited, and nothing of it is trusted.
func TestTamperedRecordIsDropped(t *testing.T) {
	e := newTestEnv(t, nil)
	a := e.m.Ask(context.Background(), ask(noWait))
	keep := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) { a.Call.Path = "/other" }))
	e.m.Close()
	db, err := buntdb.Open(e.opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *buntdb.Tx) error {
		v, err := tx.Get("acr:" + a.ID)
		if err != nil {
			return err
		}
		// Forge an approval: state approved, a later expiry.
		v = strings.Replace(v, `"state":"open"`, `"state":"approved"`, 1)
		_, _, err = tx.Set("acr:"+a.ID, v, nil)
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.open()
	if _, err := e.m.Show(a.ID); err == nil {
		t.Fatalf("a tampered request is still listed")
	}
	if r, err := e.m.Show(keep.ID); err != nil || r.State != StateOpen {
		t.Fatalf("an untouched request after another was tampered = %+v, %v", r, err)
	}
	if ans := e.m.Ask(context.Background(), ask(noWait)); ans.Approved || ans.ID == a.ID {
		t.Fatalf("the forged approval was used: %+v", ans)
	}
	var dropped bool
	for _, rec := range e.records() {
		if rec.Code == "access_tampered" && strings.HasPrefix(rec.Reason, a.ID+": ") {
			dropped = true
		}
	}
	if !dropped {
		t.Fatalf("the drop of %s was not audited: %+v", a.ID, e.records())
	}
}

func TestRequestFileIsPrivate(t *testing.T) {
	e := newTestEnv(t, nil)
	e.m.Ask(context.Background(), ask(noWait))
	fi, err := os.Stat(e.opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", e.opts.Path, fi.Mode().Perm())
	}
}
