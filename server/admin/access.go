package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keyhole-dev/keyhole/server/access"
)

// AccessRequest is an access request as an operator sees it.
type AccessRequest = access.Request

// AccessEvent is one step of an access request.
type AccessEvent = access.Event

// AccessOps is what an operator does to the access requests a broker
// holds. Requests live in the broker: without one, none is open.
type AccessOps interface {
	// AccessList returns the open and approved requests, or with all
	// every request the broker still keeps, oldest first.
	AccessList(all bool) ([]AccessRequest, error)
	AccessShow(id string) (AccessRequest, error)
	// AccessApprove approves an open request once; with forSession it
	// also grants its exact method and path to the session.
	AccessApprove(id string, forSession bool, note string) (AccessRequest, error)
	AccessDeny(id, note string) (AccessRequest, error)
	// AccessWatch calls fn with every step of every request from now on,
	// until ctx ends, fn fails, or the broker stops.
	AccessWatch(ctx context.Context, fn func(AccessEvent) error) error
}

var _ AccessOps = (*Client)(nil)

// accessDecisionBody is the body of approve and deny.
type accessDecisionBody struct {
	ForSession bool   `json:"for_session,omitempty"`
	Note       string `json:"note,omitempty"`
}

// AccessHandler serves ops under /admin/access: list, show, approve,
// deny and a stream of events (one JSON object a line).
func AccessHandler(ops AccessOps) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/access", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() ([]AccessRequest, error) { return ops.AccessList(r.URL.Query().Get("all") == "true") })
	})
	mux.HandleFunc("GET /admin/access/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (AccessRequest, error) { return ops.AccessShow(r.PathValue("id")) })
	})
	mux.HandleFunc("POST /admin/access/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *accessDecisionBody) (any, error) {
			return ops.AccessApprove(r.PathValue("id"), b.ForSession, b.Note)
		})
	})
	mux.HandleFunc("POST /admin/access/{id}/deny", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *accessDecisionBody) (any, error) {
			return ops.AccessDeny(r.PathValue("id"), b.Note)
		})
	})
	mux.HandleFunc("GET /admin/access-events", func(w http.ResponseWriter, r *http.Request) {
		flusher, _ := w.(http.Flusher)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		if flusher != nil {
			flusher.Flush()
		}
		enc := json.NewEncoder(w)
		ops.AccessWatch(r.Context(), func(ev AccessEvent) error {
			if err := enc.Encode(ev); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
			return nil
		})
	})
	return mux
}

// AccessList implements AccessOps.
func (c *Client) AccessList(all bool) ([]AccessRequest, error) {
	var list []AccessRequest
	err := c.do(http.MethodGet, "/admin/access?all="+strconv.FormatBool(all), nil, &list)
	return list, err
}

// AccessShow implements AccessOps.
func (c *Client) AccessShow(id string) (AccessRequest, error) {
	var r AccessRequest
	err := c.do(http.MethodGet, "/admin/access/"+url.PathEscape(id), nil, &r)
	return r, err
}

// AccessApprove implements AccessOps.
func (c *Client) AccessApprove(id string, forSession bool, note string) (AccessRequest, error) {
	var r AccessRequest
	err := c.do(http.MethodPost, "/admin/access/"+url.PathEscape(id)+"/approve", accessDecisionBody{ForSession: forSession, Note: note}, &r)
	return r, err
}

// AccessDeny implements AccessOps.
func (c *Client) AccessDeny(id, note string) (AccessRequest, error) {
	var r AccessRequest
	err := c.do(http.MethodPost, "/admin/access/"+url.PathEscape(id)+"/deny", accessDecisionBody{Note: note}, &r)
	return r, err
}

// AccessWatch implements AccessOps. It returns nil when ctx ends, and an
// error when the broker ends the stream.
func (c *Client) AccessWatch(ctx context.Context, fn func(AccessEvent) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://keyhole/admin/access-events", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("keyhole: broker: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("keyhole: broker answered %s", strconv.Quote(resp.Status))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev AccessEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("keyhole: broker sent a bad event: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("keyhole: broker: %w", err)
	}
	return errors.New("keyhole: the broker ended the stream of access events (it stopped, or this watcher fell behind)")
}
