package tools

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// ErrAWSSecret is returned (wrapped) when the secret of an aws_sigv4 tool is
// not the JSON object {"access_key_id", "secret_access_key",
// "session_token"?} (s3 tools also accept "role_arn", see
// s3Tool.assume). The wrapping error says what is wrong with it and never
// quotes any part of the secret.
var ErrAWSSecret = errors.New(`tools: aws_sigv4 secret must be JSON {"access_key_id": ..., "secret_access_key": ..., "session_token"?: ...}`)

// maxAWSSecretBytes caps the secret parsed as AWS credentials; STS session
// tokens are a few KiB.
const maxAWSSecretBytes = 64 << 10

// awsSecret is the JSON form of an aws_sigv4 secret in the vault. RoleARN
// is set in a role secret, which s3 tools alone accept: its keys are used
// only to assume that role (see s3Tool.assume).
type awsSecret struct {
	RoleARN         string `json:"role_arn"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token"`
}

// parseAWSSecret decodes an aws_sigv4 secret into SDK credentials. Errors
// wrap ErrAWSSecret and name the problem, never a value: a decoder error
// would quote bytes of the secret, so it is not kept. A role secret is
// refused: only s3 tools assume roles.
func parseAWSSecret(secret []byte) (aws.Credentials, error) {
	creds, role, err := parseAWSRoleSecret(secret)
	if err == nil && role != "" {
		return aws.Credentials{}, fmt.Errorf("%w: role_arn is accepted by s3 tools only", ErrAWSSecret)
	}
	return creds, err
}

// awsRoleARNRE is an IAM role ARN in any partition.
var awsRoleARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$`)

// parseAWSRoleSecret decodes an aws_sigv4 secret that may name a role: it
// returns the credentials and the role ARN ("" for plain credentials).
// Errors are as parseAWSSecret's.
func parseAWSRoleSecret(secret []byte) (aws.Credentials, string, error) {
	bad := func(reason string) (aws.Credentials, string, error) {
		return aws.Credentials{}, "", fmt.Errorf("%w: %s", ErrAWSSecret, reason)
	}
	if len(secret) > maxAWSSecretBytes {
		return bad("it is larger than 64 KiB")
	}
	dec := json.NewDecoder(bytes.NewReader(secret))
	dec.DisallowUnknownFields()
	var s awsSecret
	if err := dec.Decode(&s); err != nil {
		return bad("it is not a JSON object with only those string fields")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("it has data after the JSON object")
	}
	switch {
	case s.AccessKeyID == "":
		return bad("access_key_id is missing")
	case s.SecretAccessKey == "":
		return bad("secret_access_key is missing")
	case !awsToken(s.AccessKeyID, "/, "):
		return bad("access_key_id holds characters an access key id cannot hold")
	case s.SessionToken != "" && !awsToken(s.SessionToken, ""):
		return bad("session_token holds non-printable characters")
	case s.RoleARN != "" && !awsRoleARNRE.MatchString(s.RoleARN):
		return bad("role_arn is not an IAM role ARN (arn:aws:iam::123456789012:role/name)")
	}
	return aws.Credentials{
		AccessKeyID:     s.AccessKeyID,
		SecretAccessKey: s.SecretAccessKey,
		SessionToken:    s.SessionToken,
		Source:          "keyhole",
	}, s.RoleARN, nil
}

// awsToken reports whether s is printable ASCII without any byte of deny,
// so it cannot break the header it is written into.
func awsToken(s, deny string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f {
			return false
		}
		if strings.IndexByte(deny, c) >= 0 {
			return false
		}
	}
	return true
}

// awsSecretValues returns every value of an aws_sigv4 secret that must be
// scrubbed from what the agent sees: when it parses, the access key id, the
// secret access key and the session token; otherwise the secret as stored.
// The JSON around the keys (its field names, a role ARN) is not secret, and
// since the scrubber redacts any eight-byte part of a value, scrubbing the
// whole JSON would redact every `{"access` and `arn:aws:` in any body; every
// form of the whole holds the forms of the keys, which are scrubbed. Use it
// as scrub.New(awsSecretValues(secret)...).
func awsSecretValues(secret []byte) [][]byte {
	creds, _, err := parseAWSRoleSecret(secret)
	if err != nil {
		return [][]byte{secret}
	}
	var vals [][]byte
	for _, v := range []string{creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken} {
		if v != "" {
			vals = append(vals, []byte(v))
		}
	}
	if len(vals) == 0 {
		return [][]byte{secret}
	}
	return vals
}

// awsSignedHeaders are the headers SigV4 signing owns. signAWS removes them
// before signing, so no value set earlier (by the agent or anyone else)
// rides along with the signature.
var awsSignedHeaders = []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"}

// signAWS signs req in place with AWS SigV4 for the service and region of
// the tool's aws block, using the credentials in secret (the JSON of an
// aws_sigv4 secret, see ErrAWSSecret). body must be exactly the request body
// req will send (nil for none): its SHA-256 is the signed payload hash and is
// sent as X-Amz-Content-Sha256, so the signature covers exactly the request
// that was authorized. Call it last, after every header, the path and the
// query are final. The session token, when present, is sent as
// X-Amz-Security-Token. Errors never contain any part of the secret.
func signAWS(req *http.Request, body []byte, secret []byte, cfg *AWS) error {
	if cfg == nil || cfg.Service == "" || cfg.Region == "" {
		return errors.New("tools: aws_sigv4 needs aws.service and aws.region")
	}
	creds, err := parseAWSSecret(secret)
	if err != nil {
		return err
	}
	for _, h := range awsSignedHeaders {
		req.Header.Del(h)
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	// S3 signs the path as sent; every other service signs it escaped once
	// more. The SDK's S3 client makes the same choice.
	signer := v4.NewSigner(func(o *v4.SignerOptions) {
		o.DisableURIPathEscaping = cfg.Service == "s3"
	})
	if err := signer.SignHTTP(req.Context(), creds, req, payloadHash, cfg.Service, cfg.Region, time.Now()); err != nil {
		return fmt.Errorf("tools: aws_sigv4 signing: %w", err)
	}
	return nil
}
