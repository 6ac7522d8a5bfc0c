package console

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/keyhole-dev/keyhole/server/report"
)

// The reports' pages: a session's post-mortem and the blast radius. The
// console renders what server/report computes, from the same sources the
// report commands read.

// reportSources are what a report reads: the audit log, the config, the
// vault's metadata (never a value) and the stored sessions.
func (c *Console) reportSources() (*report.Sources, error) {
	metas, err := c.o.Secrets()
	if err != nil {
		return nil, err
	}
	src := &report.Sources{Log: c.o.Audit, Config: c.o.Config(), Secrets: metas, Now: c.o.Now()}
	if list, err := c.o.Sessions.List(true); err == nil {
		src.Sessions = list
	} else {
		src.SessionsNote = "the session records could not be read: " + err.Error()
	}
	return src, nil
}

// postMortem is a session's report as its page shows it.
type postMortem struct {
	R *report.SessionReport
	// Facts are the numbers behind each answer, as indented JSON.
	Facts []string
	Err   string
}

// sessionReport computes the post-mortem of session id, at the call
// incident (0: its last call).
func (c *Console) sessionReport(ctx context.Context, id string, incident uint64) *postMortem {
	pm := &postMortem{}
	src, err := c.reportSources()
	if err == nil {
		pm.R, err = report.Session(ctx, src, id, report.SessionOptions{Incident: incident})
	}
	if err != nil {
		pm.Err = err.Error()
		return pm
	}
	for _, q := range pm.R.Questions {
		var buf bytes.Buffer
		b, _ := json.Marshal(q.Facts)
		json.Indent(&buf, b, "", "  ")
		pm.Facts = append(pm.Facts, buf.String())
	}
	return pm
}
