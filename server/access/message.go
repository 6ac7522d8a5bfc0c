package access

import (
	"fmt"
	"strings"
	"time"
)

// What the agent is told when its call does not proceed. Each message
// names the request and what the user must do; none of them approves
// anything, and nothing the agent answers does.

// Summary describes the request's call in one line: "github: POST
// api.github.com/repos/acme/api/issues/7/labels" or "archive: get
// acme-archive/reports/q1.csv".
func (r *Request) Summary() string {
	c := &r.Call
	if c.Kind == "s3" {
		return c.Tool + ": " + c.Action + " " + c.Bucket + "/" + c.Key
	}
	return c.Tool + ": " + c.Method + " " + c.Host + c.Path
}

func pendingMessage(r *Request, waited time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "This call needs your user's approval and was not made. It is access request %s (%s).", r.ID, r.Summary())
	if waited > 0 {
		fmt.Fprintf(&b, " Nobody answered within %s.", waited)
	}
	fmt.Fprintf(&b, " Ask your user to run: keyhole access approve %s — then repeat exactly the same call. The approval is for this one request (same method, path, query and body) and is used once; it expires %s after it is given.", r.ID, r.TTL)
	return b.String()
}

func approvedMessage(r *Request) string {
	return fmt.Sprintf("Access request %s was approved after this call was cancelled, so it was not made. Repeat exactly the same call to use the approval.", r.ID)
}

func deniedMessage(r *Request) string {
	msg := fmt.Sprintf("Your user denied access request %s (%s); the call was not made. Do not repeat it: ask your user what to do instead.", r.ID, r.Summary())
	if r.Decision != nil && r.Decision.Note != "" {
		msg += " Their note: " + r.Decision.Note
	}
	return msg
}

func expiredMessage(r *Request) string {
	return fmt.Sprintf("Access request %s (%s) expired: %s. The call was not made; repeat it to ask your user again.", r.ID, r.Summary(), r.Ended)
}

func usedMessage(r *Request) string {
	return fmt.Sprintf("Access request %s was approved once, and an identical call held with this one used the approval; this call was not made. Repeat it to ask your user again.", r.ID)
}

func maxOpenMessage(a Ask, open []string) string {
	return fmt.Sprintf("This call needs your user's approval, but this session already has %d open access requests (%s), the most scope %s allows. The call was not made. Ask your user to answer them (keyhole access list), then try again.",
		len(open), strings.Join(open, ", "), a.Scope)
}
