package tools

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/keyhole-dev/keyhole/policy"
)

var (
	s3SecretNameRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)
	s3RegionRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
)

// s3Settings are an s3 tool's checked settings, defaults applied.
type s3Settings struct {
	endpoint *string // nil: AWS's own endpoint for the region
	sts      *string // nil: AWS STS for the region
	maxKeys  int32
	maxBytes int64
	// bodyCap caps every response body the SDK reads, list pages included.
	bodyCap int64
	timeout time.Duration
	net     network
}

// s3ConfigCheck collects every problem of one tool's configuration.
type s3ConfigCheck struct {
	name string
	errs []error
}

func (k *s3ConfigCheck) fail(field, format string, args ...any) {
	k.errs = append(k.errs, &policy.FieldError{Path: "tools." + k.name + "." + field, Msg: fmt.Sprintf(format, args...)})
}

// checkS3Config checks an s3 tool's configuration and returns its
// settings, or every problem found.
func checkS3Config(name string, c Config) (s3Settings, []error) {
	k := &s3ConfigCheck{name: name}
	k.foreignFields(c)
	set := s3Settings{endpoint: k.upstream(c), sts: k.stsEndpoint(c)}
	set.maxKeys, set.maxBytes, set.timeout = k.limits(c)
	set.bodyCap = max(s3MaxResponseBytes, set.maxBytes+1)
	set.net = checkNetwork(c, k.fail)
	return set, k.errs
}

// foreignFields refuses the fields of the http kind.
func (k *s3ConfigCheck) foreignFields(c Config) {
	for _, f := range []struct {
		field string
		set   bool
	}{
		{"base_url", c.BaseURL != ""},
		{"method", c.Method != ""},
		{"path", c.Path != ""},
		{"input_schema", c.InputSchema != nil},
		{"follow_redirects", c.FollowRedirects != ""},
		{"allow_headers", c.AllowHeaders != nil},
		{"aws", c.AWS != nil},
		{"response.fields", c.Response.Fields != nil},
		{"credential.header", c.Credential.Header != ""},
		{"credential.prefix", c.Credential.Prefix != ""},
		{"credential.param", c.Credential.Param != ""},
		{"credential.oauth2", c.Credential.OAuth2 != nil},
		{"credential.github_app", c.Credential.GitHubApp != nil},
	} {
		if f.set {
			k.fail(f.field, "applies to http tools only; an s3 tool is defined by bucket, region and endpoint")
		}
	}
}

// upstream checks bucket, region, endpoint and credential, and returns the
// endpoint to use (nil for AWS).
func (k *s3ConfigCheck) upstream(c Config) *string {
	if msg := s3BucketProblem(c.Bucket); msg != "" {
		k.fail("bucket", "%s", msg)
	}
	if c.Region == "" {
		k.fail("region", "is required (us-east-1, eu-west-1, or what the S3-compatible store expects, such as auto)")
	} else if !s3RegionRE.MatchString(c.Region) {
		k.fail("region", "must be lower-case letters, digits and hyphens, at most 32 characters")
	}
	if c.Credential.Inject != "aws_sigv4" {
		k.fail("credential.inject", `must be "aws_sigv4" for s3 tools`)
	}
	if !s3SecretNameRE.MatchString(c.Credential.Secret) {
		k.fail("credential.secret", "must match ^[a-z][a-z0-9_.-]{0,63}$")
	}
	if c.Endpoint == "" {
		return nil
	}
	if msg := s3EndpointProblem(c.Endpoint, c.AllowPrivateNetwork || c.AllowInsecureHTTP); msg != "" {
		k.fail("endpoint", "%s", msg)
		return nil
	}
	return aws.String(strings.TrimSuffix(c.Endpoint, "/"))
}

// stsEndpoint checks sts_endpoint, where a role secret is assumed, and
// returns it (nil for AWS STS in the tool's region).
func (k *s3ConfigCheck) stsEndpoint(c Config) *string {
	if c.STSEndpoint == "" {
		return nil
	}
	if msg := s3EndpointProblem(c.STSEndpoint, c.AllowPrivateNetwork || c.AllowInsecureHTTP); msg != "" {
		k.fail("sts_endpoint", "%s", msg)
		return nil
	}
	return aws.String(strings.TrimSuffix(c.STSEndpoint, "/"))
}

// limits checks max_keys, response.max_bytes and timeout, applying their
// defaults.
func (k *s3ConfigCheck) limits(c Config) (maxKeys int32, maxBytes int64, timeout time.Duration) {
	maxKeys, maxBytes, timeout = s3DefaultMaxKeys, s3DefaultMaxBytes, s3DefaultTimeout
	switch {
	case c.MaxKeys < 0 || c.MaxKeys > s3DefaultMaxKeys:
		k.fail("max_keys", "must be between 1 and 1000")
	case c.MaxKeys > 0:
		maxKeys = int32(c.MaxKeys)
	}
	switch {
	case c.Response.MaxBytes < 0:
		k.fail("response.max_bytes", "must be positive")
	case c.Response.MaxBytes > 0:
		maxBytes = int64(c.Response.MaxBytes)
	}
	if c.Timeout != "" {
		d, err := policy.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			k.fail("timeout", "must be a positive duration such as 10s")
		} else {
			timeout = d
		}
	}
	return maxKeys, maxBytes, timeout
}

// s3BucketProblem returns what is wrong with a bucket name under the S3
// naming rules, or "" for a valid name.
func s3BucketProblem(b string) string {
	switch {
	case b == "":
		return "is required"
	case len(b) < 3 || len(b) > 63:
		return "must be 3 to 63 characters long"
	case strings.Trim(b, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "":
		return "may hold only lower-case letters, digits, dots and hyphens"
	case !s3AlphaNum(b[0]) || !s3AlphaNum(b[len(b)-1]):
		return "must begin and end with a letter or digit"
	case strings.Contains(b, ".."):
		return "must not hold two adjacent dots"
	}
	if _, err := netip.ParseAddr(b); err == nil {
		return "must not be formatted as an IP address"
	}
	for _, pre := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(b, pre) {
			return "must not begin with " + pre
		}
	}
	for _, suf := range []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"} {
		if strings.HasSuffix(b, suf) {
			return "must not end with " + suf
		}
	}
	return ""
}

func s3AlphaNum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// s3EndpointProblem returns what is wrong with an endpoint URL, or "": an
// absolute https URL (http only when insecureOK) of a host, with no
// userinfo, path, query or fragment.
func s3EndpointProblem(raw string, insecureOK bool) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a URL"
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return "must be an absolute http(s) URL such as https://minio.internal:9000"
	case u.Scheme == "http" && !insecureOK:
		return "uses http; set allow_private_network or allow_insecure_http to allow it"
	case u.Host == "" || u.Opaque != "":
		return "must name a host"
	case u.User != nil:
		return "must not hold userinfo; credentials come from the vault"
	case u.RawQuery != "" || u.ForceQuery:
		return "must not hold a query"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "must not hold a fragment"
	case u.Path != "" && u.Path != "/":
		return "must not hold a path; the bucket and key are added by the tool"
	}
	return ""
}
