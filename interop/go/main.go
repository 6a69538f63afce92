// Command pulse-interop is the Go peer of pulse-trio's interoperability tests.
//
// It is a thin driver of the real goa.design/pulse library (v1.6.5): every map, stream,
// reader, sink and pool node it runs is the library's own (rmap.Join, streaming.NewStream,
// Stream.NewReader, Stream.NewSink, Sink.Ack, pool.AddNode, ...). It implements no part of
// the protocol itself; it only prints what the library delivers and calls what the tests
// ask for.
//
// The tests drive it over stdin/stdout: it prints JSON lines (one object per line, always
// with a "type" field) and reads commands as JSON lines ({"id": n, "op": "...", ...});
// each command is answered by a {"type": "result", "id": n, "ok": bool, ...} line. The
// library's log entries are printed as {"type": "log", ...} lines. The peer exits cleanly
// on SIGTERM/SIGINT (printing {"type": "closed"}) or when stdin is closed.
//
// Subcommands:
//
//	map-join <map> [--ttl ms] [--sliding-ttl ms]
//	stream <stream> [--maxlen N] [--ttl ms] [--sliding-ttl ms]
//	reader <stream> [--start S] [--block ms] [--topic T] [--topic-pattern RE]
//	sink <stream> <sink> [--ack|--no-ack] [--grace ms] [--block ms] [--start S]
//	                     [--noack-mode] [--topic T] [--ttl ms] [--sliding-ttl ms]
//	pool-node <pool> [--client-only] [--worker-ttl ms] [--grace ms] [--block ms]
//
// Start positions S: "oldest", "newest", "at:<unix ms>" or an event id.
// The Redis address comes from --redis host:port or PULSE_REDIS_ADDR (no password).
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
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
	if v, ok := c[name].(float64); ok {
		return int64(v)
	}
	return 0
}

func (c command) bytes(name string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(c.str(name))
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

// millis turns a flag value in milliseconds into a duration.
func millis(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }

// startPosition parses a start flag: "oldest", "newest", "at:<unix ms>" or an event id.
// It returns the kind ("oldest", "newest", "at" or "after"), the id and the time.
func startPosition(s string) (kind, id string, at time.Time, err error) {
	switch {
	case s == "" || s == "newest":
		return "newest", "", at, nil
	case s == "oldest":
		return "oldest", "", at, nil
	case strings.HasPrefix(s, "at:"):
		ms, perr := strconv.ParseInt(strings.TrimPrefix(s, "at:"), 10, 64)
		if perr != nil {
			return "", "", at, fmt.Errorf("bad start %q: %w", s, perr)
		}
		return "at", "", time.UnixMilli(ms), nil
	}
	return "after", s, at, nil
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: pulse-interop [--redis host:port] <subcommand> ...
  map-join <map> [--ttl ms] [--sliding-ttl ms]
  stream <stream> [--maxlen N] [--ttl ms] [--sliding-ttl ms]
  reader <stream> [--start S] [--block ms] [--topic T] [--topic-pattern RE]
  sink <stream> <sink> [--ack|--no-ack] [--grace ms] [--block ms] [--start S] [--noack-mode]
                       [--topic T] [--ttl ms] [--sliding-ttl ms]
  pool-node <pool> [--client-only] [--worker-ttl ms] [--grace ms] [--block ms]`)
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
		err = runMapJoin(ctx, stop, rdb, args[1:])
	case "stream":
		err = runStream(ctx, stop, rdb, args[1:])
	case "reader":
		err = runReader(ctx, stop, rdb, args[1:])
	case "sink":
		err = runSink(ctx, stop, rdb, args[1:])
	case "pool-node":
		err = runPoolNode(ctx, stop, rdb, args[1:])
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
