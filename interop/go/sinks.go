package main

// "sink": one instance of a sink, created with Stream.NewSink; events are printed and,
// with --ack, acknowledged with Sink.Ack.

import (
	"context"
	"flag"
	"fmt"
	"reflect"
	"sync"

	"github.com/redis/go-redis/v9"
	"goa.design/pulse/rmap"
	"goa.design/pulse/streaming"
	"goa.design/pulse/streaming/options"
)

// consumerOf reads the sink instance's current consumer name. streaming.Sink does not
// export it; the peer reads the unexported field so the tests can name this instance's
// consumer in the group (it only changes when the library re-creates a stale consumer).
func consumerOf(s *streaming.Sink) string {
	return reflect.ValueOf(s).Elem().FieldByName("consumer").String()
}

// sinkOptions turns the sink flags into library options.
func sinkOptions(start string, grace, block int, noAckMode bool, topic, pattern string) ([]options.Sink, error) {
	opts := []options.Sink{
		options.WithSinkAckGracePeriod(millis(grace)),
		options.WithSinkBlockDuration(millis(block)),
	}
	kind, id, at, err := startPosition(start)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "oldest":
		opts = append(opts, options.WithSinkStartAtOldest())
	case "newest":
		opts = append(opts, options.WithSinkStartAtNewest())
	case "at":
		opts = append(opts, options.WithSinkStartAt(at))
	case "after":
		opts = append(opts, options.WithSinkStartAfter(id))
	}
	if noAckMode {
		opts = append(opts, options.WithSinkNoAck())
	}
	if topic != "" {
		opts = append(opts, options.WithSinkTopic(topic))
	}
	if pattern != "" {
		opts = append(opts, options.WithSinkTopicPattern(pattern))
	}
	return opts, nil
}

// runSink implements "sink <stream> <sink> [flags]".
func runSink(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	sf := addStreamFlags(fs)
	ack := fs.Bool("ack", false, "ack every event (Sink.Ack) once printed")
	noAck := fs.Bool("no-ack", false, "never ack by itself (only on an 'ack' command)")
	noAckMode := fs.Bool("noack-mode", false, "WithSinkNoAck (XREADGROUP NOACK)")
	grace := fs.Int("grace", 20000, "WithSinkAckGracePeriod in ms")
	block := fs.Int("block", 5000, "WithSinkBlockDuration in ms")
	start := fs.String("start", "newest", "oldest, newest, at:<unix ms> or an event id")
	topic := fs.String("topic", "", "WithSinkTopic")
	pattern := fs.String("topic-pattern", "", "WithSinkTopicPattern")
	watch := fs.Bool("watch-membership", false,
		"also join the stream's sink membership map (a separate replica) and print its changes")
	if len(args) < 2 {
		usage()
	}
	streamName, sinkName := args[0], args[1]
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	if *ack && *noAck {
		return fmt.Errorf("--ack and --no-ack are exclusive")
	}
	s, err := sf.open(rdb, streamName)
	if err != nil {
		return err
	}
	var watchDone chan struct{}
	if *watch {
		members, err := rmap.Join(ctx, "stream:"+streamName+":sinks", rdb, rmap.WithLogger(newLineLogger()))
		if err != nil {
			return err
		}
		changes := members.Subscribe()
		watchDone = make(chan struct{})
		go func() {
			defer close(watchDone)
			for kind := range changes {
				emit(map[string]any{
					"type": "membership", "event": eventName(kind), "content": members.Map(),
					"rev": revision(members),
				})
			}
		}()
		defer func() { members.Close(); <-watchDone }()
	}
	opts, err := sinkOptions(*start, *grace, *block, *noAckMode, *topic, *pattern)
	if err != nil {
		return err
	}
	sink, err := s.NewSink(ctx, sinkName, opts...)
	if err != nil {
		return err
	}
	// The library reads as soon as the sink exists; subscribe at once (events read before
	// a subscription exists are delivered to nobody and wait for the idle reclaim).
	events := sink.Subscribe()
	var (
		mu        sync.Mutex
		delivered = map[string]*streaming.Event{}
		count     = map[string]int{}
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			mu.Lock()
			delivered[ev.ID] = ev
			count[ev.ID]++
			n := count[ev.ID]
			mu.Unlock()
			line := eventLine(ev)
			line["consumer"] = consumerOf(sink)
			line["deliveries_here"] = n
			emit(line)
			if *ack {
				if err := sink.Ack(context.Background(), ev); err != nil {
					logf("sink %s: ack %s: %v", sinkName, ev.ID, err)
				}
			}
		}
	}()
	emit(map[string]any{"type": "ready", "stream": streamName, "sink": sinkName, "consumer": consumerOf(sink)})
	serveStdin(ctx, func(ctx context.Context, c command) {
		switch c.str("op") {
		case "ack":
			acked := 0
			for _, id := range c.strs("ids") {
				mu.Lock()
				ev := delivered[id]
				mu.Unlock()
				if ev == nil {
					reply(c, nil, fmt.Errorf("event %s was not delivered here", id))
					return
				}
				if err := sink.Ack(ctx, ev); err != nil {
					reply(c, nil, err)
					return
				}
				acked++
			}
			reply(c, map[string]any{"acked": acked}, nil)
		case "consumer":
			reply(c, map[string]any{"consumer": consumerOf(sink)}, nil)
		default:
			reply(c, nil, fmt.Errorf("unknown op %q", c.str("op")))
		}
	}, stop)
	<-ctx.Done()
	sink.Close(context.Background())
	<-done
	return nil
}
