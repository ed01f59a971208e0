package main

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Log levels, in the order gitlab-runner (logrus) filters them.
type level int

const (
	levelDebug level = iota
	levelInfo
	levelWarn
	levelError
	levelFatal
	levelPanic
)

var levelNames = map[string]level{
	"debug": levelDebug, "info": levelInfo, "warn": levelWarn, "warning": levelWarn,
	"error": levelError, "fatal": levelFatal, "panic": levelPanic,
}

func parseLevel(s string) (level, error) {
	l, ok := levelNames[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		return levelInfo, fmt.Errorf("not a valid logrus Level: %q (use debug, info, warn, error, fatal or panic)", s)
	}
	return l, nil
}

func (l level) String() string {
	return [...]string{"debug", "info", "warning", "error", "fatal", "panic"}[l]
}

// Prefixes of gitlab-runner's "runner" log format (log/runner_formatter.go).
var levelPrefix = map[level]string{
	levelWarn: "WARNING: ", levelError: "ERROR: ", levelFatal: "FATAL: ", levelPanic: "PANIC: ",
}

type fields map[string]any

// logger writes gitlab-runner style lines: the message padded to 50 columns,
// then sorted key=value fields.
type logger struct {
	mu            sync.Mutex
	out           io.Writer
	level         level
	json          bool
	levelSetByCLI bool
}

func newLogger(out io.Writer) *logger {
	return &logger{out: out, level: levelInfo}
}

func (l *logger) setLevel(lv level) {
	l.mu.Lock()
	l.level = lv
	l.mu.Unlock()
}

func (l *logger) enabled(lv level) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return lv >= l.level
}

// exitRequest is panicked by fatal/panic log calls and recovered in app.main,
// so commands can stop from deep inside without calling os.Exit (tests).
type exitRequest struct{ code int }

type entry struct {
	l *logger
	f fields
}

func (l *logger) entry() *entry { return &entry{l: l, f: fields{}} }

func (l *logger) with(k string, v any) *entry { return l.entry().with(k, v) }

func (e *entry) with(k string, v any) *entry {
	f := make(fields, len(e.f)+1)
	for key, val := range e.f {
		f[key] = val
	}
	f[k] = v
	return &entry{l: e.l, f: f}
}

func (e *entry) withFields(more fields) *entry {
	n := e
	for k, v := range more {
		n = n.with(k, v)
	}
	return n
}

func (e *entry) withError(err error) *entry { return e.with("error", err) }

// joinArgs mimics logrus' Println: operands separated by spaces.
func joinArgs(args []any) string {
	return strings.TrimSuffix(fmt.Sprintln(args...), "\n")
}

func (e *entry) log(lv level, msg string) {
	if !e.l.enabled(lv) {
		return
	}
	e.l.mu.Lock()
	defer e.l.mu.Unlock()
	if e.l.json {
		rec := map[string]any{"level": lv.String(), "msg": msg, "time": time.Now().Format(time.RFC3339Nano)}
		for k, v := range e.f {
			if err, ok := v.(error); ok {
				v = err.Error()
			}
			rec[k] = v
		}
		b, _ := json.Marshal(rec)
		fmt.Fprintln(e.l.out, string(b))
		return
	}
	var b strings.Builder
	prefix := levelPrefix[lv]
	fmt.Fprintf(&b, "%s%-*s ", prefix, 50-len(prefix), msg)
	keys := make([]string, 0, len(e.f))
	for k := range e.f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.f[k])
	}
	b.WriteByte('\n')
	io.WriteString(e.l.out, b.String())
}

func (e *entry) debug(args ...any) { e.log(levelDebug, joinArgs(args)) }
func (e *entry) info(args ...any)  { e.log(levelInfo, joinArgs(args)) }
func (e *entry) warn(args ...any)  { e.log(levelWarn, joinArgs(args)) }
func (e *entry) error(args ...any) { e.log(levelError, joinArgs(args)) }

func (e *entry) debugf(format string, args ...any) { e.log(levelDebug, fmt.Sprintf(format, args...)) }
func (e *entry) infof(format string, args ...any)  { e.log(levelInfo, fmt.Sprintf(format, args...)) }
func (e *entry) warnf(format string, args ...any)  { e.log(levelWarn, fmt.Sprintf(format, args...)) }
func (e *entry) errorf(format string, args ...any) { e.log(levelError, fmt.Sprintf(format, args...)) }

// fatal logs and ends the command with exit code 1 (logrus.Fatal).
func (e *entry) fatal(args ...any) {
	e.log(levelFatal, joinArgs(args))
	panic(exitRequest{1})
}

// panicExit logs at PANIC level and ends the command with exit code 1, as the
// real runner's logrus.Panicln (recovered in its main) does.
func (e *entry) panicExit(args ...any) {
	e.log(levelPanic, joinArgs(args))
	panic(exitRequest{1})
}

// Token prefixes stripped before shortening, as gitlab-runner's
// helpers.ShortenToken does, so the shown part is not just "glrt-".
var tokenPrefixRes = []*regexp.Regexp{
	regexp.MustCompile(`^glrt-(t[123]_)?|^t[123]_|^glrtr-`),
	regexp.MustCompile(`^glcbt-`),
	regexp.MustCompile(`^GR[0-9A-Fa-f]{7}`),
}

// shortToken returns the only part of a token that may be printed: its first
// 8 characters after any known prefix.
func shortToken(token string) string {
	for _, re := range tokenPrefixRes {
		token = re.ReplaceAllString(token, "")
	}
	if len(token) > 8 {
		return token[:8]
	}
	return token
}
