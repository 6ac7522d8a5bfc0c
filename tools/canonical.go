package tools

import (
	"maps"
	"slices"
)

// Canonical is the whole of a prepared call, as it will be sent: what a
// person is shown, and approves, when a call waits for approval. Unlike
// AuditFields it holds query values, the headers the agent set and the
// body, which carry whatever the agent put there: scrub them before
// showing or keeping them.
type Canonical struct {
	AuditFields
	// Query holds every query parameter (http), sorted by name, each
	// name's values in the order sent. Names and values are unescaped.
	Query []Param
	// Headers are the headers the agent set (http; canonical names,
	// sorted); the credential keyhole injects is never among them.
	Headers []Param
	// HasBody says a body is sent (an empty one included).
	HasBody bool
	Body    []byte
	// The parameters of an s3 list.
	Delimiter         string
	MaxKeys           int32
	ContinuationToken string
}

// Param is one query parameter or header.
type Param struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Canonical describes the whole call. The returned slices are the
// caller's; Body aliases the call's body and must not be changed.
func (c *Call) Canonical() Canonical {
	can := Canonical{AuditFields: c.AuditFields()}
	switch {
	case c.http != nil:
		for _, name := range slices.Sorted(maps.Keys(c.http.query)) {
			for _, v := range c.http.query[name] {
				can.Query = append(can.Query, Param{Name: name, Value: v})
			}
		}
		for _, name := range slices.Sorted(maps.Keys(c.http.header)) {
			for _, v := range c.http.header[name] {
				can.Headers = append(can.Headers, Param{Name: name, Value: v})
			}
		}
		can.HasBody, can.Body = c.http.hasBody, c.http.body
	case c.s3 != nil:
		can.Delimiter, can.MaxKeys = c.s3.delimiter, c.s3.maxKeys
		can.ContinuationToken = c.s3.token
		if c.s3.at != (s3Position{}) {
			can.ContinuationToken = c.s3.at.encode()
		}
	}
	return can
}
