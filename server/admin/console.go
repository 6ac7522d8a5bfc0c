package admin

import (
	"errors"
	"net/http"
	"time"
)

// ConsoleLink is a one-time login link to the broker's browser console:
// it works once, until Expires.
type ConsoleLink struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// ErrNoConsole is returned by ConsoleLogin when the broker serves no
// console.
var ErrNoConsole = errors.New("the broker serves no console: start it with keyhole serve --ui 127.0.0.1:7778")

// ConsoleHandler serves POST /admin/console/login: a new one-time login
// link, from login. Only the broker's own OS user reaches the socket, so
// only they get links.
func ConsoleHandler(login func() (ConsoleLink, error)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/console/login", func(w http.ResponseWriter, r *http.Request) {
		link, err := login()
		if errors.Is(err, ErrNoConsole) {
			writeJSON(w, http.StatusNotFound, errorBody{Error: err.Error(), Code: "console_off"})
			return
		}
		reply(w, func() (ConsoleLink, error) { return link, err })
	})
	return mux
}

// ConsoleLogin asks the broker for a one-time login link to its console.
func (c *Client) ConsoleLogin() (ConsoleLink, error) {
	var link ConsoleLink
	err := c.do(http.MethodPost, "/admin/console/login", struct{}{}, &link)
	return link, err
}
