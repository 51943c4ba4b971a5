// Package mlog is the lab's own minimal implementation of the monis.app/mlog API that
// github.com/Azure/azure-workload-identity v1.6.0 calls (cmd/webhook/main.go, pkg/webhook/webhook.go): leveled,
// structured JSON logging on stderr through logr's funcr. It is written for the lab, not taken from that module,
// which the Go module proxy does not serve here; see go.mod.
package mlog

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// LogLevel names a verbosity, as the webhook's --log-level flag takes it.
type LogLevel string

// In order of increasing verbosity (the webhook's --log-level help text): unset, info, debug, trace, all.
const (
	LevelWarning LogLevel = ""
	LevelInfo    LogLevel = "info"
	LevelDebug   LogLevel = "debug"
	LevelTrace   LogLevel = "trace"
	LevelAll     LogLevel = "all"
)

// LogFormat is accepted for API compatibility; the lab always writes JSON lines.
type LogFormat string

const (
	FormatJSON LogFormat = "json"
	FormatCLI  LogFormat = "cli"
)

// LogSpec is what ValidateAndSetLogLevelAndFormatGlobally sets.
type LogSpec struct {
	Level  LogLevel
	Format LogFormat
}

// logr verbosity of each level: warnings print at V(0), like errors.
var verbosity = map[LogLevel]int{LevelWarning: 0, LevelInfo: 2, LevelDebug: 4, LevelTrace: 6, LevelAll: 108}

var current atomic.Int64

// ValidateAndSetLogLevelAndFormatGlobally sets the verbosity of every logger, including those created earlier.
func ValidateAndSetLogLevelAndFormatGlobally(_ context.Context, spec LogSpec) error {
	v, ok := verbosity[spec.Level]
	if !ok {
		return fmt.Errorf("unknown log level %q", spec.Level)
	}
	if spec.Format != FormatJSON && spec.Format != FormatCLI && spec.Format != "" {
		return fmt.Errorf("unknown log format %q", spec.Format)
	}
	current.Store(int64(v))
	return nil
}

// Enabled reports whether messages at level are written.
func Enabled(level LogLevel) bool {
	v, ok := verbosity[level]
	return ok && int64(v) <= current.Load()
}

// Setup returns the function to call before exit; output is unbuffered, so it has nothing to flush.
func Setup() func() { return func() {} }

// levelSink filters a funcr sink (built with every level on) by the global level, read at each call.
type levelSink struct{ inner logr.LogSink }

func (s levelSink) Init(info logr.RuntimeInfo)            { s.inner.Init(info) }
func (s levelSink) Enabled(level int) bool                { return int64(level) <= current.Load() }
func (s levelSink) Info(level int, msg string, kv ...any) { s.inner.Info(level, msg, kv...) }
func (s levelSink) Error(err error, msg string, kv ...any) {
	s.inner.Error(err, msg, kv...)
}
func (s levelSink) WithValues(kv ...any) logr.LogSink { return levelSink{s.inner.WithValues(kv...)} }
func (s levelSink) WithName(name string) logr.LogSink { return levelSink{s.inner.WithName(name)} }

var root = logr.New(levelSink{funcr.NewJSON(
	func(obj string) { fmt.Fprintln(os.Stderr, obj) },
	funcr.Options{LogTimestamp: true, Verbosity: verbosity[LevelAll]},
).GetSink()})

// Logr returns the logr.Logger behind every Logger (controller-runtime's log.SetLogger takes it).
func Logr() logr.Logger { return root }

// Logger is a leveled structured logger.
type Logger struct{ l logr.Logger }

// New returns the root logger.
func New() Logger { return Logger{root} }

func (g Logger) WithName(name string) Logger   { return Logger{g.l.WithName(name)} }
func (g Logger) WithValues(kv ...any) Logger   { return Logger{g.l.WithValues(kv...)} }
func (g Logger) Warning(msg string, kv ...any) { g.l.V(verbosity[LevelWarning]).Info(msg, kv...) }
func (g Logger) Info(msg string, kv ...any)    { g.l.V(verbosity[LevelInfo]).Info(msg, kv...) }
func (g Logger) Debug(msg string, kv ...any)   { g.l.V(verbosity[LevelDebug]).Info(msg, kv...) }
func (g Logger) Trace(msg string, kv ...any)   { g.l.V(verbosity[LevelTrace]).Info(msg, kv...) }
func (g Logger) All(msg string, kv ...any)     { g.l.V(verbosity[LevelAll]).Info(msg, kv...) }
func (g Logger) Error(msg string, err error, kv ...any) {
	g.l.Error(err, msg, kv...)
}

// Package-level shortcuts on the root logger.
func WithName(name string) Logger            { return New().WithName(name) }
func WithValues(kv ...any) Logger            { return New().WithValues(kv...) }
func Warning(msg string, kv ...any)          { New().Warning(msg, kv...) }
func Info(msg string, kv ...any)             { New().Info(msg, kv...) }
func Debug(msg string, kv ...any)            { New().Debug(msg, kv...) }
func Trace(msg string, kv ...any)            { New().Trace(msg, kv...) }
func Error(msg string, err error, kv ...any) { New().Error(msg, err, kv...) }

// Fatal logs err and exits with status 1.
func Fatal(err error, kv ...any) {
	New().Error("fatal error", err, kv...)
	os.Exit(1)
}
