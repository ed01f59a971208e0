package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Intervals of the main loop; variables so tests can shorten them.
var (
	configCheckInterval = 3 * time.Second // the real runner re-reads config.toml this often
	tokenCheckInterval  = time.Second
	missingConfigRepeat = time.Minute
	maxRequestBackoff   = 60 * time.Second
	tokenResetRetry     = time.Minute
)

// multiRunner is `gitlab-runner run`: one worker per [[runners]] entry asks
// GitLab for jobs; jobs run in their own goroutines within the concurrent
// and per-runner limits.
type multiRunner struct {
	a          *app
	configPath string

	mu        sync.Mutex
	cf        *configFile
	lastMod   time.Time
	lastSize  int64
	systemID  string
	workers   map[string]*runnerWorker
	perRunner map[string]int
	slots     map[string][]bool // concurrent IDs in use per runner and project
	clients   map[string]*gitlabClient
	resetNext map[string]time.Time

	builds    atomic.Int64
	maxBuilds atomic.Int64

	missingSince  time.Time
	missingLogged time.Time
	loadErrLogged string

	requesting     context.Context // ends when no more jobs may be requested
	stopRequesting context.CancelFunc
	workersWG      sync.WaitGroup
	jobsCtx        context.Context // ends to abort running jobs
	abortJobs      context.CancelCauseFunc
	jobsWG         sync.WaitGroup
}

type runnerWorker struct {
	key  string
	rc   atomic.Pointer[RunnerConfig]
	stop chan struct{}
}

func newMultiRunner(a *app, configPath string) *multiRunner {
	m := &multiRunner{
		a: a, configPath: configPath,
		workers: map[string]*runnerWorker{}, perRunner: map[string]int{}, slots: map[string][]bool{},
		clients: map[string]*gitlabClient{}, resetNext: map[string]time.Time{},
	}
	m.requesting, m.stopRequesting = context.WithCancel(context.Background())
	m.jobsCtx, m.abortJobs = context.WithCancelCause(context.Background())
	m.maxBuilds.Store(1)
	return m
}

// logEntry carries the builds/max_builds fields of the real runner's main log.
func (m *multiRunner) logEntry() *entry {
	return m.a.log.with("builds", m.builds.Load()).with("max_builds", m.maxBuilds.Load())
}

func runnerKey(rc *RunnerConfig) string {
	if rc.ID != 0 {
		return rc.URL + "#" + strconv.FormatInt(rc.ID, 10)
	}
	return rc.URL + "#" + rc.Token
}

func (m *multiRunner) runnerLog(rc *RunnerConfig) *entry {
	e := m.a.log.with("runner", shortToken(rc.Token))
	if rc.Name != "" {
		e = e.with("runner_name", rc.Name)
	}
	return e
}

func (m *multiRunner) config() *Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cf == nil {
		return &Config{}
	}
	return m.cf.cfg
}

// run is the main loop. It returns the process exit code.
func (m *multiRunner) run(ctx context.Context, signals <-chan os.Signal) int {
	m.a.log.entry().infof("Starting multi-runner from %s...", m.configPath)
	m.a.userModeWarning(false)

	m.reload()
	stopResets, resetsDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(resetsDone)
		m.tokenResetLoop(stopResets)
	}()
	defer func() {
		close(stopResets)
		<-resetsDone
	}()

	ticker := time.NewTicker(configCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			m.checkConfig()
		case sig := <-signals:
			switch sig {
			case syscall.SIGHUP:
				m.reload()
			case syscall.SIGQUIT:
				return m.gracefulShutdown(ctx, signals, sig)
			default:
				return m.forcefulShutdown(sig)
			}
		case <-ctx.Done():
			return m.forcefulShutdown(syscall.SIGTERM)
		}
	}
}

// checkConfig reloads config.toml when it changed, and keeps telling the
// user when it is missing.
func (m *multiRunner) checkConfig() {
	st, err := os.Stat(m.configPath)
	if err != nil {
		m.reportUnreadable(err)
		return
	}
	m.mu.Lock()
	changed := !st.ModTime().Equal(m.lastMod) || st.Size() != m.lastSize
	m.mu.Unlock()
	if changed {
		m.reload()
	}
}

func (m *multiRunner) reportUnreadable(err error) {
	now := time.Now()
	if !errors.Is(err, os.ErrNotExist) {
		if msg := err.Error(); msg != m.loadErrLogged {
			m.loadErrLogged = msg
			m.logEntry().withError(err).error("Failed to load config: cannot read", m.configPath)
		}
		return
	}
	if !m.missingLogged.IsZero() && now.Sub(m.missingLogged) < missingConfigRepeat {
		return
	}
	if m.missingSince.IsZero() {
		m.missingSince = now
	}
	m.missingLogged = now
	running := len(m.config().Runners)
	msg := fmt.Sprintf("Config file %s does not exist, so there is no runner to start. "+
		"Create it with \"gitlab-runner register --config %s ...\" (which writes a [[runners]] entry) or mount one at that path; "+
		"checking again every %v", m.configPath, m.configPath, configCheckInterval)
	if running > 0 {
		msg = fmt.Sprintf("Config file %s has disappeared; keeping the %d runner(s) loaded before. Checking again every %v",
			m.configPath, running, configCheckInterval)
	}
	m.logEntry().with("missing_for", now.Sub(m.missingSince).Truncate(time.Second)).error(msg)
}

// reload reads config.toml and applies it. A broken file keeps the previous
// configuration running, as in the real runner.
func (m *multiRunner) reload() {
	st, statErr := os.Stat(m.configPath)
	if statErr == nil {
		m.mu.Lock()
		m.lastMod, m.lastSize = st.ModTime(), st.Size()
		m.mu.Unlock()
	}
	cf, err := loadConfigFile(m.configPath)
	if err != nil {
		m.logEntry().error("Failed to load config", err)
		return
	}
	if m.systemID == "" {
		m.systemID = loadSystemID(m.configPath, m.a.log)
	}
	if !m.a.log.levelSetByCLI && cf.cfg.LogLevel != "" {
		if lv, err := parseLevel(cf.cfg.LogLevel); err == nil {
			m.a.log.setLevel(lv)
		} else {
			m.logEntry().withError(err).warn("Ignoring log_level of", m.configPath)
		}
	}
	m.mu.Lock()
	m.applyLocked(cf)
	m.mu.Unlock()
	m.loadErrLogged = ""
	m.logEntry().info("Configuration loaded")

	if !cf.exists {
		m.reportUnreadable(statErr)
		return
	}
	m.missingSince, m.missingLogged = time.Time{}, time.Time{}
	if len(cf.cfg.Runners) == 0 {
		m.logEntry().warnf("Config file %s has no [[runners]] entries, so there is nothing to do. "+
			"Register a runner with \"gitlab-runner register --config %s ...\"; the file is re-read when it changes",
			m.configPath, m.configPath)
	}
	for _, k := range cf.unsupported {
		m.logEntry().with("setting", k).warn("This config.toml setting is not supported by the gitlab-runner test double and is ignored")
	}
	for _, rc := range cf.cfg.Runners {
		if problem := runnerProblem(rc); problem != "" {
			m.runnerLog(rc).error(problem)
		}
	}
}

// runnerProblem says why a [[runners]] entry cannot ask for jobs.
func runnerProblem(rc *RunnerConfig) string {
	switch {
	case rc.Token == "":
		return "Runner token is empty or whitespace; this runner will be skipped during job polling. Check the token in the config file"
	case rc.URL == "":
		return "Runner has no url; this runner will be skipped during job polling"
	case rc.Executor != "docker":
		return fmt.Sprintf("Executor %q is not supported by the gitlab-runner test double (only \"docker\" is); this runner will not ask for jobs", rc.Executor)
	case rc.Docker == nil:
		return "Runner has no [runners.docker] section; this runner will not ask for jobs"
	}
	return ""
}

// applyLocked makes cf the current configuration: workers of removed runners
// stop (their running jobs finish), new runners get a worker.
func (m *multiRunner) applyLocked(cf *configFile) {
	m.cf = cf
	m.maxBuilds.Store(int64(cf.cfg.concurrent()))
	wanted := map[string]*RunnerConfig{}
	for _, rc := range cf.cfg.Runners {
		if runnerProblem(rc) != "" {
			continue
		}
		if _, dup := wanted[runnerKey(rc)]; dup {
			continue
		}
		wanted[runnerKey(rc)] = rc
	}
	for key, w := range m.workers {
		if _, ok := wanted[key]; !ok {
			close(w.stop)
			delete(m.workers, key)
		}
	}
	if m.requesting.Err() != nil {
		return
	}
	for key, rc := range wanted {
		if w, ok := m.workers[key]; ok {
			w.rc.Store(rc)
			continue
		}
		w := &runnerWorker{key: key, stop: make(chan struct{})}
		w.rc.Store(rc)
		m.workers[key] = w
		m.workersWG.Add(1)
		go m.workerLoop(w)
	}
}

func (m *multiRunner) client(rc *RunnerConfig) (*gitlabClient, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := rc.URL + "|" + rc.Token + "|" + rc.TLSCAFile
	if c, ok := m.clients[key]; ok {
		return c, nil
	}
	c, err := newGitlabClient(rc.URL, rc.TLSCAFile)
	if err != nil {
		return nil, err
	}
	m.clients[key] = c
	return c, nil
}

// acquire takes a build slot for a job request, within `concurrent` and the
// runner's `limit`, as the real runner does before asking for a job.
func (m *multiRunner) acquire(key string, rc *RunnerConfig) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.builds.Load() >= m.maxBuilds.Load() {
		return false
	}
	if rc.Limit > 0 && m.perRunner[key] >= rc.Limit {
		return false
	}
	m.builds.Add(1)
	m.perRunner[key]++
	return true
}

func (m *multiRunner) release(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.builds.Add(-1)
	m.perRunner[key]--
}

// takeSlot returns the lowest concurrent ID free for this runner and project
// (the "concurrent-N" in container and volume names).
func (m *multiRunner) takeSlot(key string, project int64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := fmt.Sprintf("%s/%d", key, project)
	used := m.slots[k]
	i := slices.Index(used, false)
	if i < 0 {
		i = len(used)
		used = append(used, true)
	}
	used[i] = true
	m.slots[k] = used
	return i
}

func (m *multiRunner) freeSlot(key string, project int64, i int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := fmt.Sprintf("%s/%d", key, project)
	if i < len(m.slots[k]) {
		m.slots[k][i] = false
	}
}

// workerLoop asks GitLab for jobs for one runner every check_interval, at
// once again after receiving a job, and with a growing pause (up to a minute)
// while GitLab cannot be reached. It never gives up.
func (m *multiRunner) workerLoop(w *runnerWorker) {
	defer m.workersWG.Done()
	failures := 0
	var delay time.Duration
	for {
		if delay > 0 {
			select {
			case <-w.stop:
				return
			case <-m.requesting.Done():
				return
			case <-time.After(delay):
			}
		}
		select {
		case <-w.stop:
			return
		case <-m.requesting.Done():
			return
		default:
		}
		rc := w.rc.Load()
		interval := m.config().checkInterval()
		delay = interval
		if !m.acquire(w.key, rc) {
			m.runnerLog(rc).debug("Failed to request job, runner limit met")
			continue
		}
		client, err := m.client(rc)
		if err != nil {
			m.release(w.key)
			m.runnerLog(rc).withError(err).error("Cannot talk to GitLab at", rc.URL)
			delay = maxRequestBackoff
			continue
		}
		job, outcome, status := client.requestJob(m.requesting, m.runnerLog(rc), rc, m.systemID)
		if m.requesting.Err() != nil {
			m.release(w.key)
			return
		}
		switch outcome {
		case requestJob:
			if failures > 0 {
				m.runnerLog(rc).info("GitLab at", rc.URL, "answers job requests again")
			}
			failures, delay = 0, 0
			slot := m.takeSlot(w.key, job.JobInfo.ProjectID)
			m.jobsWG.Add(1)
			go m.processJob(w.key, rc, client, job, slot)
		case requestNoJob:
			m.release(w.key)
			if failures > 0 {
				m.runnerLog(rc).info("GitLab at", rc.URL, "answers job requests again")
			}
			failures = 0
		default:
			m.release(w.key)
			failures++
			delay = min(interval<<min(failures-1, 10), maxRequestBackoff)
			if failures == 1 || failures == 3 || failures%10 == 0 {
				e := m.runnerLog(rc).with("status", status).with("retry_in", delay)
				if outcome == requestForbidden {
					e.errorf("GitLab at %s refuses this runner's token (403 Forbidden): the runner was probably deleted "+
						"in GitLab or its token reset. Asking again, %d attempt(s) so far", rc.URL, failures)
				} else if failures >= 3 {
					e.errorf("Cannot get jobs from GitLab at %s: %d requests in a row failed. Still trying, with a growing pause",
						rc.URL, failures)
				}
			}
		}
	}
}

func (m *multiRunner) processJob(key string, rc *RunnerConfig, client *gitlabClient, job *jobResponse, slot int) {
	defer m.jobsWG.Done()
	defer m.release(key)
	defer m.freeSlot(key, job.JobInfo.ProjectID, slot)

	jobFields := fields{
		"runner": shortToken(rc.Token), "job": job.ID, "project": job.JobInfo.ProjectID,
		"repo_url": job.repoCleanURL(),
	}
	m.logEntry().withFields(jobFields).info("Added job to processing list")

	log := m.runnerLog(rc)
	trace := newJobTrace(client, rc, log, job)
	ctx, cancel := context.WithCancelCause(m.jobsCtx)
	defer cancel(nil)
	trace.onAbort = func() {
		log.with("job", job.ID).warn("GitLab canceled the job (or no longer accepts it); stopping it")
		cancel(errJobCanceled)
	}
	dj := newDockerJob(rc, job, trace, log.with("job", job.ID), m.systemID, slot)
	tctx, tcancel := context.WithTimeoutCause(ctx, dj.timeout(), errJobTimeout)
	defer tcancel()

	trace.start()
	trace.println(fmt.Sprintf("Running with gitlab-runner %s (%s)", version, revision))
	trace.println(fmt.Sprintf("  on %s %s, system ID: %s", rc.Name, shortToken(rc.Token), m.systemID))
	trace.println("  (pipglr-builder's protocol test double of gitlab-runner, not the real program)")

	started := time.Now()
	err := dj.run(tctx)
	duration := time.Since(started).Seconds()
	jlog := log.with("job", job.ID).with("project", job.JobInfo.ProjectID).with("duration_s", duration)
	if err == nil {
		trace.infoln("Job succeeded")
		jlog.with("job-status", "success").info("Job succeeded")
		trace.finish("success", "", 0)
	} else {
		f, ok := err.(*jobFailure)
		if !ok {
			f = systemFailure(err)
		}
		text := "Job failed: " + f.msg
		if f.system {
			text = "Job failed (system failure): " + f.msg
		}
		trace.errorln(text)
		jlog.with("job-status", "failed").with("failure_reason", f.reason).with("exit_code", f.exitCode).warn(text)
		trace.finish("failed", failureReason(f.reason, job), f.exitCode)
	}
	m.logEntry().withFields(jobFields).info("Removed job from processing list")
}

// failureReason maps a reason GitLab did not announce support for to
// unknown_failure, as the real runner does.
func failureReason(reason string, job *jobResponse) string {
	supported := job.Features.FailureReasons
	if len(supported) == 0 || slices.Contains(supported, reason) || reason == "script_failure" {
		return reason
	}
	return "unknown_failure"
}

// tokenResetLoop renews runner authentication tokens that expire: at 3/4 of
// their lifetime, as the real runner schedules it.
func (m *multiRunner) tokenResetLoop(stop <-chan struct{}) {
	t := time.NewTicker(tokenCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			m.resetDueTokens()
		}
	}
}

func tokenResetTime(rc *RunnerConfig) time.Time {
	lifetime := rc.TokenExpiresAt.Sub(rc.TokenObtainedAt)
	return rc.TokenObtainedAt.Add(time.Duration(0.75 * float64(lifetime)))
}

func (m *multiRunner) resetDueTokens() {
	now := time.Now()
	for _, rc := range m.config().Runners {
		if rc.TokenExpiresAt.IsZero() || rc.Token == "" || rc.URL == "" || now.Before(tokenResetTime(rc)) {
			continue
		}
		m.mu.Lock()
		next := m.resetNext[rc.Token]
		m.mu.Unlock()
		if now.Before(next) {
			continue
		}
		m.resetToken(rc)
	}
}

func (m *multiRunner) resetToken(rc *RunnerConfig) {
	log := m.runnerLog(rc)
	client, err := m.client(rc)
	if err != nil {
		log.withError(err).error("Cannot reset the runner token: cannot talk to GitLab at", rc.URL)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := client.resetToken(ctx, log, rc.Token)
	if res == nil {
		m.mu.Lock()
		m.resetNext[rc.Token] = time.Now().Add(tokenResetRetry)
		m.mu.Unlock()
		return
	}

	m.mu.Lock()
	cf := m.cf
	found := false
	for _, t := range cf.runnerTables() {
		if tok, _ := t["token"].(string); tok == rc.Token {
			t["token"] = res.Token
			t["token_obtained_at"] = time.Now().UTC().Truncate(time.Second)
			t["token_expires_at"] = res.TokenExpiresAt.UTC()
			found = true
		}
	}
	if !found {
		m.mu.Unlock()
		log.error("The runner whose token was reset is no longer in", m.configPath, "; the new token is lost")
		return
	}
	saveErr := cf.save()
	if saveErr == nil {
		m.lastMod = cf.modTime
		if st, err := os.Stat(m.configPath); err == nil {
			m.lastMod, m.lastSize = st.ModTime(), st.Size()
		}
	}
	parseErr := cf.reparse()
	if parseErr == nil {
		m.applyLocked(cf)
	}
	m.mu.Unlock()

	newLog := m.runnerLog(&RunnerConfig{Token: res.Token, Name: rc.Name})
	if saveErr != nil {
		m.logEntry().withError(saveErr).error("Failed to save config")
		newLog.warnf("The new runner token is only kept in memory: GitLab has already replaced the old one, "+
			"so after a restart this runner will be refused unless %s is made writable for gitlab-runner or updated by hand", m.configPath)
	} else {
		newLog.with("token_expires_at", res.TokenExpiresAt.UTC().Format(time.RFC3339)).info("Saved the new runner authentication token in", m.configPath)
	}
	if parseErr != nil {
		m.logEntry().withError(parseErr).error("Failed to load config (token reset)")
	}
}

func (m *multiRunner) stopWorkers() {
	m.stopRequesting()
	m.mu.Lock()
	for key, w := range m.workers {
		close(w.stop)
		delete(m.workers, key)
	}
	m.mu.Unlock()
	m.workersWG.Wait()
}

func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		wg.Wait()
		close(ch)
	}()
	return ch
}

// gracefulShutdown (SIGQUIT) stops asking for jobs and waits for running
// jobs to end; another signal turns it into a forceful shutdown.
func (m *multiRunner) gracefulShutdown(ctx context.Context, signals <-chan os.Signal, sig os.Signal) int {
	m.logEntry().with("StopSignal", sig).warn("Starting graceful shutdown, waiting for builds to finish")
	m.stopWorkers()
	select {
	case <-waitGroupDone(&m.jobsWG):
		return m.finished()
	case s := <-signals:
		m.logEntry().with("stop-signal", s).warn("[handleGracefulShutdown] received stop signal")
		return m.forcefulShutdown(s)
	case <-ctx.Done():
		return m.forcefulShutdown(syscall.SIGTERM)
	}
}

// forcefulShutdown (SIGTERM, SIGINT) aborts running jobs (they are reported
// as failed) and waits for that up to shutdown_timeout.
func (m *multiRunner) forcefulShutdown(sig os.Signal) int {
	timeout := m.config().shutdownTimeout()
	m.logEntry().with("shutdown-timeout", timeout).with("StopSignal", sig).warn("Starting forceful shutdown")
	m.stopWorkers()
	m.abortJobs(abortedError{signal: sig.String()})
	select {
	case <-waitGroupDone(&m.jobsWG):
		return m.finished()
	case <-time.After(timeout):
		m.logEntry().withError(errors.New("shutdown timed out")).warn("Forceful shutdown not finished properly")
		return 1
	}
}

func (m *multiRunner) finished() int {
	m.logEntry().info("All workers stopped.")
	m.logEntry().info("Can exit now!")
	return 0
}
