package access

import (
	"context"
	"strings"
	"testing"
	"unicode"

	"github.com/keyhole-dev/keyhole/tools"
)

// Text an agent chose cannot forge or hide a line on the operator's
// terminal: control characters, escape sequences, line breaks and
// bidirectional overrides are escaped in every way a request is printed.
func TestTerminalOutputEscapesAgentText(t *testing.T) {
	e := newTestEnv(t, nil)
	hostile := "/x\x1b[2K\n\rFAKE acr_aaaaaaaaaaaaaaaaaaaa open\u202egnp.exe\u2028\x7f"
	ans := e.m.Ask(context.Background(), ask(noWait, func(a *Ask) {
		a.Call.Path = hostile
		a.Call.Query = []tools.Param{{Name: "q\n", Value: "v\x1b]0;title\x07"}}
		a.Call.Body = []byte("line 1\nline 2\x1b[8m")
		a.Client = "editor\x1b[2J"
		a.Label = "run\nforged"
	}))
	r, _ := e.m.Show(ans.ID)
	var out strings.Builder
	WriteTable(&out, []Request{r}, e.clock.Now())
	WriteText(&out, &r, e.clock.Now())
	WriteEvent(&out, Event{Type: EventRequest, Time: e.clock.Now(), Request: r})
	got := out.String()
	for _, c := range got {
		if c != '\n' && (unicode.IsControl(c) || unicode.Is(unicode.Bidi_Control, c) || c == '\u2028') {
			t.Fatalf("terminal output holds %U:\n%q", c, got)
		}
	}
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "FAKE") || strings.HasPrefix(strings.TrimSpace(line), "forged") {
			t.Fatalf("agent text started a line of its own:\n%s", got)
		}
	}
	if !strings.Contains(got, `/x\u001b[2K\u000a\u000dFAKE`) || !strings.Contains(got, "| line 1\n") || !strings.Contains(got, `| line 2\u001b[8m`) {
		t.Fatalf("output does not show the escaped text:\n%s", got)
	}
}
