package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// MaxMessageBytes caps one JSON-RPC message from a client, on every
// transport: a line over stdio (standalone or through the broker's
// relay) and a request body over HTTP. A larger message is answered with
// a JSON-RPC error naming the limit, and the session goes on. (Tool
// arguments have their own, smaller cap and a precise error.)
const MaxMessageBytes = 4 << 20

// maxLineBytes is the longest line read whole to answer it with its id;
// a longer one is skipped unread and answered with a null id.
const maxLineBytes = 4 * MaxMessageBytes

// NewSessionID returns a fresh random session id ("ses_" + 20 base32 chars).
func NewSessionID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("keyhole: crypto/rand failed: " + err.Error())
	}
	return "ses_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// ServeStdio serves one MCP client over in/out as one session of scope: it
// starts now, ends when the client disconnects (in reaches EOF), and
// expires at the scope's ttl. stdout carries only the protocol.
func (b *Broker) ServeStdio(ctx context.Context, scope string, in io.Reader, out io.Writer) error {
	s, err := b.NewSession(NewSessionID(), scope, 0, "stdio")
	if err != nil {
		return err
	}
	// Every call of a session is recorded, or fails closed; a start that
	// cannot be recorded is logged, and the first call will fail.
	if _, err := b.audit.Write(ctx, sessionNewRecord(b.now(), s.Info(b.now()))); err != nil {
		b.log.Error("session start could not be recorded in the audit log", LogSession, s.ID(), LogError, err)
	}
	b.log.Info("session started", LogSession, s.ID(), LogScope, scope, "expires", s.Info(b.now()).Expires)

	w := &LineWriter{w: out}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(ReadMessages(in, func(line []byte) error {
			_, err := pw.Write(line)
			return err
		}, w.WriteMessage))
	}()
	stdio := mcpserver.NewStdioServer(b.mcp())
	stdio.SetErrorLogger(log.New(slogWriter{b.log}, "", 0))
	stdio.SetContextFunc(func(ctx context.Context) context.Context { return WithSession(ctx, s) })
	err = stdio.Listen(ctx, pr, w)
	pr.Close()
	s.End("client disconnected")
	s.endMinted(ctx, b.log)
	b.log.Info("session ended", LogSession, s.ID(), "calls", s.Info(b.now()).Calls)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// slogWriter adapts mcp-go's *log.Logger output to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn("mcp: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// LineWriter serializes whole lines to one writer: mcp-go's stdio server
// writes each message with one Write, and keyhole's own answers (a
// message refused for its size, say) go between them, never inside one.
type LineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLineWriter returns a LineWriter on w.
func NewLineWriter(w io.Writer) *LineWriter { return &LineWriter{w: w} }

// Write writes p whole, under the writer's lock.
func (l *LineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// WriteMessage writes v as one JSON line.
func (l *LineWriter) WriteMessage(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = l.Write(append(b, '\n'))
	return err
}

// TooLargeMessage is what a client is told about a message over
// MaxMessageBytes of size bytes (-1: not known).
func TooLargeMessage(size int64) string {
	msg := fmt.Sprintf("message too large: keyhole accepts JSON-RPC messages of at most %d MiB (%d bytes)", MaxMessageBytes>>20, MaxMessageBytes)
	if size >= 0 {
		msg += fmt.Sprintf("; this one has %d bytes", size)
	}
	return msg + "; send less (arguments of a tool call may have at most 1 MiB)"
}

// TooLargeError is the JSON-RPC error answering a message over
// MaxMessageBytes, with the message's id when it could be read.
func TooLargeError(id mcp.RequestId, size int64) mcp.JSONRPCError {
	return mcp.NewJSONRPCError(id, mcp.INVALID_REQUEST, TooLargeMessage(size), map[string]int{"limit": MaxMessageBytes})
}

// ReadMessages reads newline-delimited JSON-RPC messages from r until it
// ends (nil at EOF) or fn or refuse fails. fn gets each line of at most
// MaxMessageBytes, newline included; a longer line is not passed on:
// refuse gets TooLargeError for it instead, with its id when the line is
// short enough to read whole (up to four times the limit), and reading
// goes on. Memory stays bounded whatever r sends.
func ReadMessages(r io.Reader, fn func(line []byte) error, refuse func(any) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, size, err := readLine(br)
		if size > MaxMessageBytes {
			if rerr := refuse(TooLargeError(messageID(line), size)); rerr != nil {
				return rerr
			}
		} else if len(line) > 0 {
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine reads one line and its size. A line longer than maxLineBytes
// is read through and dropped: only its size is returned.
func readLine(br *bufio.Reader) ([]byte, int64, error) {
	var line []byte
	var size int64
	for {
		frag, err := br.ReadSlice('\n')
		size += int64(len(frag))
		if size <= maxLineBytes {
			line = append(line, frag...)
		} else {
			line = nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, size, err
	}
}

// messageID is the id of a JSON-RPC message, or a null id when it has
// none or cannot be read.
func messageID(line []byte) mcp.RequestId {
	var m struct {
		ID mcp.RequestId `json:"id"`
	}
	if len(line) == 0 || json.Unmarshal(line, &m) != nil {
		return mcp.NewRequestId(nil)
	}
	return m.ID
}
