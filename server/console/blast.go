package console

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/server/report"
)

// The blast radius: what each secret and scope can reach, who used it,
// and the graph of scopes → tools → secrets → upstreams drawn as SVG on
// the server (no script, no library).

type blastData struct {
	R      *report.BlastReport
	Graph  graph
	Secret string
	Scope  string
	Since  string
	// Secrets and Scopes are the choices of the filter.
	Secrets, Scopes []string
	Err             string
}

// blastWindows are the windows the page offers.
var blastWindows = map[string]time.Duration{"7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour, "90d": 90 * 24 * time.Hour}

func (c *Console) blastRadius(w http.ResponseWriter, r *http.Request, s consoleSession) {
	q := r.URL.Query()
	d := blastData{Secret: q.Get("secret"), Scope: q.Get("scope"), Since: q.Get("since")}
	if _, ok := blastWindows[d.Since]; !ok {
		d.Since = "30d"
	}
	cfg := c.o.Config()
	d.Scopes = cfg.Policy.ScopeNames()
	src, err := c.reportSources()
	if err == nil {
		for _, m := range src.Secrets {
			d.Secrets = append(d.Secrets, m.Name)
		}
		for _, t := range cfg.Tools {
			if n := t.SecretName(); !slices.Contains(d.Secrets, n) {
				d.Secrets = append(d.Secrets, n)
			}
		}
		slices.Sort(d.Secrets)
		d.R, err = report.BlastRadius(r.Context(), src, report.BlastOptions{Secret: d.Secret, Scope: d.Scope, Since: blastWindows[d.Since]})
	}
	if err != nil {
		d.Err = err.Error()
	} else {
		d.Graph = drawGraph(d.R)
	}
	c.render(w, http.StatusOK, s, "blast", "Blast radius", "blast", d)
}

// flagWords say a report's flags in words.
var flagWords = map[string]string{
	report.FlagWriteReach:       "write reach",
	report.FlagDeleteReach:      "delete reach",
	report.FlagBroadPattern:     "broad pattern",
	report.FlagShared:           "shared by several scopes",
	report.FlagStale:            "stale",
	report.FlagNotRotated90:     "not rotated in 90 days",
	report.FlagGrantedNeverUsed: "granted, never used",
	report.FlagNotInVault:       "not in the vault",
}

func flagText(f string) string {
	if w, ok := flagWords[f]; ok {
		return w
	}
	return f
}

// graph is the blast radius laid out in four columns: scopes, tools,
// secrets, upstreams.
type graph struct {
	Width, Height int
	Columns       []column
	Nodes         []gnode
	Edges         []gedge
}

type column struct {
	X     int
	Title string
}

type gnode struct {
	X, Y, W, H int
	Kind       string // scope, tool, secret, upstream
	Label      string // shown (cut to fit)
	Full       string // the whole name and flags, in its <title>
	Flags      string
	Flagged    bool
}

type gedge struct {
	Path   string
	Level  string // read, write or delete (scope → tool); "" otherwise
	LX, LY int    // where the level is written
	from   int
	to     int
}

const (
	nodeW, nodeH = 210, 38
	colGap       = 270
	rowGap       = 58
	margin       = 24
	headH        = 28
	maxLabel     = 26
)

// drawGraph lays out the report's secrets (with the scopes that reach
// them through their tools, and where their tools call) as WriteGraph
// draws them in Mermaid or Graphviz: an edge from a scope to a tool says
// the most it may do there.
func drawGraph(r *report.BlastReport) graph {
	kinds := []string{"scope", "tool", "secret", "upstream"}
	type key struct{ kind, name string }
	at := map[key]int{}
	var g graph
	count := map[string]int{}
	node := func(kind, name, flags string) int {
		k := key{kind, name}
		if i, ok := at[k]; ok {
			return i
		}
		col := slices.Index(kinds, kind)
		n := gnode{X: margin + col*colGap, Y: margin + headH + count[kind]*rowGap, W: nodeW, H: nodeH, Kind: kind,
			Label: cut(visible(name), maxLabel), Full: kind + " " + visible(name), Flags: flags, Flagged: flags != ""}
		if flags != "" {
			n.Full += ": " + flags
		}
		count[kind]++
		at[k] = len(g.Nodes)
		g.Nodes = append(g.Nodes, n)
		return at[k]
	}
	type ekey struct{ from, to int }
	seen := map[ekey]int{}
	edge := func(from, to int, level string) {
		if i, ok := seen[ekey{from, to}]; ok {
			if rank(level) > rank(g.Edges[i].Level) {
				g.Edges[i].Level = level
			}
			return
		}
		seen[ekey{from, to}] = len(g.Edges)
		g.Edges = append(g.Edges, gedge{Level: level, from: from, to: to})
	}
	for _, s := range r.Secrets {
		var flags []string
		for _, f := range s.Flags {
			if f != report.FlagGrantedNeverUsed {
				flags = append(flags, flagText(f))
			}
		}
		sid := node("secret", s.Secret, strings.Join(flags, ", "))
		for _, t := range s.Tools {
			edge(node("tool", t.Tool, ""), sid, "")
			edge(sid, node("upstream", t.Upstream, ""), "")
		}
		for _, sl := range s.Scopes {
			scid := node("scope", sl.Scope, "")
			for _, l := range sl.Lines {
				lvl := "read"
				if l.Deletes {
					lvl = "delete"
				} else if l.Writes {
					lvl = "write"
				}
				edge(scid, node("tool", l.Tool, ""), lvl)
			}
		}
	}
	for i := range g.Edges {
		e := &g.Edges[i]
		a, b := g.Nodes[e.from], g.Nodes[e.to]
		x1, y1 := a.X+a.W, a.Y+a.H/2
		x2, y2 := b.X, b.Y+b.H/2
		mid := (x1 + x2) / 2
		e.Path = fmt.Sprintf("M%d %d C%d %d, %d %d, %d %d", x1, y1, mid, y1, mid, y2, x2, y2)
		e.LX, e.LY = mid, (y1+y2)/2-4
	}
	rows := 1
	for _, k := range kinds {
		rows = max(rows, count[k])
	}
	g.Width = margin*2 + 3*colGap + nodeW
	g.Height = margin*2 + headH + rows*rowGap
	for i, title := range []string{"Scopes", "Tools", "Secrets", "Upstreams"} {
		g.Columns = append(g.Columns, column{X: margin + i*colGap, Title: title})
	}
	return g
}

func rank(level string) int {
	return map[string]int{"": 0, "read": 1, "write": 2, "delete": 3}[level]
}

// cut shortens s to n characters, with an ellipsis.
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
