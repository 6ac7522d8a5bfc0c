package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/keyhole-dev/keyhole/server/access"
)

// Server-sent events: the audit's live tail and the access requests'
// steps, as JSON the script turns into rows and cards with textContent
// (the page's Trusted Types policy allows no HTML from strings).

// heartbeat keeps an idle event stream open through proxies and lets the
// server notice a browser that went away.
const heartbeat = 15 * time.Second

// tailFirst bounds the records a live tail sends when it starts behind.
const tailFirst = 200

// sse writes server-sent events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

// startSSE answers with an event stream, or says why it cannot.
func (c *Console) startSSE(w http.ResponseWriter, r *http.Request) (*sse, func(), bool) {
	f, ok := w.(http.Flusher)
	if !ok {
		plainError(w, http.StatusInternalServerError, "console: event streams are not supported here")
		return nil, nil, false
	}
	release, ok := c.streamSlot()
	if !ok {
		plainError(w, http.StatusServiceUnavailable, "console: too many live views are open; close some tabs")
		return nil, nil, false
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, f: f}
	s.comment("keyhole console")
	return s, release, true
}

// send writes one event: its type, an id the browser resumes from, and
// the JSON of v (which escapes every line break, so one data line holds
// it).
func (s *sse) send(event, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if id != "" {
		if _, err := fmt.Fprintf(s.w, "id: %s\n", id); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	s.f.Flush()
	return nil
}

func (s *sse) comment(text string) error {
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		return err
	}
	s.f.Flush()
	return nil
}

// auditEvents is the live tail of the audit page: every record that
// matches its filters after the seq it starts from (or the one the
// browser last received, when it reconnects).
func (c *Console) auditEvents(w http.ResponseWriter, r *http.Request, _ consoleSession) {
	q := r.URL.Query()
	f, _, problems := parseAuditFilter(q, c.o.Now())
	if len(problems) > 0 {
		plainError(w, http.StatusBadRequest, "console: "+problems[0])
		return
	}
	f.Since, f.Until = time.Time{}, time.Time{} // a tail follows what comes
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
	if last, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && last > after {
		after = last
	}
	f.AfterSeq, f.Limit = after, tailFirst
	out, release, ok := c.startSSE(w, r)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := c.streamContext(r)
	defer cancel()
	batches, errc := c.followAudit(ctx, f)
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case recs := <-batches:
			for _, rec := range recs {
				if err := out.send("record", strconv.FormatUint(rec.Seq, 10), eventOf(rec)); err != nil {
					return
				}
			}
		case err := <-errc:
			if err != nil {
				c.o.Logger.Warn("console: audit tail", "error", err)
				out.send("failed", "", map[string]string{"error": "the audit log could not be read"})
			}
			return
		case <-tick.C:
			if out.comment("") != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// accessEvent is one step of an access request as the live view sends
// it.
type accessEvent struct {
	Type     string   `json:"type"`
	ID       string   `json:"id"`
	State    string   `json:"state"`
	Session  string   `json:"session"`
	Scope    string   `json:"scope"`
	Summary  string   `json:"summary"`
	Risks    []string `json:"risks"`
	Expires  string   `json:"expires"`
	Waiting  int      `json:"waiting"`
	Decision string   `json:"decision,omitempty"`
}

func accessEventOf(ev access.Event) accessEvent {
	r := ev.Request
	out := accessEvent{Type: ev.Type, ID: r.ID, State: string(r.State), Session: visible(r.Session), Scope: visible(r.Scope),
		Summary: visible(r.Summary()), Risks: r.Risks, Expires: fmtTime(r.Expires), Waiting: r.Waiting}
	if out.Risks == nil {
		out.Risks = []string{}
	}
	if d := r.Decision; d != nil {
		verb := "denied"
		if d.Approved {
			verb = "approved once"
			if d.ForSession {
				verb = "approved for the session"
			}
		}
		out.Decision = verb + " by " + visible(d.By)
	} else if r.Ended != "" {
		out.Decision = visible(r.Ended)
	}
	return out
}

// accessEvents streams every step of every access request from now on.
func (c *Console) accessEvents(w http.ResponseWriter, r *http.Request, _ consoleSession) {
	if c.o.Access == nil {
		plainError(w, http.StatusNotFound, "console: this broker holds no access requests")
		return
	}
	events, stop := c.o.Access.Watch()
	defer stop()
	out, release, ok := c.startSSE(w, r)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := c.streamContext(r)
	defer cancel()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				out.send("closed", "", map[string]string{"error": "the broker stopped sending access requests"})
				return
			}
			// The event is published as the step happens, before the call
			// that asked is counted as held; the manager's lock orders
			// this read after that count.
			if cur, err := c.o.Access.Show(ev.Request.ID); err == nil && cur.State == ev.Request.State {
				ev.Request.Waiting = cur.Waiting
			}
			if err := out.send("access", "", accessEventOf(ev)); err != nil {
				return
			}
		case <-tick.C:
			if out.comment("") != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
