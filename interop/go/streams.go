package main

// "stream" (add events, destroy) and "reader", on streaming.NewStream and Stream.NewReader.

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"

	"github.com/redis/go-redis/v9"
	"goa.design/pulse/streaming"
	"goa.design/pulse/streaming/options"
)

// streamFlags are the options of streaming.NewStream shared by several subcommands.
type streamFlags struct {
	maxLen, ttl, sliding *int
}

func addStreamFlags(fs *flag.FlagSet) streamFlags {
	return streamFlags{
		maxLen:  fs.Int("maxlen", 1000, "WithStreamMaxLen"),
		ttl:     fs.Int("ttl", 0, "WithStreamTTL in ms"),
		sliding: fs.Int("sliding-ttl", 0, "WithStreamSlidingTTL in ms"),
	}
}

// open creates the stream handle (no Redis I/O) with the library's own logger plumbing.
func (f streamFlags) open(rdb *redis.Client, name string) (*streaming.Stream, error) {
	opts := []options.Stream{
		options.WithStreamMaxLen(*f.maxLen),
		// Always give a logger: without one the library's readers and sinks dereference nil.
		options.WithStreamLogger(newLineLogger()),
	}
	if *f.ttl > 0 {
		opts = append(opts, options.WithStreamTTL(millis(*f.ttl)))
	}
	if *f.sliding > 0 {
		opts = append(opts, options.WithStreamSlidingTTL(millis(*f.sliding)))
	}
	return streaming.NewStream(name, rdb, opts...)
}

// eventLine renders an event delivered by the library.
func eventLine(ev *streaming.Event) map[string]any {
	return map[string]any{
		"type": "event", "stream": ev.StreamName, "sink": ev.SinkName, "id": ev.ID,
		"name": ev.EventName, "topic": ev.Topic,
		"payload":    base64.StdEncoding.EncodeToString(ev.Payload),
		"created_at": ev.CreatedAt().UnixMilli(),
	}
}

// runStream implements "stream <name> [flags]": commands add, remove and destroy.
func runStream(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	sf := addStreamFlags(fs)
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	s, err := sf.open(rdb, name)
	if err != nil {
		return err
	}
	emit(map[string]any{"type": "ready", "stream": name})
	serveStdin(ctx, func(ctx context.Context, c command) {
		switch c.str("op") {
		case "add":
			payload, err := c.bytes("payload")
			if err != nil {
				reply(c, nil, err)
				return
			}
			var opts []options.AddEvent
			if topic := c.str("topic"); topic != "" {
				opts = append(opts, options.WithTopic(topic))
			}
			if only, _ := c["only_if_exists"].(bool); only {
				opts = append(opts, options.WithOnlyIfStreamExists())
			}
			id, err := s.Add(ctx, c.str("name"), payload, opts...)
			reply(c, map[string]any{"event_id": id}, err)
		case "remove":
			reply(c, nil, s.Remove(ctx, c.strs("ids")...))
		case "destroy":
			reply(c, nil, s.Destroy(ctx))
		default:
			reply(c, nil, fmt.Errorf("unknown op %q", c.str("op")))
		}
	}, stop)
	<-ctx.Done()
	return nil
}

// runReader implements "reader <stream> [flags]": a Stream.NewReader whose events are
// printed as "event" lines (reading starts with the first Subscribe, before "ready").
func runReader(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("reader", flag.ExitOnError)
	start := fs.String("start", "newest", "oldest, newest, at:<unix ms> or an event id")
	block := fs.Int("block", 5000, "WithReaderBlockDuration in ms")
	topic := fs.String("topic", "", "WithReaderTopic")
	pattern := fs.String("topic-pattern", "", "WithReaderTopicPattern")
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	s, err := streamFlags{maxLen: new(int), ttl: new(int), sliding: new(int)}.open(rdb, name)
	if err != nil {
		return err
	}
	opts := []options.Reader{options.WithReaderBlockDuration(millis(*block))}
	kind, id, at, err := startPosition(*start)
	if err != nil {
		return err
	}
	switch kind {
	case "oldest":
		opts = append(opts, options.WithReaderStartAtOldest())
	case "newest":
		opts = append(opts, options.WithReaderStartAtNewest())
	case "at":
		opts = append(opts, options.WithReaderStartAt(at))
	case "after":
		opts = append(opts, options.WithReaderStartAfter(id))
	}
	if *topic != "" {
		opts = append(opts, options.WithReaderTopic(*topic))
	}
	if *pattern != "" {
		opts = append(opts, options.WithReaderTopicPattern(*pattern))
	}
	reader, err := s.NewReader(ctx, opts...)
	if err != nil {
		return err
	}
	events := reader.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			emit(eventLine(ev))
		}
	}()
	emit(map[string]any{"type": "ready", "stream": name})
	serveStdin(ctx, func(ctx context.Context, c command) {
		reply(c, nil, fmt.Errorf("reader takes no commands"))
	}, stop)
	<-ctx.Done()
	reader.Close()
	<-done
	return nil
}
