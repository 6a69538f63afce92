package main

// "map-join": one replica of a replicated map, joined with rmap.Join.

import (
	"context"
	"flag"
	"fmt"
	"reflect"

	"github.com/redis/go-redis/v9"
	"goa.design/pulse/rmap"
)

// eventName is the name the tests use for a notification kind.
func eventName(kind rmap.EventKind) string {
	switch kind {
	case rmap.EventChange:
		return "change"
	case rmap.EventDelete:
		return "delete"
	case rmap.EventReset:
		return "reset"
	}
	return fmt.Sprintf("kind-%d", int(kind))
}

// revision reads the replica's revision. rmap.Map does not export it; the peer reads the
// unexported field for the tests' diagnostics only (it is written under the map's lock
// before a notification is sent, so it is current when read right after one).
func revision(m *rmap.Map) uint64 {
	return reflect.ValueOf(m).Elem().FieldByName("rev").Uint()
}

// mapCommand runs one map command through the library's API.
func mapCommand(ctx context.Context, m *rmap.Map, c command) {
	key := c.str("key")
	switch c.str("op") {
	case "set":
		prev, existed, err := m.SetEx(ctx, key, c.str("value"))
		reply(c, map[string]any{"previous": prev, "existed": existed}, err)
	case "set-and-wait":
		prev, err := m.SetAndWait(ctx, key, c.str("value"))
		reply(c, map[string]any{"previous": prev, "rev": revision(m)}, err)
	case "set-if-not-exists":
		ok, err := m.SetIfNotExists(ctx, key, c.str("value"))
		reply(c, map[string]any{"written": ok}, err)
	case "test-and-set":
		prev, existed, updated, err := m.TestAndSetEx(ctx, key, c.str("test"), c.str("value"))
		reply(c, map[string]any{"previous": prev, "existed": existed, "updated": updated}, err)
	case "inc":
		v, err := m.Inc(ctx, key, int(c.int("delta")))
		reply(c, map[string]any{"value": v}, err)
	case "append":
		vs, err := m.AppendValues(ctx, key, c.strs("values")...)
		reply(c, map[string]any{"values": vs}, err)
	case "append-unique":
		vs, err := m.AppendUniqueValues(ctx, key, c.strs("values")...)
		reply(c, map[string]any{"values": vs}, err)
	case "remove":
		vs, removed, err := m.RemoveValues(ctx, key, c.strs("values")...)
		reply(c, map[string]any{"values": vs, "removed": removed}, err)
	case "delete":
		prev, existed, err := m.DeleteEx(ctx, key)
		reply(c, map[string]any{"previous": prev, "existed": existed}, err)
	case "test-and-delete":
		prev, existed, deleted, err := m.TestAndDeleteEx(ctx, key, c.str("test"))
		reply(c, map[string]any{"previous": prev, "existed": existed, "deleted": deleted}, err)
	case "test-and-reset":
		ok, err := m.TestAndReset(ctx, c.strs("keys"), c.strs("tests"))
		reply(c, map[string]any{"reset": ok}, err)
	case "reset":
		reply(c, nil, m.Reset(ctx))
	case "destroy":
		reply(c, nil, m.Destroy(ctx))
	case "get":
		v, ok := m.Get(key)
		vs, vok := m.GetValues(key)
		reply(c, map[string]any{"value": v, "present": ok, "values": vs, "values_present": vok}, nil)
	case "map":
		reply(c, map[string]any{"content": m.Map(), "rev": revision(m)}, nil)
	case "close":
		m.Close()
		reply(c, nil, nil)
	default:
		reply(c, nil, fmt.Errorf("unknown op %q", c.str("op")))
	}
}

// runMapJoin implements "map-join <map> [--ttl ms] [--sliding-ttl ms]": it prints the
// joined content, then one "change" line per notification (event kind, content and
// revision), and runs map commands from stdin.
func runMapJoin(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("map-join", flag.ExitOnError)
	ttl := fs.Int("ttl", 0, "absolute TTL in ms (rmap.WithTTL)")
	sliding := fs.Int("sliding-ttl", 0, "sliding TTL in ms (rmap.WithSlidingTTL)")
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	opts := []rmap.MapOption{rmap.WithLogger(newLineLogger())}
	if *ttl > 0 {
		opts = append(opts, rmap.WithTTL(millis(*ttl)))
	}
	if *sliding > 0 {
		opts = append(opts, rmap.WithSlidingTTL(millis(*sliding)))
	}
	m, err := rmap.Join(ctx, name, rdb, opts...)
	if err != nil {
		return err
	}
	defer m.Close()
	changes := m.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for kind := range changes {
			emit(map[string]any{
				"type": "change", "map": name, "event": eventName(kind),
				"content": m.Map(), "rev": revision(m),
			})
		}
	}()
	emit(map[string]any{"type": "ready", "map": name, "content": m.Map(), "rev": revision(m)})
	serveStdin(ctx, func(ctx context.Context, c command) { mapCommand(ctx, m, c) }, stop)
	<-ctx.Done()
	m.Close()
	<-done
	return nil
}
