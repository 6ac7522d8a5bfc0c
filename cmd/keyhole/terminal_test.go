package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

// forged is the tool name of issue 14's forged row: a newline that starts
// a fake allowed record, and an escape that hides what follows.
const forged = "nope\n9999  14:00:00.000  ses_forged…  echo  GET  /b/harmless  allow  200  1ms\x1b[8m"

// TestOperatorsTerminalEscapesAgentChosenText: an agent-chosen tool name,
// path and label with newlines, ANSI escapes and bidi overrides print in
// `audit tail` and `session list` as visible escapes on one row each; the
// JSON keeps them exact.
func TestOperatorsTerminalEscapesAgentChosenText(t *testing.T) {
	up, _ := countingUpstream(t)
	h := brokerHome(t, up.URL)
	_, url := startServe(t, h)
	h.ok("", "session", "new", "--scope", "triage", "--label", "night\x1b[2K\u202eyl\u202c")
	_, c := h.httpSession(t, url, "agent\x1b[31m")
	req := mcp.CallToolRequest{}
	req.Params.Name = forged
	c.CallTool(context.Background(), req) // an unknown tool: denied and audited
	call(c, "/issues/\u202etxt.exe")

	table := h.ok("", "audit", "tail").stdout
	for _, bad := range []string{"\x1b", "\u202e", "\n9999"} {
		if strings.Contains(table, bad) {
			t.Fatalf("audit tail prints %q raw:\n%s", bad, table)
		}
	}
	rows := 0
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		if strings.HasPrefix(strings.TrimSpace(line), "9999") {
			t.Fatalf("audit tail shows a forged row: %q", line)
		}
		if strings.Contains(line, `nope\n9999`) && strings.Contains(line, `1ms\x1b[8m`) {
			rows++
		}
	}
	if rows != 1 {
		t.Fatalf("the forged name is not on one row with its escapes visible:\n%s", table)
	}
	if !strings.Contains(table, `/issues/\u202etxt.exe`) {
		t.Fatalf("the bidi override in the path is not shown as an escape:\n%s", table)
	}

	var exact bool
	for _, line := range strings.Split(strings.TrimSpace(h.ok("", "audit", "tail", "--json").stdout), "\n") {
		var r struct{ Tool string }
		json.Unmarshal([]byte(line), &r)
		exact = exact || r.Tool == forged
	}
	if !exact {
		t.Fatal("audit tail --json does not keep the tool name exact")
	}

	list := h.ok("", "session", "list").stdout
	if strings.Contains(list, "\x1b") || strings.Contains(list, "\u202e") || !strings.Contains(list, `night\x1b[2K\u202eyl\u202c`) {
		t.Fatalf("session list prints the label raw:\n%q", list)
	}
}
