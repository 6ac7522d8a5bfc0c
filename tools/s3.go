package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools/egress"
)

// Defaults and limits of the s3 kind.
const (
	s3DefaultMaxKeys  = 1000   // also the S3 maximum of ListObjectsV2
	s3DefaultMaxBytes = 262144 // response.max_bytes
	s3DefaultTimeout  = 30 * time.Second
	s3MaxAttempts     = 2 // list, get and head are idempotent: one retry
	s3DialTimeout     = 10 * time.Second
	// s3MaxResponseBytes caps any response body the SDK reads whole (a
	// list page of 1000 keys of 1024 bytes is about 1.5 MiB of XML).
	s3MaxResponseBytes = 16 << 20
)

// s3Tool is a compiled s3 tool: one bucket, read-only actions (list, get,
// head), signed with the SDK's SigV4 signer from an aws_sigv4 secret given
// per call. The SDK client and its HTTP transport are built once and
// shared by every call, so connections are reused.
type s3Tool struct {
	name        string
	description string
	secret      string
	bucket      string
	maxKeys     int32
	maxBytes    int64
	timeout     time.Duration
	client      *s3.Client
	sts         *sts.Client
	roles       s3RoleCache
	now         func() time.Time
	schema      *jsonschema.Schema
	inputSchema json.RawMessage
}

var _ Tool = (*s3Tool)(nil)

// s3Call is the kind-specific part of a prepared s3 call. The action and
// the key or prefix live in Call.Request, the one copy policy decides on
// and Execute sends.
type s3Call struct {
	delimiter string
	maxKeys   int32
	// token is a continuation token keyhole did not issue, passed on as it
	// is; at is where one of keyhole's resumes (see s3TokenPrefix).
	token string
	at    s3Position
}

// compileS3 checks an s3 tool's configuration, reporting every problem at
// once as *policy.FieldError, and builds its S3 client.
func compileS3(name string, c Config, env Env) (Tool, []error) {
	set, errs := checkS3Config(name, c)
	if len(errs) > 0 {
		return nil, errs
	}
	return buildS3(name, c, env, set)
}

// buildS3 builds an s3 tool from its checked settings.
func buildS3(name string, c Config, env Env, set s3Settings) (Tool, []error) {
	schema, raw, err := compileS3Schema(set.maxKeys)
	if err != nil {
		// The schema is a constant: this is a bug, reported where it shows.
		return nil, []error{&policy.FieldError{Path: "tools." + name + ".kind", Msg: err.Error()}}
	}
	desc := c.Description
	if desc == "" {
		desc = fmt.Sprintf("Read-only access to S3 bucket %s: list objects under a prefix, get an object, head an object.", c.Bucket)
	}
	// S3 answers a wrong region with a redirect; the client follows none.
	httpClient := set.net.client(env, clientTimeouts{dial: min(set.timeout, s3DialTimeout), headers: set.timeout},
		func(rt http.RoundTripper) http.RoundTripper { return s3BodyCap{next: rt, max: set.bodyCap} })
	return &s3Tool{
		name:        name,
		description: desc,
		secret:      c.Credential.Secret,
		bucket:      c.Bucket,
		maxKeys:     set.maxKeys,
		maxBytes:    set.maxBytes,
		timeout:     set.timeout,
		client:      newS3Client(c.Region, set.endpoint, c.PathStyle, httpClient),
		sts:         newSTSClient(c.Region, set.sts, httpClient),
		now:         time.Now,
		schema:      schema,
		inputSchema: raw,
	}, nil
}

// newS3Client builds the SDK client by hand, so nothing is read from the
// environment or shared AWS config files: no credentials (they are given
// per call), no endpoint overrides, no profile.
func newS3Client(region string, endpoint *string, pathStyle bool, hc *http.Client) *s3.Client {
	return s3.New(s3.Options{
		Region:                      region,
		BaseEndpoint:                endpoint,
		UsePathStyle:                pathStyle,
		HTTPClient:                  hc,
		HTTPSignerV4:                s3FreshSigner{},
		Retryer:                     awsRetryer(),
		DisableS3ExpressSessionAuth: aws.Bool(true),
		RequestChecksumCalculation:  aws.RequestChecksumCalculationWhenRequired,
		// A capped read never reaches the end of the body, where a
		// checksum would be checked; do not ask for one.
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// awsRetryer retries a failed request once, but not one the egress policy
// refused: an address refused stays refused.
func awsRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = s3MaxAttempts
		o.Retryables = append([]retry.IsErrorRetryable{
			retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
				if errors.Is(err, egress.ErrRefused) {
					return aws.FalseTernary
				}
				return aws.UnknownTernary
			}),
		}, o.Retryables...)
	})
}

// s3FreshSigner signs every request with a new SDK SigV4 signer. The
// SDK's signer caches the derived signing key per access key id for a
// whole day and ignores the secret key when it looks it up: a shared one
// would keep key material in the long-lived client and go on signing with
// a secret key that was rotated (or that is wrong) under the same access
// key id.
type s3FreshSigner struct{}

func (s3FreshSigner) SignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request, payloadHash, service, region string, at time.Time, optFns ...func(*v4.SignerOptions)) error {
	return v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).
		SignHTTP(ctx, creds, r, payloadHash, service, region, at, optFns...)
}

// errS3TooLarge is a response body that went past s3BodyCap's limit.
var errS3TooLarge = errors.New("tools: s3 response body too large")

// s3BodyCap limits every response body read through it, so a hostile
// upstream cannot make the SDK buffer an endless list response. The cap
// applies to what the transport delivers, after any decompression.
type s3BodyCap struct {
	next http.RoundTripper
	max  int64
}

func (c s3BodyCap) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &s3CappedBody{ReadCloser: resp.Body, left: c.max}
	return resp, nil
}

type s3CappedBody struct {
	io.ReadCloser
	left int64
}

func (b *s3CappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// At the cap: only the end of the body may follow.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, errS3TooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// Name returns the tool's key in keyhole.yaml.
func (t *s3Tool) Name() string { return t.name }

// Kind returns "s3".
func (t *s3Tool) Kind() string { return "s3" }

// Description returns the configured description or one naming the bucket.
func (t *s3Tool) Description() string { return t.description }

// SecretName returns the vault secret holding the tool's AWS credentials.
func (t *s3Tool) SecretName() string { return t.secret }

// InputSchema returns the JSON Schema of the tool's arguments.
func (t *s3Tool) InputSchema() json.RawMessage { return t.inputSchema }

// Info tells policy this is an s3 tool (grants name actions and prefixes)
// and which bucket its calls go to, for the audit.
func (t *s3Tool) Info() policy.ToolInfo { return policy.ToolInfo{Kind: "s3", Bucket: t.bucket} }

// auditFields describes an s3 call: bucket, action and key (or prefix).
func (t *s3Tool) auditFields(c *Call) AuditFields {
	return AuditFields{Kind: "s3", Bucket: t.bucket, Action: c.Request.Action, Key: c.Request.Key}
}
