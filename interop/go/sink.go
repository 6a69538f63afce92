package main

// A sink instance as goa.design/pulse v1.6.5 runs one (reference notes, part B5):
//
//   - consumer group = sink name, created at the start id with MKSTREAM (BUSYGROUP ignored);
//   - consumer = a fresh ULID, created with XGROUP CREATECONSUMER, appended to the
//     membership rmap "stream:<stream>:sinks" (key = sink name, JSON list of consumers) and
//     given a keep-alive in the rmap "sink:<sink>:keepalive" (key = consumer, value = Unix
//     nanoseconds), refreshed every ack grace period;
//   - reads with XREADGROUP ">";
//   - every check-idle period, whoever wins the lease "sink:<sink>:stalelease" XAUTOCLAIMs
//     entries idle longer than the grace period to itself, then deletes stale consumers:
//     no keep-alive entry -> deleted at once; keep-alive older than 2 x grace -> deleted and
//     removed from both maps;
//   - the same stale cleanup also runs once at creation, before the consumer is created;
//   - closing does not remove the consumer: the surviving instances reclaim its entries.

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// KEYS[1] lease key; ARGV[1] now (ms); ARGV[2] lease (ms) -> 1 if this instance holds it
var scriptLease = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if not v or tonumber(v) < tonumber(ARGV[1]) then
  redis.call("SET", KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), "PX", ARGV[2])
  return 1
end
return 0
`)

type sink struct {
	rdb        *redis.Client
	stream     string
	name       string
	consumer   string
	grace      time.Duration
	block      time.Duration
	checkIdle  time.Duration
	ack        bool
	noAckMode  bool
	keepalive  *replica
	membership mapWriter
	kaWriter   mapWriter
	mu         sync.Mutex
	delivered  map[string]int // id -> deliveries seen by this instance
}

func (s *sink) key() string { return streamKey(s.stream) }

// deliver prints an event and acks it in --ack mode.
func (s *sink) deliver(ctx context.Context, msg redis.XMessage, claimed bool) {
	ev, ok := eventJSON(s.stream, msg)
	ev["sink"] = s.name
	ev["consumer"] = s.consumer
	ev["claimed"] = claimed
	s.mu.Lock()
	s.delivered[msg.ID]++
	ev["deliveries_here"] = s.delivered[msg.ID]
	s.mu.Unlock()
	emit(ev)
	if ok && s.ack && !s.noAckMode {
		if err := s.rdb.XAck(ctx, s.key(), s.name, msg.ID).Err(); err != nil {
			logf("sink %s: XACK %s: %v", s.name, msg.ID, err)
		}
	}
}

// cleanupStale deletes consumers without a fresh keep-alive (as the Go library does).
func (s *sink) cleanupStale(ctx context.Context) {
	consumers, err := s.rdb.XInfoConsumers(ctx, s.key(), s.name).Result()
	if err != nil {
		if !strings.Contains(err.Error(), "NOGROUP") && ctx.Err() == nil {
			logf("sink %s: XINFO CONSUMERS: %v", s.name, err)
		}
		return
	}
	alive, _ := s.keepalive.snapshot()
	for _, c := range consumers {
		if c.Name == s.consumer {
			continue
		}
		ka, ok := alive[c.Name]
		if !ok {
			s.deleteConsumer(ctx, c.Name, "no keep-alive", false)
			continue
		}
		ns, err := strconv.ParseInt(ka, 10, 64)
		if err != nil {
			logf("sink %s: unparsable keep-alive %q for %s", s.name, ka, c.Name)
			continue
		}
		if time.Since(time.Unix(0, ns)) > 2*s.grace {
			s.deleteConsumer(ctx, c.Name, "stale keep-alive", true)
		}
	}
}

func (s *sink) deleteConsumer(ctx context.Context, consumer, reason string, forget bool) {
	pending, err := s.rdb.XGroupDelConsumer(ctx, s.key(), s.name, consumer).Result()
	if err != nil {
		logf("sink %s: XGROUP DELCONSUMER %s: %v", s.name, consumer, err)
		return
	}
	emit(map[string]any{
		"type": "deleted-consumer", "sink": s.name, "consumer": consumer, "reason": reason,
		"pending_dropped": pending,
	})
	if forget {
		if _, _, err := s.kaWriter.Delete(ctx, consumer); err != nil {
			logf("sink %s: forget keep-alive of %s: %v", s.name, consumer, err)
		}
		if _, _, err := s.membership.Remove(ctx, s.name, consumer); err != nil {
			logf("sink %s: forget membership of %s: %v", s.name, consumer, err)
		}
	}
}

func (s *sink) keepAliveLoop(ctx context.Context) {
	t := time.NewTicker(s.grace)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, _, _, err := s.kaWriter.Set(ctx, s.consumer, nowNanos()); err != nil && ctx.Err() == nil {
				logf("sink %s: keep-alive: %v", s.name, err)
			}
		}
	}
}

func (s *sink) idleCheckLoop(ctx context.Context) {
	t := time.NewTicker(s.checkIdle)
	defer t.Stop()
	lease := s.checkIdle - 5*time.Millisecond
	if lease <= 0 {
		lease = s.checkIdle
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		won, err := scriptLease.Run(ctx, s.rdb, []string{"sink:" + s.name + ":stalelease"},
			time.Now().UnixMilli(), lease.Milliseconds()).Int()
		if err != nil {
			if ctx.Err() == nil {
				logf("sink %s: lease: %v", s.name, err)
			}
			continue
		}
		if won != 1 {
			continue
		}
		start := "0-0"
		for ctx.Err() == nil {
			msgs, next, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: s.key(), Group: s.name, Consumer: s.consumer, MinIdle: s.grace,
				Start: start, Count: 100,
			}).Result()
			if err != nil {
				if ctx.Err() == nil && !strings.Contains(err.Error(), "NOGROUP") {
					logf("sink %s: XAUTOCLAIM: %v", s.name, err)
				}
				break
			}
			for _, m := range msgs {
				s.deliver(ctx, m, true)
			}
			if next == "0-0" || next == "" {
				break
			}
			start = next
		}
		s.cleanupStale(ctx)
	}
}

func (s *sink) readLoop(ctx context.Context) {
	for ctx.Err() == nil {
		res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: s.name, Consumer: s.consumer, Streams: []string{s.key(), ">"},
			Count: 1000, Block: s.block, NoAck: s.noAckMode,
		}).Result()
		if ctx.Err() != nil {
			return
		}
		if err == redis.Nil {
			continue
		}
		if err != nil {
			msg := err.Error()
			emit(map[string]any{"type": "read-error", "error": msg})
			if !strings.Contains(msg, "NOGROUP") && !strings.Contains(msg, "no longer exists") {
				logf("sink %s: XREADGROUP: %v", s.name, err)
			}
			// The Go library retries NOGROUP at once (a hot loop); pause a little here so a
			// destroyed stream does not burn the CPU the tests share.
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		for _, st := range res {
			for _, m := range st.Messages {
				s.deliver(ctx, m, false)
			}
		}
	}
}

// runSink implements "sink <stream> <sink> [flags]".
func runSink(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	ack := fs.Bool("ack", false, "ack every event once printed")
	noAck := fs.Bool("no-ack", false, "never ack by itself (ack only on an 'ack' command)")
	noAckMode := fs.Bool("noack-mode", false, "read with XREADGROUP NOACK")
	grace := fs.Int("grace", 20000, "ack grace period in ms")
	block := fs.Int("block", 5000, "XREADGROUP BLOCK in ms")
	checkIdle := fs.Int("check-idle", 500, "idle-message check period in ms")
	start := fs.String("start", "newest", "group start: oldest, newest or an id")
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
	s := &sink{
		rdb: rdb, stream: streamName, name: sinkName, ack: *ack, noAckMode: *noAckMode,
		grace:      time.Duration(*grace) * time.Millisecond,
		block:      time.Duration(*block) * time.Millisecond,
		checkIdle:  time.Duration(*checkIdle) * time.Millisecond,
		membership: mapWriter{rdb: rdb, name: "stream:" + streamName + ":sinks"},
		kaWriter:   mapWriter{rdb: rdb, name: "sink:" + sinkName + ":keepalive"},
		delivered:  map[string]int{},
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var waits []<-chan struct{}
	// The Go library joins both maps; the membership replica is not read by the sink, but
	// its changes are printed so the tests can see what a Go sink sees (e.g. a destroy).
	_, doneM, err := joinMap(runCtx, rdb, s.membership.name, func(cont map[string]string, m message) {
		content := make(map[string]string, len(cont))
		for k, v := range cont {
			content[k] = v
		}
		emit(map[string]any{"type": "membership", "kind": m.kind, "rev": m.rev, "content": content})
	})
	if err != nil {
		return err
	}
	waits = append(waits, doneM)
	ka, doneK, err := joinMap(runCtx, rdb, s.kaWriter.name, nil)
	if err != nil {
		return err
	}
	waits = append(waits, doneK)
	s.keepalive = ka
	err = rdb.XGroupCreateMkStream(ctx, s.key(), sinkName, startID(*start)).Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("XGROUP CREATE: %w", err)
	}
	s.cleanupStale(ctx)
	s.consumer = ulid.Make().String()
	if err := rdb.XGroupCreateConsumer(ctx, s.key(), sinkName, s.consumer).Err(); err != nil {
		return fmt.Errorf("XGROUP CREATECONSUMER: %w", err)
	}
	if _, err := s.membership.Append(ctx, sinkName, s.consumer); err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	if _, _, _, err := s.kaWriter.Set(ctx, s.consumer, nowNanos()); err != nil {
		return fmt.Errorf("keep-alive: %w", err)
	}
	emit(map[string]any{"type": "ready", "stream": streamName, "sink": sinkName, "consumer": s.consumer})

	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){s.readLoop, s.keepAliveLoop, s.idleCheckLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(runCtx)
		}()
	}
	serveStdin(ctx, func(ctx context.Context, c command) {
		switch c.str("op") {
		case "ack":
			ids := c.strs("ids")
			n, err := rdb.XAck(ctx, s.key(), sinkName, ids...).Result()
			reply(c, map[string]any{"acked": n}, err)
		case "cleanup":
			s.cleanupStale(ctx)
			reply(c, nil, nil)
		default:
			reply(c, nil, fmt.Errorf("unknown op %q", c.str("op")))
		}
	}, stop)
	<-ctx.Done()
	cancel()
	wg.Wait()
	for _, w := range waits {
		<-w
	}
	return nil
}
