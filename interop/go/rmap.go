package main

// The replicated map protocol of goa.design/pulse v1.6.5, as the reference notes describe
// it: hash "map:<name>:content" with reserved fields "=rev" and "=kind", channel
// "map:<name>:updates", every write one Lua script (KEYS[1] = hash, KEYS[2] = channel)
// that mutates, bumps "=rev", records "=kind" and publishes "<kind>:<data>" where set/del
// data is a sequence of 4-byte little-endian length-prefixed strings and reset/destroy
// data is the decimal revision.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// luaPrelude holds the helpers shared by the write scripts.
const luaPrelude = `
local function pack(s)
  return struct.pack("<I4", #s) .. s
end
local function bump(kind)
  local rev = tostring(redis.call("HINCRBY", KEYS[1], "=rev", 1))
  redis.call("HSET", KEYS[1], "=kind", kind)
  return rev
end
local function decode(v)
  if not v then return {} end
  local ok, t = pcall(cjson.decode, v)
  if ok and type(t) == "table" then return t end
  local res = {}
  for item in string.gmatch(v, "[^,]+") do table.insert(res, item) end
  return res
end
`

var (
	// set: ARGV[1] key, ARGV[2] value -> {existed 0|1, previous or "", revision}
	scriptSet = redis.NewScript(luaPrelude + `
local v = redis.call("HGET", KEYS[1], ARGV[1])
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
local rev = bump("set")
redis.call("PUBLISH", KEYS[2], "set:" .. pack(ARGV[1]) .. pack(ARGV[2]) .. pack(rev))
if v then return {1, v, rev} end
return {0, "", rev}
`)
	// inc: ARGV[1] key, ARGV[2] delta -> new value (string)
	scriptInc = redis.NewScript(luaPrelude + `
redis.call("HINCRBY", KEYS[1], ARGV[1], ARGV[2])
local v = redis.call("HGET", KEYS[1], ARGV[1])
local rev = bump("set")
redis.call("PUBLISH", KEYS[2], "set:" .. pack(ARGV[1]) .. pack(v) .. pack(rev))
return v
`)
	// append: ARGV[1] key, ARGV[2..] items -> stored JSON list
	scriptAppend = redis.NewScript(luaPrelude + `
local v = redis.call("HGET", KEYS[1], ARGV[1])
if #ARGV < 2 then return v end
local list = decode(v)
for i = 2, #ARGV do table.insert(list, ARGV[i]) end
local encoded = cjson.encode(list)
redis.call("HSET", KEYS[1], ARGV[1], encoded)
local rev = bump("set")
redis.call("PUBLISH", KEYS[2], "set:" .. pack(ARGV[1]) .. pack(encoded) .. pack(rev))
return encoded
`)
	// remove: ARGV[1] key, ARGV[2..] items -> {remaining JSON or "" , removed 0|1}
	scriptRemove = redis.NewScript(luaPrelude + `
local v = redis.call("HGET", KEYS[1], ARGV[1])
if not v or #ARGV < 2 then return {v, 0} end
local drop = {}
for i = 2, #ARGV do drop[ARGV[i]] = true end
local kept, removed = {}, false
for _, item in ipairs(decode(v)) do
  if drop[item] then removed = true else table.insert(kept, item) end
end
if not removed then return {v, 0} end
if #kept == 0 then
  redis.call("HDEL", KEYS[1], ARGV[1])
  local rev = bump("del")
  redis.call("PUBLISH", KEYS[2], "del:" .. pack(ARGV[1]) .. pack(rev))
  return {"", 1}
end
local encoded = cjson.encode(kept)
redis.call("HSET", KEYS[1], ARGV[1], encoded)
local rev = bump("set")
redis.call("PUBLISH", KEYS[2], "set:" .. pack(ARGV[1]) .. pack(encoded) .. pack(rev))
return {encoded, 1}
`)
	// delete: ARGV[1] key -> previous value or nil (no write when absent)
	scriptDelete = redis.NewScript(luaPrelude + `
local v = redis.call("HGET", KEYS[1], ARGV[1])
if not v then return nil end
redis.call("HDEL", KEYS[1], ARGV[1])
local rev = bump("del")
redis.call("PUBLISH", KEYS[2], "del:" .. pack(ARGV[1]) .. pack(rev))
return v
`)
	// reset / destroy: ARGV[1] "*", ARGV[2] kind -> nil; leaves the {=rev, =kind} tombstone
	scriptClear = redis.NewScript(`
local rev = redis.call("HINCRBY", KEYS[1], "=rev", 1)
redis.call("DEL", KEYS[1])
redis.call("HSET", KEYS[1], "=rev", rev, "=kind", ARGV[2])
redis.call("PUBLISH", KEYS[2], ARGV[2] .. ":" .. rev)
return nil
`)
)

func mapKeys(name string) []string {
	return []string{"map:" + name + ":content", "map:" + name + ":updates"}
}

func validKey(key string) error {
	if key == "" || strings.Contains(key, "=") {
		return fmt.Errorf("invalid map key %q: must be non-empty and contain no '='", key)
	}
	return nil
}

// mapWriter runs the write scripts of one map.
type mapWriter struct {
	rdb  *redis.Client
	name string
}

func (w mapWriter) run(ctx context.Context, s *redis.Script, args ...any) (any, error) {
	res, err := s.Run(ctx, w.rdb, mapKeys(w.name), args...).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return res, err
}

// Set returns (previous, existed, committed revision).
func (w mapWriter) Set(ctx context.Context, key, value string) (string, bool, int64, error) {
	if err := validKey(key); err != nil {
		return "", false, 0, err
	}
	res, err := w.run(ctx, scriptSet, key, value)
	if err != nil {
		return "", false, 0, err
	}
	arr := res.([]any)
	rev, _ := strconv.ParseInt(arr[2].(string), 10, 64)
	return arr[1].(string), arr[0].(int64) == 1, rev, nil
}

func (w mapWriter) Inc(ctx context.Context, key string, delta int64) (int64, error) {
	if err := validKey(key); err != nil {
		return 0, err
	}
	res, err := w.run(ctx, scriptInc, key, delta)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(res.(string), 10, 64)
}

func (w mapWriter) Append(ctx context.Context, key string, items ...string) ([]string, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	args := []any{key}
	for _, it := range items {
		args = append(args, it)
	}
	res, err := w.run(ctx, scriptAppend, args...)
	if err != nil || res == nil {
		return nil, err
	}
	return parseList(res.(string)), nil
}

func (w mapWriter) Remove(ctx context.Context, key string, items ...string) ([]string, bool, error) {
	if err := validKey(key); err != nil {
		return nil, false, err
	}
	args := []any{key}
	for _, it := range items {
		args = append(args, it)
	}
	res, err := w.run(ctx, scriptRemove, args...)
	if err != nil {
		return nil, false, err
	}
	arr := res.([]any)
	removed := arr[1].(int64) == 1
	s, _ := arr[0].(string)
	if arr[0] == nil || (removed && s == "") {
		return nil, removed, nil
	}
	return parseList(s), removed, nil
}

func (w mapWriter) Delete(ctx context.Context, key string) (string, bool, error) {
	if err := validKey(key); err != nil {
		return "", false, err
	}
	res, err := w.run(ctx, scriptDelete, key)
	if err != nil || res == nil {
		return "", false, err
	}
	return res.(string), true, nil
}

// Clear runs reset (kind "reset") or destroy (kind "destroy").
func (w mapWriter) Clear(ctx context.Context, kind string) error {
	_, err := w.run(ctx, scriptClear, "*", kind)
	return err
}

// parseList reads a list value the way the Go library's GetValues does: a JSON array of
// strings, else the raw value split on commas.
func parseList(v string) []string {
	t := strings.TrimSpace(v)
	if strings.HasPrefix(t, "[") {
		var items []string
		if err := json.Unmarshal([]byte(t), &items); err == nil {
			return items
		}
	}
	return strings.Split(v, ",")
}

// message is one decoded notification.
type message struct {
	kind       string // set, del, reset, destroy
	key, value string
	rev        int64
}

// decodeMessage parses "<kind>:<data>" (split at the first colon).
func decodeMessage(payload string) (message, error) {
	kind, data, ok := strings.Cut(payload, ":")
	if !ok {
		return message{}, fmt.Errorf("no ':' in %q", payload)
	}
	m := message{kind: kind}
	var err error
	switch kind {
	case "reset", "destroy":
		m.rev, err = strconv.ParseInt(data, 10, 64)
		return m, err
	case "set", "del":
		n := 3
		if kind == "del" {
			n = 2
		}
		parts := make([]string, 0, n)
		buf := []byte(data)
		for i := 0; i < n; i++ {
			if len(buf) < 4 {
				return m, fmt.Errorf("%s message too short", kind)
			}
			l := binary.LittleEndian.Uint32(buf[:4])
			buf = buf[4:]
			if uint64(len(buf)) < uint64(l) {
				return m, fmt.Errorf("%s message truncated", kind)
			}
			parts = append(parts, string(buf[:l]))
			buf = buf[l:]
		}
		if len(buf) != 0 {
			return m, fmt.Errorf("%s message has %d trailing bytes", kind, len(buf))
		}
		m.key = parts[0]
		if kind == "set" {
			m.value = parts[1]
		}
		m.rev, err = strconv.ParseInt(parts[n-1], 10, 64)
		return m, err
	}
	return m, fmt.Errorf("unknown message kind %q", kind)
}

// replica is a local copy of a map kept current from the update channel.
type replica struct {
	name string
	mu   sync.Mutex
	cont map[string]string
	rev  int64
	cond *sync.Cond
	// onApply is called (under mu) with the new content for each applied message.
	onApply func(content map[string]string, m message)
}

// joinMap subscribes, waits for the confirmation, loads the snapshot and starts applying
// messages in a goroutine that stops with ctx. The returned channel closes when it stops.
func joinMap(ctx context.Context, rdb *redis.Client, name string, onApply func(map[string]string, message)) (*replica, <-chan struct{}, error) {
	keys := mapKeys(name)
	ps := rdb.Subscribe(ctx, keys[1])
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		ps.Close()
		return nil, nil, fmt.Errorf("subscribe %s: %w", keys[1], err)
	}
	ch := ps.Channel(redis.WithChannelSize(10000))
	snap, err := rdb.HGetAll(ctx, keys[0]).Result()
	if err != nil {
		ps.Close()
		return nil, nil, fmt.Errorf("snapshot %s: %w", keys[0], err)
	}
	r := &replica{name: name, cont: map[string]string{}, onApply: onApply}
	r.cond = sync.NewCond(&r.mu)
	for k, v := range snap {
		switch k {
		case "=rev":
			r.rev, _ = strconv.ParseInt(v, 10, 64)
		case "=kind":
		default:
			r.cont[k] = v
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				r.mu.Lock()
				r.cond.Broadcast()
				r.mu.Unlock()
				return
			case msg, ok := <-ch:
				if !ok {
					return
				}
				r.apply(msg.Payload)
			}
		}
	}()
	return r, done, nil
}

func (r *replica) apply(payload string) {
	m, err := decodeMessage(payload)
	if err != nil {
		logf("map %s: bad message: %v", r.name, err)
		emit(map[string]any{"type": "bad-message", "map": r.name, "error": err.Error()})
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.rev <= r.rev {
		return
	}
	if m.key == "=rev" || m.key == "=kind" {
		return
	}
	r.rev = m.rev
	switch m.kind {
	case "set":
		r.cont[m.key] = m.value
	case "del":
		delete(r.cont, m.key)
	default:
		r.cont = map[string]string{}
	}
	if r.onApply != nil {
		r.onApply(r.cont, m)
	}
	r.cond.Broadcast()
}

// snapshot returns a copy of the content and the revision.
func (r *replica) snapshot() (map[string]string, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := make(map[string]string, len(r.cont))
	for k, v := range r.cont {
		c[k] = v
	}
	return c, r.rev
}

// get returns one value.
func (r *replica) get(key string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.cont[key]
	return v, ok
}

// waitRev blocks until the local revision reaches rev or ctx is done.
func (r *replica) waitRev(ctx context.Context, rev int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.rev < rev {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.cond.Wait()
	}
	return nil
}

// eventKind maps a message kind to the Go library's subscriber notification.
func eventKind(kind string) string {
	switch kind {
	case "set":
		return "change"
	case "del":
		return "delete"
	}
	return "reset"
}

// runMapJoin implements "map-join <name>".
func runMapJoin(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, name string) error {
	onApply := func(cont map[string]string, m message) {
		content := make(map[string]string, len(cont))
		for k, v := range cont {
			content[k] = v
		}
		ev := map[string]any{
			"type": "change", "map": name, "kind": m.kind, "event": eventKind(m.kind),
			"key": m.key, "rev": m.rev, "content": content,
		}
		if m.kind == "set" {
			ev["value"] = m.value
		}
		emit(ev)
	}
	r, done, err := joinMap(ctx, rdb, name, onApply)
	if err != nil {
		return err
	}
	content, rev := r.snapshot()
	emit(map[string]any{"type": "ready", "map": name, "rev": rev, "content": content})
	w := mapWriter{rdb: rdb, name: name}
	serveStdin(ctx, func(ctx context.Context, c command) {
		key := c.str("key")
		switch c.str("op") {
		case "set", "set_and_wait":
			prev, existed, rev, err := w.Set(ctx, key, c.str("value"))
			if err == nil && c.str("op") == "set_and_wait" {
				err = r.waitRev(ctx, rev)
			}
			reply(c, map[string]any{"previous": prev, "existed": existed, "rev": rev}, err)
		case "inc":
			v, err := w.Inc(ctx, key, c.int("delta"))
			reply(c, map[string]any{"value": v}, err)
		case "append":
			v, err := w.Append(ctx, key, c.strs("values")...)
			reply(c, map[string]any{"values": v}, err)
		case "remove":
			v, removed, err := w.Remove(ctx, key, c.strs("values")...)
			reply(c, map[string]any{"values": v, "removed": removed}, err)
		case "delete":
			prev, existed, err := w.Delete(ctx, key)
			reply(c, map[string]any{"previous": prev, "existed": existed}, err)
		case "reset", "destroy":
			reply(c, nil, w.Clear(ctx, c.str("op")))
		case "get":
			content, rev := r.snapshot()
			v, ok := content[key]
			res := map[string]any{"content": content, "rev": rev, "present": ok, "value": v}
			if ok {
				res["values"] = parseList(v)
			}
			reply(c, res, nil)
		case "wait_rev":
			reply(c, nil, r.waitRev(ctx, c.int("rev")))
		default:
			reply(c, nil, fmt.Errorf("unknown op %q", c.str("op")))
		}
	}, stop)
	<-ctx.Done()
	<-done
	return nil
}
