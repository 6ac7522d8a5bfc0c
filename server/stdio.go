package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"io"
	"log"
	"log/slog"
	"strings"

	mcpserver "github.com/mark3labs/mcp-go/server"
)

// MaxMessageBytes caps one JSON-RPC message from a client (tool arguments
// have their own, smaller cap and a precise error). A longer line is
// dropped and answered with a JSON-RPC parse error; the server keeps
// serving.
const MaxMessageBytes = 16 << 20

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
	b.log.Info("session started", LogSession, s.ID(), LogScope, scope, "expires", s.Info(b.now()).Expires)

	stdio := mcpserver.NewStdioServer(b.mcp())
	stdio.SetErrorLogger(log.New(slogWriter{b.log}, "", 0))
	stdio.SetContextFunc(func(ctx context.Context) context.Context { return WithSession(ctx, s) })
	err = stdio.Listen(ctx, CapLines(in, MaxMessageBytes), out)
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

// CapLines copies r line by line; a line longer than max is replaced by a
// line that is not JSON, so the MCP server answers it with a parse error
// instead of buffering it whole.
func CapLines(r io.Reader, max int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			line, err := readCapped(br, max)
			if len(line) > 0 {
				if _, werr := pw.Write(line); werr != nil {
					return
				}
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr
}

// oversized stands in for a dropped line.
var oversized = []byte("\x00 message too large\n")

func readCapped(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max {
			// Drop the rest of this line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			return oversized, err
		}
		line = append(line, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, err
	}
}
