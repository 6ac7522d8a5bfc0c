// Command keyhole-bench measures what keyhole costs per call. It runs three
// arms against one loopback upstream, interleaved in rounds so machine drift
// hits all of them alike:
//
//   - direct: a plain HTTP client calling the upstream (the floor);
//   - bare: a minimal mcp-go streamable-HTTP server, in its own process,
//     forwarding the same call with no policy, vault or audit (the MCP
//     protocol's own cost);
//   - keyhole: `keyhole serve --http` with durable audit and every check on,
//     one phantom-token session per client.
//
// bare and keyhole are driven by the same mcp-go client. It also times
// `keyhole stdio --standalone` from launch to the initialize response, and
// reads the resident memory of both servers with 1 and N open sessions.
// With --micro it folds `go test -bench` output into the same table. The
// result is one Markdown table on stdout; progress goes to stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "keyhole-bench:", err)
		os.Exit(1)
	}
}
