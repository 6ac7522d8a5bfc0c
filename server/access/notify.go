package access

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Webhook headers. The signature is "sha256=" and the hex HMAC-SHA256,
// keyed with the value of approval.webhook_secret, of the timestamp
// header's value, a ".", and the body: a receiver recomputes it, compares
// in constant time, and refuses old timestamps.
const (
	HeaderEvent     = "X-Keyhole-Event"
	HeaderDelivery  = "X-Keyhole-Delivery"
	HeaderTimestamp = "X-Keyhole-Timestamp"
	HeaderSignature = "X-Keyhole-Signature"
)

// webhookAttempts is how often a post is tried before it is given up.
const webhookAttempts = 5

// WebhookBody is what a webhook receives: one step of a request, the
// request as `keyhole access show` has it (never a secret), and the
// commands that answer it.
type WebhookBody struct {
	// Event is access.request, access.approve, access.deny,
	// access.expire or access.use.
	Event   string    `json:"event"`
	Time    time.Time `json:"time"`
	Request Request   `json:"request"`
	Approve string    `json:"approve,omitempty"`
	Deny    string    `json:"deny,omitempty"`
}

// Sign returns the value of the signature header for a body posted at
// timestamp with key.
func Sign(key []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// notifier announces requests: a desktop notification for each new one
// (where the scope asks for it and notify-send exists) and a signed POST
// of every step to the scope's webhook, in order, retried with backoff.
type notifier struct {
	log      *slog.Logger
	sendPath string
	key      func(string) ([]byte, error)
	client   *http.Client
	backoff  func(int) time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the webhook deliverer
	shown  sync.WaitGroup // desktop notifications
	queue  chan Event

	mu     sync.Mutex
	closed bool
}

func newNotifier(o Options, log *slog.Logger) *notifier {
	n := &notifier{log: log, sendPath: o.NotifySend, key: o.WebhookKey, client: o.HTTPClient, backoff: o.Backoff, queue: make(chan Event, 256)}
	if n.sendPath == "" {
		if p, err := exec.LookPath("notify-send"); err == nil {
			n.sendPath = p
		}
	}
	if n.client == nil {
		n.client = &http.Client{
			Timeout:       10 * time.Second,
			Transport:     &http.Transport{Proxy: nil, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 10 * time.Second},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if n.backoff == nil {
		n.backoff = func(attempt int) time.Duration { return time.Second << (attempt - 1) }
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(1)
	go n.deliver()
	return n
}

// announce starts the notifications of ev; it never blocks.
func (n *notifier) announce(ev Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	if ev.Type == EventRequest && ev.Request.Notify.Desktop && n.sendPath != "" {
		n.shown.Add(1)
		go n.desktop(ev)
	}
	if ev.Request.Notify.Webhook != "" {
		select {
		case n.queue <- ev:
		default:
			n.log.Warn("access webhook queue is full; event dropped", "request", ev.Request.ID, "event", ev.Type)
		}
	}
}

// close lets desktop notifications finish (each is bounded by a
// timeout), stops deliveries (a post being retried is abandoned) and
// waits for them.
func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.shown.Wait()
	n.cancel()
	n.wg.Wait()
}

// desktop runs notify-send for a new request.
func (n *notifier) desktop(ev Event) {
	defer n.shown.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := &ev.Request
	title := "keyhole: approve " + r.ID + "?"
	lines := []string{
		r.Summary(),
		"session " + r.Session + " (scope " + r.Scope + clientSuffix(r.Client) + ")",
	}
	if len(r.Risks) > 0 {
		lines = append(lines, "risks: "+strings.Join(r.Risks, ", "))
	}
	lines = append(lines, "keyhole access show "+r.ID, "keyhole access approve "+r.ID)
	for i, l := range lines {
		lines[i] = markupSafe(l)
	}
	cmd := exec.CommandContext(ctx, n.sendPath, "--app-name=keyhole", "--urgency=critical", markupSafe(title), strings.Join(lines, "\n"))
	if out, err := cmd.CombinedOutput(); err != nil {
		n.log.Warn("desktop notification failed", "request", r.ID, "error", err, "output", markupSafe(string(out)))
	}
}

func clientSuffix(c string) string {
	if c == "" {
		return ""
	}
	return ", client " + c
}

// markupSafe makes agent-chosen text safe for a notification body, which
// notification daemons read as markup: no tags, no entities, no control
// or bidirectional characters, at most 300 bytes a line.
func markupSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "") + "…"
	}
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// deliver posts queued events to their webhooks, one at a time, in
// order.
func (n *notifier) deliver() {
	defer n.wg.Done()
	for {
		select {
		case ev := <-n.queue:
			n.post(ev)
		case <-n.ctx.Done():
			return
		}
	}
}

// post delivers one event, retrying a network error, a 408, a 429 or a
// 5xx with backoff; another answer ends it.
func (n *notifier) post(ev Event) {
	r := &ev.Request
	host := webhookHost(r.Notify.Webhook)
	if n.key == nil {
		n.log.Error("access webhook has no key source; not posted", "request", r.ID, "host", host)
		return
	}
	key, err := n.key(r.Notify.WebhookSecret)
	if err != nil {
		n.log.Error("access webhook secret unavailable; not posted (keyhole secret set "+r.Notify.WebhookSecret+")", "request", r.ID, "host", host, "error", err)
		return
	}
	defer clear(key)
	wb := WebhookBody{Event: "access." + ev.Type, Time: ev.Time.UTC(), Request: ev.Request}
	if r.State == StateOpen {
		wb.Approve, wb.Deny = "keyhole access approve "+r.ID, "keyhole access deny "+r.ID
	}
	body, err := json.Marshal(wb)
	if err != nil {
		n.log.Error("encode access webhook", "request", r.ID, "error", err)
		return
	}
	var id [16]byte
	rand.Read(id[:])
	delivery := hex.EncodeToString(id[:])
	for attempt := 1; attempt <= webhookAttempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(n.backoff(attempt - 1))
			select {
			case <-t.C:
			case <-n.ctx.Done():
				t.Stop()
				return
			}
		}
		status, err := n.send(r.Notify.Webhook, key, ev.Type, delivery, body)
		switch {
		case err == nil && status/100 == 2:
			return
		case err == nil && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests && status < 500:
			n.log.Error("access webhook refused the event; not retried", "request", r.ID, "host", host, "status", status)
			return
		case n.ctx.Err() != nil:
			return
		}
		n.log.Warn("access webhook post failed", "request", r.ID, "host", host, "attempt", attempt, "status", status, "error", err)
	}
	n.log.Error("access webhook gave up", "request", r.ID, "host", host, "attempts", webhookAttempts)
}

// send makes one attempt and returns the status.
func (n *notifier) send(target string, key []byte, event, delivery string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keyhole")
	req.Header.Set(HeaderEvent, "access."+event)
	req.Header.Set(HeaderDelivery, delivery)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(key, ts, body))
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may hold a token of the receiver's
		}
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// webhookHost is the host of a webhook URL, for logs (its path or query
// may hold a token of the receiver's).
func webhookHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}
