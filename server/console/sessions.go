package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/sessions"
)

// The agents' sessions: the list, a session's page (its post-mortem and
// a revoke button) and the revocation.

// timelineLimit is how many of a session's calls its page lists; the
// audit page pages through the rest.
const timelineLimit = 200

// maxSessionRows caps the sessions list: the newest ones.
const maxSessionRows = 200

type sessionListData struct {
	All      bool
	Sessions []policy.SessionInfo
	// Total is how many there are when the list holds only the newest.
	Total int
	Err   string
}

func (c *Console) sessionList(w http.ResponseWriter, r *http.Request, s consoleSession) {
	d := sessionListData{All: r.URL.Query().Get("all") == "1"}
	list, err := c.o.Sessions.List(d.All)
	if err != nil {
		d.Err = err.Error()
	}
	slices.Reverse(list) // newest first
	if len(list) > maxSessionRows {
		d.Total, list = len(list), list[:maxSessionRows]
	}
	d.Sessions = list
	c.render(w, http.StatusOK, s, "sessions", "Sessions", "sessions", d)
}

type sessionData struct {
	Info     policy.SessionInfo
	Active   bool
	Timeline []audit.Record
	// Cut says the timeline holds only the last timelineLimit calls.
	Cut      bool
	Requests []access.Request
	// Report is the session's post-mortem.
	Report *postMortem
	Err    string
}

func (c *Console) sessionPage(w http.ResponseWriter, r *http.Request, s consoleSession) {
	id := r.PathValue("id")
	info, err := c.o.Sessions.Show(id)
	if errors.Is(err, sessions.ErrNotFound) {
		c.fail(w, r, http.StatusNotFound, "There is no session "+visible(id)+" (the sessions page lists them all).")
		return
	}
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	d := sessionData{Info: info, Active: info.State == policy.StateActive}
	recs, err := c.o.Audit.Query(audit.Filter{Session: id, Limit: timelineLimit + 1})
	if err != nil {
		d.Err = err.Error()
	}
	if len(recs) > timelineLimit {
		recs, d.Cut = recs[1:], true
	}
	d.Timeline = recs
	incident, _ := strconv.ParseUint(r.URL.Query().Get("incident"), 10, 64)
	d.Report = c.sessionReport(r.Context(), id, incident)
	if c.o.Access != nil {
		for _, req := range c.o.Access.List(true) {
			if req.Session == id {
				d.Requests = append(d.Requests, req)
			}
		}
	}
	c.render(w, http.StatusOK, s, "session", "Session "+visible(id), "sessions", d)
}

// revoke revokes an agent's session, as `keyhole session revoke` does.
func (c *Console) revoke(w http.ResponseWriter, r *http.Request, s consoleSession) {
	id := r.PathValue("id")
	err := c.o.Sessions.Revoke(id, c.decider(s))
	switch {
	case errors.Is(err, sessions.ErrNotFound):
		c.fail(w, r, http.StatusNotFound, "There is no session "+visible(id)+"; nothing was revoked.")
		return
	case err != nil:
		c.fail(w, r, http.StatusUnprocessableEntity, "The session was not revoked: "+visible(err.Error()))
		return
	}
	c.o.Logger.Info("console: session revoked", "console_session", s.ID, "session", id)
	http.Redirect(w, r, "/ui/sessions/"+url.PathEscape(id), http.StatusSeeOther)
}
