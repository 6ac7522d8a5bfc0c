package report

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

func TestBlastRadiusFlagsReachAndUse(t *testing.T) {
	f, _ := triageFixture(t)
	rep, err := BlastRadius(context.Background(), f.src, BlastOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Secrets) != 2 || len(rep.Scopes) != 2 {
		t.Fatalf("BlastRadius = %d secrets, %d scopes; want 2 and 2", len(rep.Secrets), len(rep.Scopes))
	}
	aws, gh := rep.Secrets[0], rep.Secrets[1]
	if want := []string{FlagGrantedNeverUsed, FlagNotRotated90, FlagStale}; !slices.Equal(aws.Flags, want) || aws.Sessions != 0 || aws.UnusedDays != -1 || aws.AgeDays != 101 {
		t.Errorf("aws_ro = %+v, want flags %v, never used", aws, want)
	}
	if want := []string{FlagDeleteReach, FlagGrantedNeverUsed, FlagShared, FlagWriteReach}; !slices.Equal(gh.Flags, want) {
		t.Errorf("gh_token flags = %v, want %v", gh.Flags, want)
	}
	// ses_a (3 reads), ses_b (1 comment), ses_c (1 read of releases); ses_old
	// is 41 days back, outside the window.
	if gh.Sessions != 3 || gh.Calls != 5 || !equalJSON(gh.ScopesUsed, []Counted{{"triage", 2}, {"release", 1}}) ||
		!equalJSON(gh.Agents, []Counted{{"nightly", 1}, {"release-bot", 1}, {"release-notes", 1}}) || gh.UnusedDays != 0 {
		t.Errorf("gh_token use = %+v", gh)
	}
	if len(gh.Scopes) != 2 || gh.Scopes[1].Scope != "triage" || len(gh.Scopes[1].Lines) != 4 {
		t.Fatalf("gh_token scopes = %+v", gh.Scopes)
	}
	if l := gh.Scopes[1].Lines[3]; l.Line != "DELETE /repos/acme/api/issues/*/comments" || !l.Deletes || l.Calls != 0 {
		t.Errorf("the delete line = %+v", l)
	}
	if l := gh.Scopes[1].Lines[1]; l.Calls != 2 || l.Sessions != 1 {
		t.Errorf("GET issues/* = %+v, want 2 calls of 1 session", l)
	}
	release, triage := rep.Scopes[0], rep.Scopes[1]
	if !slices.Equal(release.Flags, []string{FlagShared}) || release.Sessions != 1 || release.Calls != 1 {
		t.Errorf("release = %+v", release)
	}
	if triage.Sessions != 2 || triage.Calls != 4 || triage.Denied != 2 || !slices.Equal(triage.SharedSecrets, []string{"gh_token"}) ||
		!slices.Equal(triage.Secrets, []string{"aws_ro", "gh_token"}) {
		t.Errorf("triage = %+v", triage)
	}

	// One secret, one scope.
	one, err := BlastRadius(context.Background(), f.src, BlastOptions{Secret: "aws_ro"})
	if err != nil || len(one.Secrets) != 1 || len(one.Scopes) != 1 || one.Scopes[0].Scope != "triage" {
		t.Fatalf("BlastRadius(--secret aws_ro) = %+v, %v", one, err)
	}
	one, err = BlastRadius(context.Background(), f.src, BlastOptions{Scope: "release"})
	if err != nil || len(one.Secrets) != 1 || one.Secrets[0].Secret != "gh_token" || len(one.Scopes) != 1 {
		t.Fatalf("BlastRadius(--scope release) = %+v, %v", one, err)
	}
	if _, err := BlastRadius(context.Background(), f.src, BlastOptions{Secret: "nosuch"}); err == nil || !strings.Contains(err.Error(), "aws_ro and gh_token") {
		t.Fatalf("BlastRadius(--secret nosuch) = %v", err)
	}
}

func TestBlastRadiusGraphs(t *testing.T) {
	f, _ := triageFixture(t)
	rep, err := BlastRadius(context.Background(), f.src, BlastOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for format, want := range map[string][]string{
		"mermaid": {"flowchart LR", `scope_triage(["scope triage"])`, "scope_triage -->|delete| tool_github", "tool_github --> secret_gh_5f_token",
			"secret_gh_5f_token --> upstream_api_2e_github_2e_com", `secret gh_token<br/>delete_reach, shared, write_reach`},
		"dot": {"digraph blast_radius {", `scope_release -> tool_github [label="read"];`, "tool_archive -> secret_aws_5f_ro;",
			`[label="secret aws_ro\nnot_rotated_90d, stale", shape=cylinder]`},
	} {
		var b bytes.Buffer
		if err := rep.WriteGraph(&b, format); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s graph does not hold %q:\n%s", format, w, b.String())
			}
		}
	}
	if err := rep.WriteGraph(&bytes.Buffer{}, "svg"); err == nil {
		t.Fatal("WriteGraph(svg) = nil, want an error")
	}
}
