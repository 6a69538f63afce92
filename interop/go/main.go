// Command pulse-interop is a Go peer for pulse-trio's interoperability tests.
//
// It speaks goa.design/pulse's Redis wire protocol (replicated maps, streams, readers and
// sinks) as documented in pulse-trio's reference notes for goa.design/pulse v1.6.5, using
// go-redis v9.18.0, the client that release uses. It is NOT goa.design/pulse itself: the
// Go module proxy available to this project refuses to serve that module (see the README's
// "Using pulse-trio with Go services" section). Everything it writes to Redis is written the
// way the notes say the Go library writes it, so the Python side is checked against an
// implementation of the protocol that shares no code with it.
//
// The tests drive it over stdin/stdout: it prints JSON lines (one object per line, always
// with a "type" field) and reads commands as JSON lines ({"id": n, "op": "...", ...});
// each command is answered by a {"type": "result", "id": n, ...} line. It exits cleanly on
// SIGTERM/SIGINT (printing {"type": "closed"}) or when stdin is closed.
//
// Subcommands:
//
//	map-join <map>                         join a replicated map, print every change
//	stream <stream> [--maxlen N]           add events / destroy the stream on command
//	reader <stream> [--start S] [--block ms]
//	sink <stream> <sink> [--ack|--no-ack] [--grace ms] [--block ms] [--start S]
//	                     [--check-idle ms]
//
// The Redis address comes from --redis host:port or PULSE_REDIS_ADDR (no password).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// out serialises JSON lines on stdout.
var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

// emit prints one JSON line.
func emit(v map[string]any) {
	out.Lock()
	defer out.Unlock()
	if err := out.enc.Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "write stdout:", err)
		os.Exit(3)
	}
}

// logf writes a diagnostic line on stderr (the tests show it when they fail).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05.000")+" "+format+"\n", args...)
}

// command is one JSON line read from stdin.
type command map[string]any

func (c command) str(name string) string {
	s, _ := c[name].(string)
	return s
}

func (c command) strs(name string) []string {
	raw, _ := c[name].([]any)
	res := make([]string, 0, len(raw))
	for _, v := range raw {
		s, _ := v.(string)
		res = append(res, s)
	}
	return res
}

func (c command) int(name string) int64 {
	switch v := c[name].(type) {
	case float64:
		return int64(v)
	case json.Number:
		n, _ := v.Int64()
		return n
	}
	return 0
}

// reply answers command c with the given fields (ok=true) or with an error.
func reply(c command, fields map[string]any, err error) {
	res := map[string]any{"type": "result", "id": c["id"], "op": c["op"]}
	if err != nil {
		res["ok"] = false
		res["error"] = err.Error()
	} else {
		res["ok"] = true
		for k, v := range fields {
			res[k] = v
		}
	}
	emit(res)
}

// handler executes one stdin command; it must call reply exactly once.
type handler func(ctx context.Context, c command)

// serveStdin runs handle for each JSON line of stdin, in order, until stdin closes or ctx
// is done; then it calls stop.
func serveStdin(ctx context.Context, handle handler, stop context.CancelFunc) {
	go func() {
		defer stop()
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 {
				continue
			}
			var c command
			if err := json.Unmarshal(line, &c); err != nil {
				emit(map[string]any{"type": "error", "error": "bad command: " + err.Error()})
				continue
			}
			if ctx.Err() != nil {
				return
			}
			handle(ctx, c)
		}
	}()
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: pulse-interop [--redis host:port] <subcommand> ...
  map-join <map>
  stream <stream> [--maxlen N]
  reader <stream> [--start oldest|newest|<id>] [--block ms]
  sink <stream> <sink> [--ack|--no-ack] [--grace ms] [--block ms] [--start S] [--check-idle ms]`)
	os.Exit(2)
}

func main() {
	addr := flag.String("redis", os.Getenv("PULSE_REDIS_ADDR"), "Redis host:port")
	flag.Usage = usage
	flag.Parse()
	if *addr == "" {
		*addr = "127.0.0.1:6379"
	}
	args := flag.Args()
	if len(args) < 2 {
		usage()
	}
	rdb := redis.NewClient(&redis.Options{Addr: *addr, PoolSize: 20})
	defer rdb.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := rdb.Ping(ctx).Err(); err != nil {
		logf("cannot reach Redis at %s: %v", *addr, err)
		os.Exit(1)
	}

	var err error
	switch args[0] {
	case "map-join":
		err = runMapJoin(ctx, stop, rdb, args[1])
	case "stream", "stream-add":
		err = runStream(ctx, stop, rdb, args[1:])
	case "reader":
		err = runReader(ctx, stop, rdb, args[1:])
	case "sink":
		err = runSink(ctx, stop, rdb, args[1:])
	default:
		usage()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		logf("%s failed: %v", args[0], err)
		emit(map[string]any{"type": "fatal", "error": err.Error()})
		os.Exit(1)
	}
	emit(map[string]any{"type": "closed"})
}
