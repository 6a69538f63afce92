package main

// Streams and readers as goa.design/pulse v1.6.5 lays them out: key "pulse:stream:<name>",
// entry fields n (event name), p (payload), t (topic, only when non-empty) in that order,
// XADD with approximate MAXLEN trimming; a reader is a plain XREAD loop with its own cursor.

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

func streamKey(name string) string { return "pulse:stream:" + name }

// startID translates --start: oldest -> "0", newest -> "$", anything else is an id.
func startID(s string) string {
	switch s {
	case "", "newest":
		return "$"
	case "oldest":
		return "0"
	}
	return s
}

// eventJSON renders one entry; ok is false when n or p is missing.
func eventJSON(stream string, msg redis.XMessage) (map[string]any, bool) {
	name, okN := msg.Values["n"].(string)
	payload, okP := msg.Values["p"].(string)
	if !okN || !okP {
		return map[string]any{"type": "malformed", "stream": stream, "id": msg.ID}, false
	}
	topic, _ := msg.Values["t"].(string)
	return map[string]any{
		"type": "event", "stream": stream, "id": msg.ID, "name": name, "topic": topic,
		"payload": base64.StdEncoding.EncodeToString([]byte(payload)),
	}, true
}

// addEvent is Stream.Add: XADD [NOMKSTREAM] MAXLEN ~ maxLen * n name p payload [t topic].
func addEvent(ctx context.Context, rdb *redis.Client, stream string, maxLen int64, name string, payload []byte, topic string, onlyIfExists bool) (string, error) {
	values := []any{"n", name, "p", payload}
	if topic != "" {
		values = append(values, "t", topic)
	}
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: streamKey(stream), NoMkStream: onlyIfExists, MaxLen: maxLen, Approx: maxLen > 0,
		Values: values,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return id, err
}

// destroyStream is Stream.Destroy: DEL the stream key, then, if the sink membership map
// exists, destroy it with the rmap destroy protocol (tombstone + "destroy:<rev>").
func destroyStream(ctx context.Context, rdb *redis.Client, stream string) error {
	if err := rdb.Del(ctx, streamKey(stream)).Err(); err != nil {
		return err
	}
	sinks := "stream:" + stream + ":sinks"
	n, err := rdb.Exists(ctx, mapKeys(sinks)[0]).Result()
	if err != nil || n == 0 {
		return err
	}
	return mapWriter{rdb: rdb, name: sinks}.Clear(ctx, "destroy")
}

// runStream implements "stream <name> [--maxlen N]": commands add / destroy / remove.
func runStream(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	maxLen := fs.Int64("maxlen", 1000, "XADD MAXLEN ~ (0: no trimming)")
	if len(args) < 1 {
		usage()
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	emit(map[string]any{"type": "ready", "stream": name})
	serveStdin(ctx, func(ctx context.Context, c command) {
		switch c.str("op") {
		case "add":
			payload, err := base64.StdEncoding.DecodeString(c.str("payload"))
			if err != nil {
				reply(c, nil, err)
				return
			}
			onlyIfExists, _ := c["only_if_exists"].(bool)
			id, err := addEvent(ctx, rdb, name, *maxLen, c.str("name"), payload, c.str("topic"), onlyIfExists)
			reply(c, map[string]any{"event_id": id}, err)
		case "destroy":
			reply(c, nil, destroyStream(ctx, rdb, name))
		case "remove":
			err := rdb.XDel(ctx, streamKey(name), c.strs("ids")...).Err()
			reply(c, nil, err)
		default:
			reply(c, nil, fmt.Errorf("unknown op %q", c.str("op")))
		}
	}, stop)
	<-ctx.Done()
	return nil
}

// runReader implements "reader <stream> [--start S] [--block ms] [--count N]".
//
// Like the Go library, a reader started at "newest" keeps sending "$" until it receives
// its first event (so events added between two XREAD calls can be missed).
func runReader(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("reader", flag.ExitOnError)
	start := fs.String("start", "newest", "oldest, newest or an event id")
	block := fs.Int("block", 5000, "XREAD BLOCK in ms")
	count := fs.Int64("count", 1000, "XREAD COUNT")
	if len(args) < 1 {
		usage()
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	key := streamKey(name)
	cursor := startID(*start)
	emit(map[string]any{"type": "ready", "stream": name, "cursor": cursor})
	serveStdin(ctx, func(ctx context.Context, c command) {
		reply(c, nil, fmt.Errorf("reader takes no commands"))
	}, stop)
	for ctx.Err() == nil {
		res, err := rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{key, cursor}, Count: *count,
			Block: time.Duration(*block) * time.Millisecond,
		}).Result()
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			logf("reader %s: XREAD: %v", name, err)
			emit(map[string]any{"type": "read-error", "error": err.Error()})
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		for _, s := range res {
			for _, msg := range s.Messages {
				ev, _ := eventJSON(name, msg)
				emit(ev)
				cursor = msg.ID
			}
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func nowNanos() string { return strconv.FormatInt(time.Now().UnixNano(), 10) }
