package main

import (
	"fmt"

	"goa.design/pulse/pulse"
)

// lineLogger is the pulse.Logger given to the library: every entry becomes a JSON line
// {"type": "log", "level": ..., "msg": ..., "fields": {...}} so the tests can see what the
// library did (a stale consumer deleted, messages claimed, a read error...). Debug entries
// are dropped unless EnableDebug was called.
type lineLogger struct {
	debug  bool
	prefix []any
}

var _ pulse.Logger = (*lineLogger)(nil)

func newLineLogger() *lineLogger { return &lineLogger{} }

func (l *lineLogger) EnableDebug() { l.debug = true }

func (l *lineLogger) WithPrefix(kvs ...any) pulse.Logger {
	prefix := make([]any, 0, len(l.prefix)+len(kvs))
	prefix = append(prefix, l.prefix...)
	prefix = append(prefix, kvs...)
	return &lineLogger{debug: l.debug, prefix: prefix}
}

func (l *lineLogger) Debug(msg string, kvs ...any) {
	if l.debug {
		l.entry("debug", msg, kvs)
	}
}

func (l *lineLogger) Info(msg string, kvs ...any) { l.entry("info", msg, kvs) }

func (l *lineLogger) Error(err error, kvs ...any) {
	msg := "<nil>"
	if err != nil {
		msg = err.Error()
	}
	l.entry("error", msg, kvs)
}

func (l *lineLogger) entry(level, msg string, kvs []any) {
	fields := map[string]string{}
	all := append(append([]any{}, l.prefix...), kvs...)
	for i := 0; i+1 < len(all); i += 2 {
		fields[fmt.Sprint(all[i])] = fmt.Sprint(all[i+1])
	}
	emit(map[string]any{"type": "log", "level": level, "msg": msg, "fields": fields})
}
