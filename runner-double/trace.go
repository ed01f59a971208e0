package main

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ANSI sequences of the real job log, so GitLab renders the double's trace
// like a real one (colours, collapsible sections).
const (
	ansiClear   = "\x1b[0K"
	ansiReset   = "\x1b[0;m"
	ansiGreen   = "\x1b[32;1m"
	ansiCyan    = "\x1b[36;1m"
	ansiYellow  = "\x1b[0;33m"
	ansiBoldRed = "\x1b[31;1m"
)

const defaultTraceUpdateInterval = 3 * time.Second

// jobTrace collects a job's log and sends it to GitLab incrementally with
// PATCH /jobs/:id/trace, then finishes the job with PUT /jobs/:id.
type jobTrace struct {
	client   *gitlabClient
	rc       *RunnerConfig
	log      *entry
	jobID    int64
	jobToken string

	mu       sync.Mutex
	buf      bytes.Buffer
	pending  []byte // job output not yet ending in a newline (masked per line)
	masks    []string
	limit    int
	limited  bool
	sent     int // bytes GitLab has
	interval time.Duration
	sendMu   sync.Mutex // one PATCH at a time

	// onAbort is called once when GitLab says the job is canceled or failed.
	onAbort   func()
	abortOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

func newJobTrace(client *gitlabClient, rc *RunnerConfig, log *entry, job *jobResponse) *jobTrace {
	limit := 4096 * 1024
	if rc.OutputLimit > 0 {
		limit = rc.OutputLimit * 1024
	}
	t := &jobTrace{
		client: client, rc: rc, log: log, jobID: job.ID, jobToken: job.Token,
		limit: limit, interval: defaultTraceUpdateInterval,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	// Masked variables and the job token never reach the log in clear.
	if job.Token != "" {
		t.masks = append(t.masks, job.Token)
	}
	for _, v := range job.Variables {
		if v.Masked && len(v.Value) >= 8 {
			t.masks = append(t.masks, v.Value)
		}
	}
	return t
}

func (t *jobTrace) mask(s string) string {
	for _, m := range t.masks {
		s = strings.ReplaceAll(s, m, "[MASKED]")
	}
	return s
}

// appendLocked adds text to the log, honouring output_limit.
func (t *jobTrace) appendLocked(s string) {
	if t.limited {
		return
	}
	if t.buf.Len()+len(s) > t.limit {
		t.limited = true
		t.buf.WriteString(fmt.Sprintf("\n%sJob's log exceeded limit of %d bytes.\nJob execution will continue but no more output will be collected.%s\n",
			ansiBoldRed, t.limit, ansiReset))
		return
	}
	t.buf.WriteString(s)
}

// Write takes raw job output. Complete lines are masked and appended; a
// partial line waits for its end so a secret split across writes is caught.
func (t *jobTrace) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending = append(t.pending, p...)
	if i := bytes.LastIndexByte(t.pending, '\n'); i >= 0 {
		t.appendLocked(t.mask(string(t.pending[:i+1])))
		t.pending = append([]byte(nil), t.pending[i+1:]...)
	}
	if len(t.pending) > 64<<10 {
		t.appendLocked(t.mask(string(t.pending)))
		t.pending = nil
	}
	return len(p), nil
}

func (t *jobTrace) flushPending() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending) > 0 {
		t.appendLocked(t.mask(string(t.pending)) + "\n")
		t.pending = nil
	}
}

func (t *jobTrace) raw(s string) {
	t.flushPending()
	t.mu.Lock()
	t.appendLocked(t.mask(s))
	t.mu.Unlock()
}

// Line helpers mirror the runner's build logger.
func (t *jobTrace) println(msg string) { t.raw(ansiClear + msg + ansiReset + "\n") }
func (t *jobTrace) infoln(msg string)  { t.raw(ansiGreen + msg + ansiReset + "\n") }
func (t *jobTrace) warnln(msg string)  { t.raw(ansiYellow + "WARNING: " + msg + ansiReset + "\n") }
func (t *jobTrace) errorln(msg string) { t.raw(ansiBoldRed + "ERROR: " + msg + ansiReset + "\n") }

func (t *jobTrace) sectionStart(name, header string) {
	t.raw(fmt.Sprintf("section_start:%d:%s\r%s%s%s%s%s\n", time.Now().Unix(), name, ansiClear, ansiClear, ansiCyan, header, ansiReset))
}

func (t *jobTrace) sectionEnd(name string) {
	t.raw(fmt.Sprintf("section_end:%d:%s\r%s", time.Now().Unix(), name, ansiClear))
}

func (t *jobTrace) snapshot() ([]byte, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf.Bytes()...), t.sent
}

// start sends new output every update interval until finish.
func (t *jobTrace) start() {
	go func() {
		defer close(t.done)
		for {
			t.mu.Lock()
			interval := t.interval
			t.mu.Unlock()
			select {
			case <-t.stop:
				return
			case <-time.After(interval):
				t.send(context.Background())
			}
		}
	}()
}

func (t *jobTrace) abort() {
	t.abortOnce.Do(func() {
		if t.onAbort != nil {
			t.onAbort()
		}
	})
}

// send PATCHes what GitLab does not have yet. It follows 416 answers (GitLab
// tells which offset it has) a few times, and reports whether all was sent.
func (t *jobTrace) send(ctx context.Context) bool {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	for attempt := 0; attempt < 5; attempt++ {
		data, sent := t.snapshot()
		if sent > len(data) {
			sent = len(data) // GitLab claims more than we wrote: nothing left to send
		}
		if sent == len(data) {
			return true
		}
		reqCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		newOffset, res, rs := t.client.patchTrace(reqCtx, t.log, t.jobID, t.jobToken, data[sent:], sent)
		cancel()
		t.mu.Lock()
		t.sent = newOffset
		if rs.updateInterval > 0 {
			t.interval = rs.updateInterval
		}
		t.mu.Unlock()
		if rs.aborted() || res.status == http.StatusForbidden {
			t.abort()
			return false
		}
		if res.status != http.StatusAccepted && res.status != http.StatusRequestedRangeNotSatisfiable {
			return false
		}
	}
	return false
}

func (t *jobTrace) checksum() (string, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(t.buf.Bytes())), t.buf.Len()
}

// finish stops the periodic sender, sends the rest of the log and reports
// the final state with PUT /jobs/:id, retrying while GitLab is not done.
func (t *jobTrace) finish(state, failureReason string, exitCode int) {
	t.flushPending()
	close(t.stop)
	<-t.done
	ctx := context.Background()
	for i := 0; i < 5 && !t.send(ctx); i++ {
		time.Sleep(time.Second)
	}
	for attempt := 0; attempt < 30; attempt++ {
		sum, size := t.checksum()
		reqCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, rs := t.client.updateJob(reqCtx, t.log, t.rc, t.jobID, t.jobToken, updateJobRequest{
			State: state, FailureReason: failureReason, ExitCode: exitCode,
			Output: jobOutput{Checksum: sum, Bytesize: size},
		})
		cancel()
		wait := time.Second
		if rs.updateInterval > 0 {
			wait = rs.updateInterval
		}
		switch {
		case res.status == http.StatusOK, res.status == http.StatusNotFound, res.status == http.StatusForbidden,
			rs.state == "canceled", rs.state == "failed":
			return
		case res.status == http.StatusPreconditionFailed:
			// GitLab's copy of the log does not match the checksum: send it whole again.
			t.mu.Lock()
			t.sent = 0
			t.mu.Unlock()
			t.send(ctx)
		}
		time.Sleep(wait)
	}
	t.log.with("job", t.jobID).error("Giving up submitting the final job state to GitLab after 30 attempts")
}
