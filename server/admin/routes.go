package admin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
)

// maxRequestBytes caps an admin request body (a secret value is at most
// 64 KiB).
const maxRequestBytes = 1 << 20

// The bodies of the admin routes. A secret value travels only in a
// request, and both ends zero it once used.
type (
	secretBody struct {
		Value       []byte `json:"value"`
		Description string `json:"description,omitempty"`
	}
	reloadBody struct {
		Config string `json:"config,omitempty"`
	}
	loginStartBody struct {
		RedirectURL string `json:"redirect_url"`
	}
	loginFinishBody struct {
		State string `json:"state"`
		Code  string `json:"code"`
	}
	sessionNewResult struct {
		Session SessionInfo `json:"session"`
		Token   string      `json:"token"`
	}
	revokedResult struct {
		IDs []string `json:"ids"`
	}
	errorBody struct {
		Error string `json:"error"`
		Code  string `json:"code,omitempty"` // secret_not_found | session_not_found | access_request_not_found | access_request_not_open | console_off
	}
)

// Handler serves ops as typed routes under /admin/.
func Handler(ops Ops) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/secrets", func(w http.ResponseWriter, r *http.Request) {
		reply(w, ops.SecretList)
	})
	mux.HandleFunc("GET /admin/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (SecretMeta, error) { return ops.SecretMeta(r.PathValue("name")) })
	})
	mux.HandleFunc("POST /admin/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *secretBody) (any, error) {
			defer clear(b.Value)
			return nil, ops.SecretSet(r.PathValue("name"), b.Value, b.Description)
		})
	})
	mux.HandleFunc("POST /admin/secrets/{name}/rotate", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *secretBody) (any, error) {
			defer clear(b.Value)
			return ops.SecretRotate(r.PathValue("name"), b.Value)
		})
	})
	mux.HandleFunc("POST /admin/secrets/{name}/login", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *loginStartBody) (any, error) {
			return ops.SecretLoginStart(r.PathValue("name"), b.RedirectURL)
		})
	})
	mux.HandleFunc("POST /admin/secrets/{name}/login/finish", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *loginFinishBody) (any, error) {
			defer func() { b.Code = "" }()
			return ops.SecretLoginFinish(r.PathValue("name"), b.State, b.Code)
		})
	})
	mux.HandleFunc("DELETE /admin/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (any, error) { return nil, ops.SecretDelete(r.PathValue("name")) })
	})
	mux.HandleFunc("GET /admin/sessions", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() ([]SessionInfo, error) { return ops.SessionList(r.URL.Query().Get("all") == "true") })
	})
	mux.HandleFunc("POST /admin/sessions", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *SessionRequest) (any, error) {
			info, tok, err := ops.SessionNew(*b)
			return sessionNewResult{Session: info, Token: tok}, err
		})
	})
	mux.HandleFunc("GET /admin/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (SessionInfo, error) { return ops.SessionShow(r.PathValue("id")) })
	})
	mux.HandleFunc("POST /admin/sessions/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (revokedResult, error) { return revoked(ops.SessionRevoke(r.PathValue("id"), "", false)) })
	})
	mux.HandleFunc("POST /admin/scopes/{scope}/revoke", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (revokedResult, error) { return revoked(ops.SessionRevoke("", r.PathValue("scope"), false)) })
	})
	mux.HandleFunc("POST /admin/sessions/revoke-all", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (revokedResult, error) { return revoked(ops.SessionRevoke("", "", true)) })
	})
	mux.HandleFunc("POST /admin/sessions/{id}/end", func(w http.ResponseWriter, r *http.Request) {
		reply(w, func() (any, error) { return nil, ops.SessionEnd(r.PathValue("id")) })
	})
	mux.HandleFunc("POST /admin/reload", func(w http.ResponseWriter, r *http.Request) {
		withBody(w, r, func(b *reloadBody) (any, error) { return ops.Reload(b.Config) })
	})
	mux.HandleFunc("GET /admin/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, ops.Status)
	})
	mux.HandleFunc("POST /admin/stop", func(w http.ResponseWriter, r *http.Request) {
		reply(w, ops.Stop)
	})
	return mux
}

func revoked(ids []string, err error) (revokedResult, error) {
	return revokedResult{IDs: ids}, err
}

// withBody decodes a route's JSON body into a B and replies with what fn
// returns.
func withBody[B any](w http.ResponseWriter, r *http.Request, fn func(*B) (any, error)) {
	var b B
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes)).Decode(&b); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad request: " + err.Error()})
		return
	}
	reply(w, func() (any, error) { return fn(&b) })
}

// reply writes fn's result as JSON, or its error with a status that says
// what kind of error it is.
func reply[T any](w http.ResponseWriter, fn func() (T, error)) {
	v, err := fn()
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	body, status := errorBody{Error: err.Error()}, http.StatusUnprocessableEntity
	switch {
	case errors.Is(err, vault.ErrNotFound):
		body.Code, status = "secret_not_found", http.StatusNotFound
	case errors.Is(err, sessions.ErrNotFound):
		body.Code, status = "session_not_found", http.StatusNotFound
	case errors.Is(err, access.ErrNotFound):
		body.Code, status = "access_request_not_found", http.StatusNotFound
	case errors.Is(err, access.ErrNotOpen):
		body.Code, status = "access_request_not_open", http.StatusConflict
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
