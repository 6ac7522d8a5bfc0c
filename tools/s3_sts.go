package tools

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// Limits of STS AssumeRole that keyhole works within.
const (
	stsMinDuration = 900 * time.Second
	stsMaxDuration = 43200 * time.Second
	// stsMaxPolicyChars is the longest plaintext session policy STS accepts.
	stsMaxPolicyChars = 2048
	// stsRefreshMargin is how long before they expire cached session
	// credentials are replaced, so no call starts with credentials about to
	// lapse.
	stsRefreshMargin = time.Minute
)

// newSTSClient builds the STS client that assumes role secrets, by hand
// as newS3Client does: nothing comes from the environment, and requests
// go through the tool's HTTP client and so its egress guard.
func newSTSClient(region string, endpoint *string, hc *http.Client) *sts.Client {
	return sts.New(sts.Options{
		Region:       region,
		BaseEndpoint: endpoint,
		HTTPClient:   hc,
		HTTPSignerV4: stsFreshSigner{},
		Retryer:      awsRetryer(),
	})
}

// stsFreshSigner signs every request with a new SDK signer, for the reason
// given at s3FreshSigner.
type stsFreshSigner struct{}

func (stsFreshSigner) SignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request, payloadHash, service, region string, at time.Time, optFns ...func(*v4.SignerOptions)) error {
	return v4.NewSigner().SignHTTP(ctx, creds, r, payloadHash, service, region, at, optFns...)
}

// s3RoleCache holds the credentials assumed for each session, so a role is
// assumed once per session rather than once per call.
type s3RoleCache struct {
	mu sync.Mutex
	m  map[string]s3RoleEntry
}

// s3RoleEntry is one session's assumed credentials. fp fingerprints the
// role secret and the session policy they were assumed with: a rotated
// secret or a changed scope assumes the role again.
type s3RoleEntry struct {
	fp    [sha256.Size]byte
	creds aws.Credentials
	sc    *scrub.Scrubber
}

// get returns the entry of session id if it was made with fp and is not
// about to expire.
func (c *s3RoleCache) get(id string, fp [sha256.Size]byte, now time.Time) (s3RoleEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || e.fp != fp || !now.Before(e.creds.Expires.Add(-stsRefreshMargin)) {
		return s3RoleEntry{}, false
	}
	return e, true
}

// put stores the entry of session id and drops every entry past its
// refresh time.
func (c *s3RoleCache) put(id string, e s3RoleEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]s3RoleEntry)
	}
	for k, old := range c.m {
		if !now.Before(old.creds.Expires.Add(-stsRefreshMargin)) {
			delete(c.m, k)
		}
	}
	c.m[id] = e
}

// assume returns credentials of role for the call's session, limited by a
// session policy to what the session's scope grants on this tool and
// expiring with the session (no sooner than STS's 15-minute minimum), and
// a scrubber for the role secret and those credentials. base are the role
// secret's own keys, used for AssumeRole alone. Failures are *ExecError.
func (t *s3Tool) assume(ctx context.Context, sess *CallSession, role string, base aws.Credentials, secret []byte, s *s3Scrubber) (aws.Credentials, *scrub.Scrubber, error) {
	fail := func(msg, detail string) (aws.Credentials, *scrub.Scrubber, error) {
		return aws.Credentials{}, nil, &ExecError{Msg: s.str(msg), Detail: s.str(detail)}
	}
	if sess == nil || sess.ID == "" {
		return fail(fmt.Sprintf("the credential of tool %s is an AWS role, which keyhole assumes per session; this call has no session", t.name), "")
	}
	now := t.now()
	remaining := sess.Expires.Sub(now)
	if remaining <= 0 {
		return fail("the session has expired", "")
	}
	doc, err := s3SessionPolicy(awsPartition(role), t.bucket, sess.S3)
	if err != nil {
		return fail(fmt.Sprintf("keyhole cannot limit the role of tool %s to this session's grants; an operator must narrow the scope", t.name), err.Error())
	}
	h := sha256.New()
	h.Write(secret)
	h.Write([]byte{0})
	h.Write([]byte(doc))
	var fp [sha256.Size]byte
	h.Sum(fp[:0])
	if e, ok := t.roles.get(sess.ID, fp, now); ok {
		return e.creds, e.sc, nil
	}
	duration := min(max(remaining, stsMinDuration), stsMaxDuration)
	out, err := t.sts.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String(role),
		RoleSessionName: aws.String(stsSessionName(sess.ID)),
		DurationSeconds: aws.Int32(int32(duration / time.Second)),
		Policy:          aws.String(doc),
	}, func(o *sts.Options) {
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return base, nil })
	})
	if err != nil {
		ee := t.execError(s, "AssumeRole", err)
		ee.Msg = "assuming the AWS role of tool " + t.name + " failed: " + ee.Msg
		return aws.Credentials{}, nil, ee
	}
	c := out.Credentials
	if c == nil || aws.ToString(c.AccessKeyId) == "" || aws.ToString(c.SecretAccessKey) == "" || c.Expiration == nil ||
		!awsToken(aws.ToString(c.AccessKeyId), "/, ") || !awsToken(aws.ToString(c.SessionToken), "") {
		return fail("assuming the AWS role of tool "+t.name+" failed: STS returned no usable credentials", "")
	}
	creds := aws.Credentials{
		AccessKeyID:     aws.ToString(c.AccessKeyId),
		SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken:    aws.ToString(c.SessionToken),
		Source:          "keyhole-sts",
		CanExpire:       true,
		Expires:         *c.Expiration,
	}
	vals := append(awsSecretValues(secret), []byte(creds.AccessKeyID), []byte(creds.SecretAccessKey), []byte(creds.SessionToken))
	sc := scrub.New(vals...)
	t.roles.put(sess.ID, s3RoleEntry{fp: fp, creds: creds, sc: sc}, now)
	return creds, sc, nil
}

// stsSessionName is the RoleSessionName for a keyhole session: it shows
// in CloudTrail, so the upstream's log names the session too.
func stsSessionName(id string) string {
	name := []byte("keyhole-" + id)
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_+=,.@-", c) >= 0) {
			name[i] = '-'
		}
	}
	return string(name[:min(len(name), 64)])
}

// awsPartition returns the partition of an ARN (aws, aws-cn, aws-us-gov).
func awsPartition(arn string) string {
	parts := strings.SplitN(arn, ":", 3)
	if len(parts) < 2 || parts[1] == "" {
		return "aws"
	}
	return parts[1]
}

// iamPolicy is an IAM policy document.
type iamPolicy struct {
	Version   string         `json:"Version"`
	Statement []iamStatement `json:"Statement"`
}

type iamStatement struct {
	Effect    string                    `json:"Effect"`
	Action    string                    `json:"Action"`
	Resource  []string                  `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

// iamLiteral escapes IAM's wildcard characters in a key prefix, so the
// policy matches the prefix as written.
var iamLiteral = strings.NewReplacer("$", "${$}", "*", "${*}", "?", "${?}")

// s3SessionPolicy is the session policy for grants on bucket, matching
// what policy decides (see policy.S3Prefix): s3:ListBucket with s3:prefix
// limited to the list prefixes the grants allow, and s3:GetObject (which
// also authorizes HEAD) on the keys granted get or head. A prefix that ends
// at a segment ("reports/2026") becomes the exact key and the keys under it
// (".../reports/2026" and ".../reports/2026/*"), never reports/2026-secret;
// a string prefix ("reports/2026*") becomes ".../reports/2026*". Nothing
// else: no other action, and no kms:Decrypt.
func s3SessionPolicy(partition, bucket string, grants []policy.S3Grant) (string, error) {
	var listed, got []policy.S3Prefix
	for _, g := range grants {
		for _, a := range g.Actions {
			switch a {
			case "list":
				listed = append(listed, g.Prefixes...)
			case "get", "head":
				got = append(got, g.Prefixes...)
			}
		}
	}
	if len(listed) == 0 && len(got) == 0 {
		return "", fmt.Errorf("the scope grants no s3 action on bucket %s", bucket)
	}
	arn := "arn:" + partition + ":s3:::" + bucket
	doc := iamPolicy{Version: "2012-10-17"}
	if len(listed) > 0 {
		st := iamStatement{Effect: "Allow", Action: "s3:ListBucket", Resource: []string{arn}}
		// A grant of the whole bucket allows a list without a prefix,
		// which no s3:prefix condition would match.
		if !slices.ContainsFunc(listed, policy.S3Prefix.Whole) {
			var like []string
			for _, px := range listed {
				like = append(like, iamLiteral.Replace(px.Under)+"*")
			}
			st.Condition = map[string]map[string]any{"StringLike": {"s3:prefix": sortedSet(like)}}
		}
		doc.Statement = append(doc.Statement, st)
	}
	if len(got) > 0 {
		var res []string
		for _, px := range got {
			if px.Key != "" {
				res = append(res, arn+"/"+iamLiteral.Replace(px.Key))
			}
			res = append(res, arn+"/"+iamLiteral.Replace(px.Under)+"*")
		}
		doc.Statement = append(doc.Statement, iamStatement{Effect: "Allow", Action: "s3:GetObject", Resource: sortedSet(res)})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return "", err
	}
	if len(b) > stsMaxPolicyChars {
		return "", fmt.Errorf("the session policy for bucket %s is %d characters; STS accepts at most %d", bucket, len(b), stsMaxPolicyChars)
	}
	return string(b), nil
}

// sortedSet sorts s and drops duplicates, so the policy (and the
// fingerprint of the cached role credentials) does not depend on the
// order of the grants.
func sortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
