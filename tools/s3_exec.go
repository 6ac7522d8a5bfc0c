package tools

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keyhole-dev/keyhole/tools/egress"
	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// S3ListResult is the structured result of a list call.
type S3ListResult struct {
	Objects               []S3Object `json:"objects"`
	CommonPrefixes        []string   `json:"common_prefixes"`
	NextContinuationToken string     `json:"next_continuation_token,omitempty"`
	Truncated             bool       `json:"truncated"`
}

// S3Object is one listed object.
type S3Object struct {
	Key          string `json:"key"`
	Size         int64  `json:"size"`
	LastModified string `json:"last_modified,omitempty"` // RFC 3339, UTC
	ETag         string `json:"etag,omitempty"`
}

// S3ObjectResult is the structured result of a get or head call. Body and
// Encoding are set for get only: Encoding is "text" when the body is UTF-8
// text, else "base64". Truncated says the body was cut at
// response.max_bytes; Size is the object's full size.
type S3ObjectResult struct {
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	ContentType  string            `json:"content_type,omitempty"`
	LastModified string            `json:"last_modified,omitempty"`
	ETag         string            `json:"etag,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	Encoding     string            `json:"encoding,omitempty"`
	Body         *string           `json:"body,omitempty"`
	Truncated    bool              `json:"truncated,omitempty"`
	// Withheld says the body was withheld: a credential was found in it in
	// an encoded form (Note says so).
	Withheld bool   `json:"withheld,omitempty"`
	Note     string `json:"note,omitempty"`
}

// s3WithheldResult replaces a whole result in which a credential was
// found only once it was rendered.
type s3WithheldResult struct {
	Withheld bool   `json:"withheld"`
	Note     string `json:"note"`
}

// s3Scrubber scrubs every string of a result and remembers whether it had
// to remove anything.
type s3Scrubber struct {
	sc  *scrub.Scrubber
	hit bool
}

func (s *s3Scrubber) str(v string) string {
	out, hit := s.sc.String(v)
	s.hit = s.hit || hit
	return out
}

// Scrubber implements Tool.
func (t *s3Tool) Scrubber(secret []byte) *scrub.Scrubber {
	return scrub.New(awsSecretValues(secret)...)
}

// Execute performs a prepared list, get or head on the tool's bucket,
// signed with the aws_sigv4 credentials in secret. When secret names a
// role ("role_arn"), the call is signed instead with credentials of that
// role assumed for env.Session (see assume), which the call must have.
// The result and every error are scrubbed of the access key id, the
// secret access key and the session token, assumed ones included.
// S3 calls follow no redirects. Failures are *ExecError.
func (t *s3Tool) Execute(ctx context.Context, call *Call, secret []byte, env CallEnv) (*Result, error) {
	if call == nil || call.s3 == nil || call.tool != t {
		return nil, &ExecError{Msg: "internal error: the call was not prepared by this tool"}
	}
	if env.Scrubber == nil {
		return nil, &ExecError{Msg: "internal error: the call has no scrubber"}
	}
	s := &s3Scrubber{sc: env.Scrubber}
	creds, role, err := parseAWSRoleSecret(secret)
	if err != nil {
		return nil, &ExecError{
			Msg:    fmt.Sprintf("the credential of tool %s is malformed; an operator must fix secret %s", t.name, t.secret),
			Detail: s.str(err.Error()),
		}
	}
	// What policy decided on is what is sent: re-check it as it stands.
	req := call.Request
	if err := s3CheckKey("key", req.Key); err != nil {
		return nil, &ExecError{Msg: err.Error()}
	}
	withCreds := func(o *s3.Options) {
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return creds, nil
		})
	}
	// The deadline covers reading the object body too.
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	info := CredentialInfo{Kind: CredStatic}
	if role != "" {
		// The role secret's keys only assume the role; the call is signed
		// with the session's credentials, and they are scrubbed too.
		var sc *scrub.Scrubber
		creds, sc, err = t.assume(ctx, env.Session, role, creds, secret, s)
		if err != nil {
			return nil, err
		}
		s = &s3Scrubber{sc: sc}
		info = CredentialInfo{Kind: CredAWSSTS, TokenID: tokenID(creds.AccessKeyID), Expires: creds.Expires}
	}

	var res *Result
	switch req.Action {
	case "list":
		res, err = t.list(ctx, s, req.Key, call.s3, withCreds)
	case "get":
		res, err = t.get(ctx, s, req.Key, withCreds)
	case "head":
		res, err = t.head(ctx, s, req.Key, withCreds)
	default:
		return nil, &ExecError{Msg: "internal error: s3 tools offer only list, get and head"}
	}
	if err != nil {
		ee := t.execError(s, req.Action, err)
		ee.Credential = info
		return nil, ee
	}
	res.Credential = info
	text, err := json.Marshal(res.Structured)
	if err != nil {
		return nil, &ExecError{Msg: "internal error: rendering the result failed", Detail: s.str(err.Error())}
	}
	res.Text = string(text)
	sealed := sealResult(res, s.sc, func() any {
		return s3WithheldResult{Withheld: true, Note: scrub.WithheldNote}
	}, func(v any) string {
		js, _ := json.Marshal(v)
		return string(js)
	})
	res.Withheld = res.Withheld || sealed
	res.Scrubbed = s.hit || sealed
	return res, nil
}

func (t *s3Tool) get(ctx context.Context, s *s3Scrubber, key string, opt func(*s3.Options)) (*Result, error) {
	out, err := t.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(key)}, opt)
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	// Read past max_bytes and scrub before cutting, so a credential the cut
	// falls into is redacted whole.
	limit := t.maxBytes + int64(s.sc.Margin())
	body, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("tools: reading object body: %w", err)
	}
	bytesIn := int64(len(body))
	body, truncated, o := s.sc.Capped(body, int(t.maxBytes), bytesIn > limit)
	s.hit = s.hit || o != scrub.Clean
	r := S3ObjectResult{
		Key:          s.str(key),
		Size:         aws.ToInt64(out.ContentLength),
		ContentType:  s.str(aws.ToString(out.ContentType)),
		LastModified: s3Time(out.LastModified),
		ETag:         s.str(aws.ToString(out.ETag)),
		Truncated:    truncated,
	}
	if r.Size < bytesIn && !truncated {
		r.Size = bytesIn
	}
	switch text, ok := s3Text(body, truncated); {
	case o == scrub.Withheld:
		r.Withheld, r.Note = true, scrub.WithheldNote
	case ok:
		r.Encoding = "text"
		rendered := string(text)
		r.Body = &rendered
	default:
		r.Encoding = "base64"
		rendered := base64.StdEncoding.EncodeToString(body)
		r.Body = &rendered
	}
	return &Result{
		Structured: r,
		Status:     s3Status(out.ResultMetadata),
		BytesIn:    bytesIn,
		Truncated:  truncated,
		Withheld:   r.Withheld,
	}, nil
}

func (t *s3Tool) head(ctx context.Context, s *s3Scrubber, key string, opt func(*s3.Options)) (*Result, error) {
	out, err := t.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(key)}, opt)
	if err != nil {
		return nil, err
	}
	r := S3ObjectResult{
		Key:          s.str(key),
		Size:         aws.ToInt64(out.ContentLength),
		ContentType:  s.str(aws.ToString(out.ContentType)),
		LastModified: s3Time(out.LastModified),
		ETag:         s.str(aws.ToString(out.ETag)),
	}
	if len(out.Metadata) > 0 {
		r.Metadata = make(map[string]string, len(out.Metadata))
		for k, v := range out.Metadata {
			r.Metadata[s.str(k)] = s.str(v)
		}
	}
	return &Result{Structured: r, Status: s3Status(out.ResultMetadata)}, nil
}

// s3Text returns b as text when it is UTF-8 without control characters
// other than tab, newline and carriage return. A body cut at max_bytes may
// end inside a character; that partial character is dropped.
func s3Text(b []byte, truncated bool) ([]byte, bool) {
	if truncated {
		for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if !utf8.FullRune(b[i:]) {
					b = b[:i]
				}
				break
			}
		}
	}
	if !utf8.Valid(b) {
		return nil, false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return nil, false
		}
	}
	return b, true
}

func s3Time(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func s3Status(md middleware.Metadata) int {
	if raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok {
		return raw.StatusCode
	}
	return 0
}

func s3BytesIn(md middleware.Metadata) int64 {
	if raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok && raw.ContentLength > 0 {
		return raw.ContentLength
	}
	return 0
}

// execError turns an SDK or transport error into an *ExecError whose Msg
// says what happened without the request URL, addresses or credentials;
// Detail keeps the full (scrubbed) error for the audit record.
func (t *s3Tool) execError(s *s3Scrubber, action string, err error) *ExecError {
	if ee, ok := err.(*ExecError); ok {
		return ee // already written for the agent
	}
	var code string
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && s3SafeCode(apiErr.ErrorCode()) {
		code = apiErr.ErrorCode()
	}
	var status int
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	var msg string
	switch {
	case errors.Is(err, egress.ErrRefused):
		msg = "the upstream address is refused by the tool's network policy"
	case errors.Is(err, context.DeadlineExceeded):
		msg = "the upstream did not answer in time"
	case errors.Is(err, context.Canceled):
		msg = "the call was canceled"
	case errors.Is(err, errS3TooLarge):
		msg = "the upstream response is too large"
	case code == "NoSuchKey":
		msg = "no such key"
	case action != "list" && (code == "NotFound" || code == "" && status == 404):
		// HEAD answers carry no error body, only the status.
		msg = "no such key"
	case code == "NoSuchBucket":
		msg = "no such bucket"
	case status == 403 || code == "AccessDenied":
		msg = "upstream denied access"
		if code != "" && code != "AccessDenied" && code != "Forbidden" {
			msg += " (" + code + ")"
		}
	case status != 0:
		msg = fmt.Sprintf("upstream error (HTTP %d)", status)
		if code != "" {
			msg += ": " + code
		}
	default:
		msg = "the upstream request failed"
	}
	return &ExecError{
		Msg:    s.str(msg),
		Detail: s.str(fmt.Sprintf("s3 %s on bucket %s: %v", action, t.bucket, err)),
	}
}

// s3SafeCode reports whether an S3 error code looks like one (letters and
// digits, short), so it can be shown to the agent.
func s3SafeCode(code string) bool {
	if code == "" || len(code) > 64 {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
