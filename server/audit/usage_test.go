package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// usageLog writes a known mix of calls: two credentials, two scopes,
// three sessions, allowed calls under two grants, denials, a refused call
// of an unknown tool, and calls before and after a window.
func usageLog(t *testing.T, l *Log) {
	t.Helper()
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	call := func(min int, session, scope, tool, cred, grant string) {
		rec := Record{Time: at(min), Session: session, Scope: scope, Tool: tool, Kind: "http", Method: "GET", Path: "/x/" + strconv.Itoa(min),
			Decision: Allow, Grant: grant, Credential: cred, CredVersion: 1}
		mustCall(t, l, rec, 200)
	}
	deny := func(min int, session, scope, tool, cred string) {
		mustWrite(t, l, Record{Time: at(min), Session: session, Scope: scope, Tool: tool, Kind: "http", Method: "DELETE", Path: "/x",
			Decision: Deny, Code: "not_granted", Reason: "DELETE /x is not granted", Credential: cred})
	}
	call(0, "s1", "triage", "github", "gh_token", "github: GET /x/*")
	call(1, "s1", "triage", "github", "gh_token", "github: GET /x/*")
	call(2, "s1", "triage", "github", "gh_token", "github: POST /x/*")
	deny(3, "s1", "triage", "github", "gh_token")
	call(10, "s2", "triage", "github", "gh_token", "github: GET /x/*")
	call(11, "s2", "triage", "bucket", "aws_ro", "bucket: list reports/")
	mustWrite(t, l, Record{Time: at(12), Session: "s2", Scope: "triage", Tool: "nosuch", Decision: Deny, Code: "unknown_tool", Reason: "unknown"})
	call(20, "s3", "release", "github", "gh_token", "github: GET /x/*")
	deny(21, "s3", "release", "github", "gh_token")
}

func collectUsage(t *testing.T, l *Log, f UsageFilter) []Usage {
	t.Helper()
	var out []Usage
	if err := l.Usage(context.Background(), f, func(u Usage) error { out = append(out, u); return nil }); err != nil {
		t.Fatalf("Usage(%+v) = %v", f, err)
	}
	return out
}

// key is a group as a test compares it.
func key(u Usage) string {
	return fmt.Sprintf("%s|%s|%s|%s|%d|%s|%s", u.Credential, u.Scope, u.Session, u.Grant, u.Calls,
		u.First.Sub(t0).Round(time.Minute), u.Last.Sub(t0).Round(time.Minute))
}

func TestUsageGroupsCallsByCredentialScopeSessionAndGrant(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	usageLog(t, l)
	tests := map[string]struct {
		f    UsageFilter
		want []string
	}{
		"everything": {UsageFilter{}, []string{
			"|triage|s2||1|12m0s|12m0s",
			"aws_ro|triage|s2|bucket: list reports/|1|11m0s|11m0s",
			"gh_token|release|s3||1|21m0s|21m0s",
			"gh_token|release|s3|github: GET /x/*|1|20m0s|20m0s",
			"gh_token|triage|s1||1|3m0s|3m0s",
			"gh_token|triage|s1|github: GET /x/*|2|0s|1m0s",
			"gh_token|triage|s1|github: POST /x/*|1|2m0s|2m0s",
			"gh_token|triage|s2|github: GET /x/*|1|10m0s|10m0s",
		}},
		"one credential": {UsageFilter{Credentials: []string{"aws_ro"}}, []string{
			"aws_ro|triage|s2|bucket: list reports/|1|11m0s|11m0s",
		}},
		"one scope, two credentials": {UsageFilter{Credentials: []string{"aws_ro", "gh_token"}, Scope: "release"}, []string{
			"gh_token|release|s3||1|21m0s|21m0s",
			"gh_token|release|s3|github: GET /x/*|1|20m0s|20m0s",
		}},
		"a window": {UsageFilter{Since: t0.Add(time.Minute), Until: t0.Add(11 * time.Minute)}, []string{
			"gh_token|triage|s1||1|3m0s|3m0s",
			"gh_token|triage|s1|github: GET /x/*|1|1m0s|1m0s",
			"gh_token|triage|s1|github: POST /x/*|1|2m0s|2m0s",
			"gh_token|triage|s2|github: GET /x/*|1|10m0s|10m0s",
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, u := range collectUsage(t, l, tc.f) {
				got = append(got, key(u))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Usage(%+v) =\n%q\nwant\n%q", tc.f, got, tc.want)
			}
		})
	}
	// Each group names the seq of its first call.
	for _, u := range collectUsage(t, l, UsageFilter{Scope: "triage", Credentials: []string{"gh_token"}}) {
		r, err := l.Get(u.Seq)
		if err != nil || r.Session != u.Session || r.Grant != u.Grant || !r.Time.Equal(u.First) {
			t.Fatalf("group %s names seq %d = %+v, %v", key(u), u.Seq, r, err)
		}
	}
	l.Close()
}

// TestUsageRefusesAnIndexThatDisagreesWithTheEntries: the index is outside
// the chain; an index whose columns were swapped in the schema (so that it
// reads sessions as grants) is caught by the check of each group's first
// entry.
func TestUsageRefusesAnIndexThatDisagreesWithTheEntries(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	usageLog(t, l)
	l.Close()
	f.tamper(func(db *sql.DB) error {
		for _, q := range []string{
			`PRAGMA writable_schema = ON`,
			`UPDATE sqlite_master SET sql = replace(sql, 'session, "grant"', '"grant", session') WHERE name = 'entries_usage'`,
			`PRAGMA writable_schema = OFF`,
		} {
			if _, err := db.Exec(q); err != nil {
				return err
			}
		}
		return nil
	})
	r := f.openReadOnly()
	err := r.Usage(context.Background(), UsageFilter{}, func(Usage) error { return nil })
	if !errors.Is(err, ErrIndexMismatch) {
		t.Fatalf("Usage over an index that reads sessions as grants = %v, want ErrIndexMismatch", err)
	}
}

// TestSchemaVersion1IsReadAsItIsAndUpgradedByAWriter: a log written before
// the usage index is read by a reader as it is (Usage through the
// entries), and a writable Open upgrades it to the schema a new file has.
func TestSchemaVersion1IsReadAsItIsAndUpgradedByAWriter(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	usageLog(t, l)
	want := collectUsage(t, l, UsageFilter{})
	wantRecs := mustQuery(t, l, Filter{})
	l.Close()

	// The same entries and meta in a file of schema version 1.
	old := f.path + ".v1"
	db, err := sql.Open("sqlite", "file:"+old)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	stmts := append(slices.Clone(schema), `PRAGMA user_version = 1`, `PRAGMA journal_mode = WAL`,
		`ATTACH DATABASE 'file:`+f.path+`' AS cur`,
		`INSERT INTO entries(seq, entry) SELECT seq, entry FROM cur.entries`,
		`INSERT INTO meta SELECT * FROM cur.meta`, `DETACH DATABASE cur`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(f.path + suffix)
	}
	if err := os.Rename(old, f.path); err != nil {
		t.Fatal(err)
	}
	os.Remove(old + "-wal")
	os.Remove(old + "-shm")

	r := f.openReadOnly()
	if got := collectUsage(t, r, UsageFilter{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("Usage of a version 1 file = %+v, want %+v", got, want)
	}
	if rep := mustVerify(t, r); !rep.OK {
		t.Fatalf("Verify of a version 1 file = %+v", rep)
	}
	r.Close()

	l = f.open()
	if got := collectUsage(t, l, UsageFilter{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("Usage after the upgrade = %+v, want %+v", got, want)
	}
	if got := mustQuery(t, l, Filter{}); !reflect.DeepEqual(got, wantRecs) {
		t.Fatalf("Query after the upgrade = %+v, want %+v", got, wantRecs)
	}
	if rep := mustVerify(t, l); !rep.OK {
		t.Fatalf("Verify after the upgrade = %+v", rep)
	}
	l.Close()
	var version int
	f.tamper(func(db *sql.DB) error { return db.QueryRow(`PRAGMA user_version`).Scan(&version) })
	if version != schemaVersion {
		t.Fatalf("user_version after the upgrade = %d, want %d", version, schemaVersion)
	}
	// A writable Open checks the schema: the upgraded one is the one a new
	// file gets, so the log opens again.
	f.open().Close()
}

func collectCalls(t *testing.T, l *Log, f CallFilter) []Call {
	t.Helper()
	var out []Call
	if err := l.Calls(context.Background(), f, func(c Call) error { out = append(out, c); return nil }); err != nil {
		t.Fatalf("Calls(%+v) = %v", f, err)
	}
	return out
}

// TestCallsAgreesWithStream: every call Calls reads says what the full
// record says, in seq order, across pages, with a window that a clock
// going back made out of order.
func TestCallsAgreesWithStream(t *testing.T) {
	defer func(p int) { callsPage = p }(callsPage)
	callsPage = 100
	f := newFixture(t)
	l := f.open()
	n := 2*pageSize + 37
	for i := range n {
		// Groups of calls share a time, so pages end inside a group.
		rec := allowed("s"+strconv.Itoa(i%3), "github")
		rec.Time = t0.Add(time.Duration(i/100) * time.Second)
		rec.Path = "/repos/acme/api/issues/" + strconv.Itoa(i)
		if i%5 == 0 {
			rec = denied("s"+strconv.Itoa(i%3), "github")
			rec.Time = t0.Add(time.Duration(i/100) * time.Second)
			mustWrite(t, l, rec)
			continue
		}
		mustCall(t, l, rec, 200)
	}
	// A clock that went back: a call inside the window recorded after
	// calls past it, and one before the window.
	late := allowed("s1", "github")
	late.Time = t0.Add(5 * time.Second)
	mustCall(t, l, late, 200)
	early := denied("s2", "github")
	early.Time = t0
	mustWrite(t, l, early)
	recs := mustQuery(t, l, Filter{})
	bySeq := recs
	check := func(name string, got []Call, want []Record) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d calls, want %d", name, len(got), len(want))
		}
		for i, c := range got {
			r := want[i]
			if c.Seq != r.Seq || !c.Time.Equal(r.Time) || c.Session != r.Session || c.Scope != r.Scope || c.Tool != r.Tool ||
				c.Method != r.Method || c.Path != r.Path || c.Code != r.Code || c.Grant != r.Grant || c.Credential != r.Credential || c.Kind != r.Kind {
				t.Fatalf("%s: call %d = %+v, want record %+v", name, i, c, r)
			}
		}
	}
	check("all", collectCalls(t, l, CallFilter{}), bySeq)
	var s1 []Record
	for _, r := range recs {
		if r.Session == "s1" {
			s1 = append(s1, r)
		}
	}
	check("session", collectCalls(t, l, CallFilter{Session: "s1"}), s1)
	var window, allowedOnly []Record
	for _, r := range bySeq {
		if !r.Time.Before(t0.Add(3*time.Second)) && r.Time.Before(t0.Add(7*time.Second)) {
			window = append(window, r)
			if r.Grant != "" {
				allowedOnly = append(allowedOnly, r)
			}
		}
	}
	check("window", collectCalls(t, l, CallFilter{Since: t0.Add(3 * time.Second), Until: t0.Add(7 * time.Second)}), window)
	check("allowed in the window", collectCalls(t, l, CallFilter{Since: t0.Add(3 * time.Second), Until: t0.Add(7 * time.Second), Allowed: true}), allowedOnly)
	if got := collectCalls(t, l, CallFilter{Scope: "nosuch"}); len(got) != 0 {
		t.Fatalf("Calls of another scope = %d calls", len(got))
	}
	// fn's error stops the read, several pages before its end.
	stop := errors.New("stop")
	count := 0
	err := l.Calls(context.Background(), CallFilter{Since: t0}, func(Call) error {
		if count++; count == 150 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || count != 150 {
		t.Fatalf("Calls whose fn fails at the 150th call = %v after %d calls", err, count)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Calls(ctx, CallFilter{Since: t0}, func(Call) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Calls with a cancelled context = %v", err)
	}
	l.Close()
}

func TestParseTimeFastAgreesWithTimeParse(t *testing.T) {
	for _, s := range []string{
		"2026-03-01T12:00:00.123456789Z", "1999-12-31T23:59:59.999999999Z", "2024-02-29T00:00:00.000000000Z",
		"2026-02-30T00:00:00.000000000Z", "2026-13-01T00:00:00.000000000Z", "2026-03-01T12:00:00Z", "", "x026-03-01T12:00:00.123456789Z",
	} {
		if got, want := parseTimeFast(s), parseOptTime(s); !got.Equal(want) {
			t.Errorf("parseTimeFast(%q) = %v, want %v", s, got, want)
		}
	}
	now := time.Now()
	if got := parseTimeFast(formatTime(now)); !got.Equal(now) {
		t.Errorf("parseTimeFast(formatTime(%v)) = %v", now, got)
	}
}
