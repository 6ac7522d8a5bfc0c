package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/keyhole-dev/keyhole/server/access"
)

// Access requests: the list, a request's whole page, and the answers,
// which are the access manager's own Approve and Deny.

type accessListData struct {
	All      bool
	Off      bool
	Requests []access.Request // newest first
}

func (c *Console) accessList(w http.ResponseWriter, r *http.Request, s consoleSession) {
	d := accessListData{All: r.URL.Query().Get("all") == "1", Off: c.o.Access == nil}
	if !d.Off {
		d.Requests = c.o.Access.List(d.All)
		slices.Reverse(d.Requests)
	}
	c.render(w, http.StatusOK, s, "access", "Access requests", "access", d)
}

type accessData struct {
	Req access.Request
}

func (c *Console) accessPage(w http.ResponseWriter, r *http.Request, s consoleSession) {
	req, ok := c.request(w, r)
	if !ok {
		return
	}
	c.render(w, http.StatusOK, s, "request", "Access request "+req.ID, "access", accessData{Req: req})
}

// request returns the request the path names, or answers why not.
func (c *Console) request(w http.ResponseWriter, r *http.Request) (access.Request, bool) {
	if c.o.Access == nil {
		c.fail(w, r, http.StatusNotFound, "This broker holds no access requests.")
		return access.Request{}, false
	}
	id := r.PathValue("id")
	req, err := c.o.Access.Show(id)
	if errors.Is(err, access.ErrNotFound) {
		c.fail(w, r, http.StatusNotFound, "There is no access request "+visible(id)+" (requests are kept for a day after their end).")
		return access.Request{}, false
	}
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, err.Error())
		return access.Request{}, false
	}
	return req, true
}

// approve approves an open request once, or for the rest of its session.
func (c *Console) approve(w http.ResponseWriter, r *http.Request, s consoleSession) {
	if c.o.Access == nil {
		c.fail(w, r, http.StatusNotFound, "This broker holds no access requests.")
		return
	}
	id, note := r.PathValue("id"), r.PostForm.Get("note")
	forSession := r.PostForm.Get("scope") == "session"
	req, err := c.o.Access.Approve(id, c.decider(s), note, forSession)
	if err != nil {
		c.answerFailed(w, r, id, "approved", err)
		return
	}
	c.o.Logger.Info("console: access request approved", "console_session", s.ID, "request", id, "for_session", forSession)
	http.Redirect(w, r, c.back(r, req.ID), http.StatusSeeOther)
}

// deny denies an open request.
func (c *Console) deny(w http.ResponseWriter, r *http.Request, s consoleSession) {
	if c.o.Access == nil {
		c.fail(w, r, http.StatusNotFound, "This broker holds no access requests.")
		return
	}
	id := r.PathValue("id")
	req, err := c.o.Access.Deny(id, c.decider(s), r.PostForm.Get("note"))
	if err != nil {
		c.answerFailed(w, r, id, "denied", err)
		return
	}
	c.o.Logger.Info("console: access request denied", "console_session", s.ID, "request", id)
	http.Redirect(w, r, c.back(r, req.ID), http.StatusSeeOther)
}

func (c *Console) answerFailed(w http.ResponseWriter, r *http.Request, id, verb string, err error) {
	msg := visible(strings.TrimPrefix(err.Error(), "access: "))
	msg = strings.ReplaceAll(msg, "--note", "the note")
	switch {
	case errors.Is(err, access.ErrNotFound):
		c.fail(w, r, http.StatusNotFound, "There is no access request "+visible(id)+"; nothing was "+verb+".")
	case errors.Is(err, access.ErrNotOpen):
		c.fail(w, r, http.StatusConflict, "It was not "+verb+": "+msg)
	default:
		c.fail(w, r, http.StatusUnprocessableEntity, "It was not "+verb+": "+msg)
	}
}

// back is where an answer returns: the list it was given on, or the
// request's page. Only these two, so the form cannot redirect elsewhere.
func (c *Console) back(r *http.Request, id string) string {
	if r.PostForm.Get("back") == "list" {
		return "/ui/access#" + url.PathEscape(id)
	}
	return "/ui/access/" + url.PathEscape(id)
}

// answerView is what the answer forms need: the request, the CSRF token,
// and where to return.
type answerView struct{ ID, CSRF, Back string }

func answerOf(csrf, id, back string) answerView { return answerView{ID: id, CSRF: csrf, Back: back} }

// cardView is a request on the list.
type cardView struct {
	Req  access.Request
	CSRF string
}

func cardOf(req access.Request, csrf string) cardView { return cardView{Req: req, CSRF: csrf} }
