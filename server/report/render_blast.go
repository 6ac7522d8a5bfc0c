package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the blast radius as people read it in a terminal.
func (r *BlastReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("Blast radius: use counted from %s to %s\n", stamp(r.Window.Since), stamp(r.Window.Until))
	if len(r.Secrets) > 0 {
		ew.printf("\nSecrets\n")
	}
	for _, s := range r.Secrets {
		ew.printf("  %s\n", secretLine(&s, r.Window.Until))
		for _, t := range s.Tools {
			ew.printf("    tool %s (%s → %s, %s)\n", clean(t.Tool), t.Kind, clean(t.Upstream), strings.Join(t.Kinds, "/"))
		}
		for _, sl := range s.Scopes {
			ew.printf("    scope %s:\n", clean(sl.Scope))
			writeLines(ew, "      ", sl.Lines, false)
		}
		ew.printf("    %s\n", useLine(s.Calls, s.Sessions, s.ScopesUsed, s.Agents))
	}
	if len(r.Scopes) > 0 {
		ew.printf("\nScopes\n")
	}
	for _, s := range r.Scopes {
		ew.printf("  %s\n", scopeLine(&s))
		writeLines(ew, "    ", s.Lines, true)
		ew.printf("    %s\n", useLine(s.Calls, s.Sessions, nil, s.Agents))
	}
	return ew.err
}

// WriteMarkdown writes the blast radius for a document.
func (r *BlastReport) WriteMarkdown(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("## Blast radius\n\nUse counted from %s to %s.\n", stamp(r.Window.Since), stamp(r.Window.Until))
	if len(r.Secrets) > 0 {
		ew.printf("\n### Secrets\n")
	}
	for _, s := range r.Secrets {
		ew.printf("\n#### `%s`\n\n%s\n\n", md(s.Secret), md(secretLine(&s, r.Window.Until)))
		for _, t := range s.Tools {
			ew.printf("- tool `%s` (%s → `%s`, %s)\n", md(t.Tool), t.Kind, md(t.Upstream), strings.Join(t.Kinds, "/"))
		}
		ew.printf("- %s\n\n| scope | tool | granted | reach | use in the window |\n| --- | --- | --- | --- | --- |\n", md(useLine(s.Calls, s.Sessions, s.ScopesUsed, s.Agents)))
		for _, sl := range s.Scopes {
			for _, l := range sl.Lines {
				ew.printf("| `%s` | `%s` | `%s` | %s | %s |\n", md(sl.Scope), md(l.Tool), md(l.Line), lineFlags(l), lineUseText(l))
			}
		}
	}
	if len(r.Scopes) > 0 {
		ew.printf("\n### Scopes\n")
	}
	for _, s := range r.Scopes {
		ew.printf("\n#### `%s`\n\n%s\n\n- %s\n\n| secret | tool | granted | reach | use in the window |\n| --- | --- | --- | --- | --- |\n",
			md(s.Scope), md(scopeLine(&s)), md(useLine(s.Calls, s.Sessions, nil, s.Agents)))
		for _, l := range s.Lines {
			ew.printf("| `%s` | `%s` | `%s` | %s | %s |\n", md(l.Secret), md(l.Tool), md(l.Line), lineFlags(l), lineUseText(l))
		}
	}
	return ew.err
}

func secretLine(s *SecretRadius, now time.Time) string {
	parts := []string{s.Secret}
	if s.InVault {
		parts[0] += fmt.Sprintf(" v%d", s.Version)
		parts = append(parts, fmt.Sprintf("created %s (%s ago)", stamp(s.Created), human(now.Sub(s.Created))))
		if !s.Rotated.IsZero() {
			parts = append(parts, "rotated "+stamp(s.Rotated))
		} else {
			parts = append(parts, "never rotated")
		}
	} else {
		parts = append(parts, "not in the vault")
	}
	switch s.UnusedDays {
	case -1:
		parts = append(parts, "never used")
	default:
		parts = append(parts, fmt.Sprintf("last used %s", stamp(maxTime(s.LastUsed, s.LastCall))))
	}
	return strings.Join(parts, " · ") + " · flags: " + flagText(s.Flags)
}

func scopeLine(s *ScopeRadius) string {
	parts := []string{s.Scope}
	if s.Description != "" {
		parts[0] += fmt.Sprintf(" (%q)", clean(s.Description))
	}
	parts = append(parts, "ttl "+human(time.Duration(s.TTLSeconds)*time.Second), "secrets "+strings.Join(s.Secrets, ", "))
	if len(s.SharedSecrets) > 0 {
		parts = append(parts, "shared with other scopes: "+strings.Join(s.SharedSecrets, ", "))
	}
	if s.Denied > 0 {
		parts = append(parts, plural(s.Denied, "denied call"))
	}
	return strings.Join(parts, " · ") + " · flags: " + flagText(s.Flags)
}

func flagText(f []string) string {
	if len(f) == 0 {
		return "none"
	}
	return strings.Join(f, ", ")
}

func useLine(calls, sessions int, scopes, agents []Counted) string {
	if sessions == 0 {
		return "no allowed call in the window"
	}
	s := fmt.Sprintf("used in the window: %s of %s", plural(calls, "allowed call"), plural(sessions, "session"))
	var who []string
	if len(scopes) > 0 {
		who = append(who, "scopes "+clean(listCounted(scopes, 5)))
	}
	if len(agents) > 0 {
		who = append(who, "agents "+clean(listCounted(agents, 5)))
	}
	if len(who) > 0 {
		s += " (" + strings.Join(who, "; ") + ")"
	}
	return s
}

func writeLines(ew *errWriter, indent string, lines []LineUse, secret bool) {
	tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
	for _, l := range lines {
		name := clean(l.Tool)
		if secret {
			name = l.Secret + " via " + name
		}
		fmt.Fprintf(tw, "%s%s: %s\t%s\t%s\n", indent, name, clean(l.Line), lineFlags(l), lineUseText(l))
	}
	tw.Flush()
}

func lineFlags(l LineUse) string {
	return grantFlags(GrantUse{Writes: l.Writes, Deletes: l.Deletes, AnyDepth: l.AnyDepth, Broad: l.Broad})
}

func lineUseText(l LineUse) string {
	if l.Calls == 0 {
		return "never used"
	}
	return fmt.Sprintf("%s, %s", plural(l.Calls, "call"), plural(l.Sessions, "session"))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// WriteGraph draws scopes → tools → secrets → upstreams as Mermaid
// ("mermaid") or Graphviz ("dot"). Edges from a scope to a tool say what
// it may do there (read, write, delete); nodes of flagged secrets say so.
func (r *BlastReport) WriteGraph(w io.Writer, format string) error {
	if format != "mermaid" && format != "dot" {
		return fmt.Errorf("report: graph format %q: want mermaid or dot", format)
	}
	type edge struct{ from, to, label string }
	var nodes [][3]string // id, label, shape
	seen := map[string]bool{}
	node := func(id, label, shape string) string {
		if !seen[id] {
			seen[id] = true
			nodes = append(nodes, [3]string{id, label, shape})
		}
		return id
	}
	var edges []edge
	edgeSeen := map[edge]bool{}
	add := func(e edge) {
		if !edgeSeen[e] {
			edgeSeen[e] = true
			edges = append(edges, e)
		}
	}
	for _, s := range r.Secrets {
		label := "secret " + s.Secret
		if fl := slices.DeleteFunc(slices.Clone(s.Flags), func(f string) bool { return f == FlagGrantedNeverUsed }); len(fl) > 0 {
			label += "\n" + strings.Join(fl, ", ")
		}
		sid := node(graphID("secret", s.Secret), label, "secret")
		for _, t := range s.Tools {
			tid := node(graphID("tool", t.Tool), "tool "+t.Tool, "tool")
			add(edge{tid, sid, ""})
			add(edge{sid, node(graphID("upstream", t.Upstream), t.Upstream, "upstream"), ""})
		}
		for _, sl := range s.Scopes {
			reach := map[string]string{}
			for _, l := range sl.Lines {
				lvl := "read"
				if l.Deletes {
					lvl = "delete"
				} else if l.Writes {
					lvl = "write"
				}
				if rank(lvl) > rank(reach[l.Tool]) {
					reach[l.Tool] = lvl
				}
			}
			scid := node(graphID("scope", sl.Scope), "scope "+sl.Scope, "scope")
			for _, t := range slices.Sorted(maps.Keys(reach)) {
				add(edge{scid, graphID("tool", t), reach[t]})
			}
		}
	}
	ew := &errWriter{w: w}
	if format == "mermaid" {
		ew.printf("flowchart LR\n")
		for _, n := range nodes {
			open, close := "[", "]"
			switch n[2] {
			case "secret":
				open, close = "[(", ")]"
			case "upstream":
				open, close = "{{", "}}"
			case "scope":
				open, close = "([", "])"
			}
			ew.printf("  %s%s\"%s\"%s\n", n[0], open, mermaidText(n[1]), close)
		}
		for _, e := range edges {
			if e.label != "" {
				ew.printf("  %s -->|%s| %s\n", e.from, e.label, e.to)
			} else {
				ew.printf("  %s --> %s\n", e.from, e.to)
			}
		}
		return ew.err
	}
	ew.printf("digraph blast_radius {\n  rankdir=LR;\n")
	shapes := map[string]string{"scope": "box, style=rounded", "tool": "box", "secret": "cylinder", "upstream": "hexagon"}
	for _, n := range nodes {
		ew.printf("  %s [label=%s, shape=%s];\n", n[0], dotText(n[1]), shapes[n[2]])
	}
	for _, e := range edges {
		if e.label != "" {
			ew.printf("  %s -> %s [label=%s];\n", e.from, e.to, dotText(e.label))
		} else {
			ew.printf("  %s -> %s;\n", e.from, e.to)
		}
	}
	ew.printf("}\n")
	return ew.err
}

func rank(level string) int {
	return map[string]int{"": 0, "read": 1, "write": 2, "delete": 3}[level]
}

// graphID is a node id both Mermaid and Graphviz take: letters, digits
// and underscores, unique per kind and name.
func graphID(kind, name string) string {
	var b strings.Builder
	b.WriteString(kind)
	b.WriteByte('_')
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, "_%x_", r)
		}
	}
	return b.String()
}

// mermaidText and dotText quote a label; its lines are cleaned one by one.
func mermaidText(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(clean(l), `"`, "#quot;")
	}
	return strings.Join(lines, "<br/>")
}

func dotText(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(clean(l))
	}
	return `"` + strings.Join(lines, `\n`) + `"`
}
