package audit

import (
	"reflect"
	"testing"
	"time"
)

func TestActivityCountsCallsAndDenialsPerMinute(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	// Minute 0: a denial and an allowed call (an intent and its outcome,
	// counted once); minute 2: two denials; minute 3: one allowed call.
	mustWrite(t, l, denied("s1", "github"))
	mustCall(t, l, allowed("s1", "github"), 200)
	f.clock.Add(2 * time.Minute)
	mustWrite(t, l, denied("s1", "github"))
	mustWrite(t, l, denied("s2", "archive"))
	f.clock.Add(time.Minute)
	mustCall(t, l, allowed("s2", "github"), 500)

	got, err := l.Activity(t0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Minute{
		{Start: t0.Truncate(time.Minute), Calls: 2, Denied: 1},
		{Start: t0.Add(2 * time.Minute).Truncate(time.Minute), Calls: 2, Denied: 2},
		{Start: t0.Add(3 * time.Minute).Truncate(time.Minute), Calls: 1, Denied: 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Activity(t0) = %+v, want %+v", got, want)
	}
	got, err = l.Activity(t0.Add(3 * time.Minute))
	if err != nil || len(got) != 1 || got[0].Calls != 1 {
		t.Fatalf("Activity(t0+3m) = %+v, %v; want the last minute only", got, err)
	}
	if got, err := l.Activity(t0.Add(time.Hour)); err != nil || len(got) != 0 {
		t.Fatalf("Activity(an hour on) = %+v, %v; want nothing", got, err)
	}
}
