package policy

import "strings"

// Request is the canonical form of one tool call, as a tool describes it to
// policy. It is built by package tools after the arguments were validated
// and normalized; policy matches on it and nothing else, and the request
// that goes upstream is rebuilt from the same fields, so what was checked is
// what is sent.
type Request struct {
	// Tool is the tool's name in keyhole.yaml.
	Tool string
	// Method is the upper-case HTTP method (http tools).
	Method string
	// Segments is the decoded path split on "/", relative to the tool's
	// base_url path: "/repos/acme/api" is {"repos", "acme", "api"}. No
	// segment is empty, ".", ".." or holds a "/", "\\" or control byte.
	Segments []string
	// Action is the S3 action (s3 tools): "list", "get" or "head".
	Action string
	// Key is the S3 object key (get, head) or the listed prefix (list).
	Key string
}

// Path returns the request path as a person reads it: "/" + segments
// joined by "/".
func (r Request) Path() string {
	return "/" + strings.Join(r.Segments, "/")
}

// String describes the request for denial reasons and logs.
func (r Request) String() string {
	if r.Action != "" {
		return r.Action + " " + r.Key
	}
	return r.Method + " " + r.Path()
}

// FieldError is a configuration error found at a key path of keyhole.yaml,
// such as "scopes.triage.grants[1].paths[0]". The config loader turns the
// path into file:line:column.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// ToolInfo is what policy knows of a tool when it compiles grants for it.
type ToolInfo struct {
	// Kind is "http" or "s3".
	Kind string
	// Method and Path are set for a templated http tool: the tool fixes its
	// method and path ("/repos/{owner}/{repo}/issues"), and a grant may name
	// just the tool.
	Method string
	Path   string
	// Host (http) and Bucket (s3) say where the tool's calls go, for
	// summaries and the audit; policy never matches on them.
	Host   string
	Bucket string
}
