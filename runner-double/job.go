package main

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// jobFailure is how a job ends when it does not succeed. msg follows
// "Job failed: " (or "Job failed (system failure): ") in the trace.
type jobFailure struct {
	msg      string
	reason   string
	exitCode int
	system   bool
}

func (f *jobFailure) Error() string { return f.msg }

func systemFailure(err error) *jobFailure {
	return &jobFailure{msg: err.Error(), reason: "runner_system_failure", system: true}
}

// Causes of a job's context ending early.
var (
	errJobCanceled = errors.New("canceled")
	errJobTimeout  = errors.New("job timeout")
)

type abortedError struct{ signal string }

func (e abortedError) Error() string { return "aborted: " + e.signal }

// Variables so tests need not wait.
var (
	preparationRetries       = 3
	preparationRetryInterval = 3 * time.Second
	afterScriptTimeout       = 5 * time.Minute
)

const defaultHelperImageRepo = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper"

// dockerJob runs one job with the docker executor: one container per script
// stage, created from the job image through the Docker-compatible API.
type dockerJob struct {
	rc           *RunnerConfig
	job          *jobResponse
	trace        *jobTrace
	docker       *dockerClient
	log          *entry
	systemID     string
	concurrentID int

	uniqueName string // runner-<short token>-project-<id>-concurrent-<n>
	buildsDir  string
	projectDir string
	imageName  string
	image      *imageInfo
	binds      []string
	tempVols   []string
	containers []string
}

func newDockerJob(rc *RunnerConfig, job *jobResponse, trace *jobTrace, log *entry, systemID string, concurrentID int) *dockerJob {
	j := &dockerJob{rc: rc, job: job, trace: trace, log: log, systemID: systemID, concurrentID: concurrentID}
	j.uniqueName = rfc1123(fmt.Sprintf("runner-%s-project-%d-concurrent-%d", shortToken(rc.Token), job.JobInfo.ProjectID, concurrentID))
	j.buildsDir = rc.BuildsDir
	if j.buildsDir == "" {
		j.buildsDir = "/builds"
	}
	j.projectDir = path.Join(j.buildsDir, projectSlug(job))
	j.imageName = job.Image.Name
	if j.imageName == "" && rc.Docker != nil {
		j.imageName = rc.Docker.Image
	}
	return j
}

var (
	rfc1123Invalid      = regexp.MustCompile(`[^-a-z0-9]`)
	rfc1123InvalidStart = regexp.MustCompile(`^[^a-z0-9]+`)
)

// rfc1123 makes a name usable as a host and volume name, as the real runner does.
func rfc1123(name string) string {
	name = rfc1123Invalid.ReplaceAllString(strings.ToLower(name), "")
	name = rfc1123InvalidStart.ReplaceAllString(name, "")
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// projectSlug is the project's path (group/project) from its repository URL.
func projectSlug(job *jobResponse) string {
	if u, err := url.Parse(job.GitInfo.RepoURL); err == nil && u.Host != "" {
		slug := path.Clean(strings.TrimSuffix(u.Path, ".git"))
		if slug = strings.Trim(slug, "/"); slug != "" && slug != "." {
			return slug
		}
	}
	if p := strings.Trim(job.JobInfo.ProjectFullPath, "/"); p != "" {
		return p
	}
	return fmt.Sprintf("project-%d", job.JobInfo.ProjectID)
}

func randomSuffix() string {
	return strings.ToLower(newCorrelationID()[:8])
}

func (j *dockerJob) variable(key string) (string, bool) {
	for i := len(j.job.Variables) - 1; i >= 0; i-- {
		if j.job.Variables[i].Key == key {
			return j.job.Variables[i].Value, true
		}
	}
	return "", false
}

// run executes the job's stages and returns nil or a *jobFailure.
func (j *dockerJob) run(ctx context.Context) error {
	defer j.cleanup()

	j.trace.sectionStart("prepare_executor", `Preparing the "docker" executor`)
	err := j.prepare(ctx)
	j.trace.sectionEnd("prepare_executor")
	if err != nil {
		return j.contextFailure(ctx, err)
	}

	host, _ := os.Hostname()
	j.trace.sectionStart("prepare_script", "Preparing environment")
	j.trace.println(fmt.Sprintf("Running on %s via %s...", j.uniqueName, host))
	j.trace.sectionEnd("prepare_script")

	j.trace.sectionStart("get_sources", "Getting source from Git repository")
	if strategy, _ := j.variable("GIT_STRATEGY"); strategy == "none" || strategy == "empty" {
		j.trace.infoln("Skipping Git repository setup")
		j.trace.infoln("Skipping Git checkout")
		j.trace.infoln("Skipping Git submodules setup")
	} else {
		j.trace.warnln(fmt.Sprintf("Sources were not fetched: the gitlab-runner test double does not clone repositories "+
			"(GIT_STRATEGY=%q); the job starts in an empty %s. Set GIT_STRATEGY=none to say that is intended.", strategy, j.projectDir))
	}
	j.trace.sectionEnd("get_sources")

	var jobErr error
	for _, step := range j.job.Steps {
		if step.Name == "after_script" {
			continue
		}
		section := "step_" + step.Name
		j.trace.sectionStart(section, fmt.Sprintf("Executing %q stage of the job script", section))
		j.trace.println(fmt.Sprintf("Using docker image %s for %s ...", j.image.ID, j.imageName))
		jobErr = j.runStage(ctx, step.Name, step.Script, "")
		j.trace.sectionEnd(section)
		if jobErr != nil {
			break
		}
	}

	// after_script runs even when the script failed or timed out, not when
	// the job was canceled or the runner is stopping.
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, errJobTimeout) {
		for _, step := range j.job.Steps {
			if step.Name == "after_script" && len(step.Script) > 0 {
				j.runAfterScript(step)
			}
		}
	}

	j.trace.sectionStart("cleanup_file_variables", "Cleaning up project directory and file based variables")
	j.trace.sectionEnd("cleanup_file_variables")
	return jobErr
}

// contextFailure turns an error seen after the job context ended into the
// failure the real runner reports (timeout, cancel, shutdown).
func (j *dockerJob) contextFailure(ctx context.Context, err error) error {
	cause := context.Cause(ctx)
	switch {
	case cause == nil:
		return err
	case errors.Is(cause, errJobTimeout):
		return &jobFailure{msg: fmt.Sprintf("execution took longer than %v seconds", j.timeout()), reason: "job_execution_timeout"}
	case errors.Is(cause, errJobCanceled):
		return &jobFailure{msg: "canceled", reason: "unknown_failure"}
	default:
		return systemFailure(cause)
	}
}

func (j *dockerJob) timeout() time.Duration {
	if j.job.RunnerInfo.Timeout > 0 {
		return time.Duration(j.job.RunnerInfo.Timeout) * time.Second
	}
	return time.Hour
}

func (j *dockerJob) prepare(ctx context.Context) error {
	if j.rc.Docker == nil {
		return &jobFailure{msg: "missing docker configuration", reason: "config_error"}
	}
	if j.imageName == "" {
		return &jobFailure{msg: "no Docker image specified to run the build in", reason: "config_error"}
	}
	d, err := newDockerClient(j.rc.Docker.Host)
	if err != nil {
		return &jobFailure{msg: err.Error(), reason: "config_error"}
	}
	j.docker = d

	// The real runner retries a failed preparation a few times.
	for attempt := 1; ; attempt++ {
		err = d.ping(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		if attempt >= preparationRetries {
			return systemFailure(err)
		}
		j.trace.errorln("Preparation failed: " + err.Error())
		j.trace.println(fmt.Sprintf("Will be retried in %v ...", preparationRetryInterval))
		select {
		case <-ctx.Done():
		case <-time.After(preparationRetryInterval):
		}
	}
	if err != nil {
		return err
	}

	j.trace.println(fmt.Sprintf("Using Docker executor with image %s ...", j.imageName))
	j.warnUnsupported()

	helperErr := j.checkHelperImage(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	cacheVolumes := 0
	for _, v := range j.rc.Docker.Volumes {
		if len(strings.Split(v, ":")) == 1 {
			cacheVolumes++
		}
	}
	if helperErr != nil && cacheVolumes == 0 {
		return &jobFailure{msg: helperErr.Error(), reason: "runner_system_failure"}
	}
	if err := j.createVolumes(ctx, helperErr); err != nil {
		return err
	}

	policies, err := j.pullPolicies(j.job.Image.PullPolicy)
	if err != nil {
		return &jobFailure{msg: fmt.Sprintf("invalid pull policy for image %q: %v", j.imageName, err), reason: "config_error"}
	}
	img, err := j.ensureImage(ctx, j.imageName, policies)
	if err != nil {
		return &jobFailure{msg: err.Error(), reason: "image_pull_failure"}
	}
	j.image = img
	return nil
}

// warnUnsupported says in the job log which parts of the job the double
// skips, so nobody mistakes a green job for a complete one.
func (j *dockerJob) warnUnsupported() {
	skipped := []struct {
		n    int
		what string
	}{
		{len(j.job.Services), "services"},
		{len(j.job.Cache), "cache definitions"},
		{len(j.job.Artifacts), "artifacts"},
		{len(j.job.Dependencies), "artifact dependencies"},
	}
	for _, s := range skipped {
		if s.n > 0 {
			j.trace.warnln(fmt.Sprintf("The gitlab-runner test double ignores this job's %s (%d defined)", s.what, s.n))
		}
	}
}

func (j *dockerJob) helperImageDefault() string {
	arch := runtime.GOARCH
	if arch == "amd64" {
		arch = "x86_64"
	}
	return fmt.Sprintf("%s:%s-%s", defaultHelperImageRepo, arch, revision)
}

// checkHelperImage makes sure a configured helper_image is present (pulling
// it if the pull policy allows). The real runner starts its cache
// "permission container" and its git/cache/artifact containers from it, so a
// missing helper image breaks jobs there; the double fails the same way.
func (j *dockerJob) checkHelperImage(ctx context.Context) error {
	name := j.rc.Docker.HelperImage
	if name == "" {
		return nil
	}
	j.trace.println(joinArgs([]any{"Using helper image: ", name, " (overridden, default would be ", j.helperImageDefault(), ")"}))
	policies, err := j.pullPolicies(nil)
	if err != nil {
		return fmt.Errorf("invalid pull policy for image %q: %v", name, err)
	}
	_, err = j.ensureImage(ctx, name, policies)
	return err
}

// pullPolicies computes the effective pull policies: the job's own (if the
// runner allows them), else the runner's pull_policy, else "always".
func (j *dockerJob) pullPolicies(jobPolicies []string) ([]string, error) {
	policies := []string(j.rc.Docker.PullPolicy)
	if len(policies) == 0 {
		policies = []string{"always"}
	}
	if len(jobPolicies) > 0 {
		allowed := j.rc.Docker.AllowedPullPolicies
		if len(allowed) == 0 {
			allowed = policies
		}
		for _, p := range jobPolicies {
			if !slices.Contains(allowed, p) {
				return nil, fmt.Errorf("pull_policy (%v) defined in GitLab pipeline config is not one of the allowed_pull_policies (%v)", jobPolicies, allowed)
			}
		}
		policies = jobPolicies
	}
	for _, p := range policies {
		if p != "always" && p != "never" && p != "if-not-present" {
			return nil, fmt.Errorf("unsupported pull_policy %q (use always, if-not-present or never)", p)
		}
	}
	return policies, nil
}

// ensureImage gets an image by the pull policies, in order, like the real
// pull manager. One difference: an image already present is not pulled again
// under "always" (the test machines have no registry to pull from).
func (j *dockerJob) ensureImage(ctx context.Context, name string, policies []string) (*imageInfo, error) {
	j.trace.println(fmt.Sprintf("Using effective pull policy of %v for container %s", policies, name))
	var lastErr error
	for i, policy := range policies {
		if i > 0 {
			j.trace.println(fmt.Sprintf("Attempt #%d: Trying %q pull policy", i+1, policy))
		}
		img, err := j.imageByPolicy(ctx, name, policy)
		if err == nil {
			if len(img.RepoDigests) > 0 {
				j.trace.println(fmt.Sprintf("Using docker image %s for %s with digest %s ...", img.ID, name, img.RepoDigests[0]))
			} else {
				j.trace.println(fmt.Sprintf("Using docker image %s for %s ...", img.ID, name))
			}
			return img, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		lastErr = err
		j.trace.warnln(fmt.Sprintf("Failed to pull image with policy %q: %v", policy, err))
	}
	return nil, fmt.Errorf("failed to pull image %q with specified policies %v: %w", name, policies, lastErr)
}

func (j *dockerJob) imageByPolicy(ctx context.Context, name, policy string) (*imageInfo, error) {
	img, err := j.docker.imageInspect(ctx, name)
	if err != nil {
		return nil, err
	}
	if img != nil {
		switch policy {
		case "if-not-present":
			j.trace.println(fmt.Sprintf("Using locally found image version due to %q pull policy", policy))
		case "always":
			j.trace.println(`Using locally found image version (the gitlab-runner test double does not pull again images that are present, even with the "always" pull policy)`)
		}
		return img, nil
	}
	if policy == "never" {
		return nil, fmt.Errorf("Error response from daemon: No such image: %s (not present locally and the pull policy is \"never\")", name)
	}
	j.trace.println(fmt.Sprintf("Pulling docker image %s ...", name))
	if err := j.docker.imagePull(ctx, name); err != nil {
		return nil, err
	}
	img, err = j.docker.imageInspect(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("inspecting image %q after pull: %w", name, err)
	}
	if img == nil {
		return nil, fmt.Errorf("inspecting image %q after pull: Error response from daemon: No such image: %s", name, name)
	}
	return img, nil
}

// createVolumes turns [runners.docker] volumes into binds: "src:dst[:mode]"
// is passed on as it is; a bare path is a cache volume named like the real
// runner's (runner-<short token>-project-<id>-concurrent-<n>-cache-<md5 of path>).
func (j *dockerJob) createVolumes(ctx context.Context, helperErr error) error {
	for _, v := range j.rc.Docker.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) > 1 {
			j.binds = append(j.binds, v)
			continue
		}
		dest := v
		if !path.IsAbs(dest) {
			dest = path.Join(j.projectDir, dest)
		}
		dest = path.Clean(dest)
		hash := fmt.Sprintf("%x", md5.Sum([]byte(dest)))

		if j.rc.Docker.CacheDir != "" && !j.rc.Docker.DisableCache {
			j.binds = append(j.binds, path.Join(j.rc.Docker.CacheDir, j.uniqueName, hash)+":"+dest)
			continue
		}
		name := j.uniqueName + "-cache-" + hash
		if j.rc.Docker.DisableCache {
			name = fmt.Sprintf("%s-%s-cache-%s", j.uniqueName, randomSuffix(), hash)
		}
		labels := j.labels("cache")
		labels["com.gitlab.gitlab-runner.destination"] = dest
		labels["com.gitlab.gitlab-runner.reusable"] = strconv.FormatBool(!j.rc.Docker.DisableCache)
		if err := j.docker.volumeCreate(ctx, name, labels); err != nil {
			return &jobFailure{msg: fmt.Sprintf("adding cache volume: creating docker volume: %v", err), reason: "runner_system_failure"}
		}
		if j.rc.Docker.DisableCache {
			j.tempVols = append(j.tempVols, name)
		}
		if helperErr != nil {
			return &jobFailure{
				msg: fmt.Sprintf("adding cache volume: set volume permissions: create permission container for volume %q: "+
					"Error response from daemon: No such image: %s", name, j.rc.Docker.HelperImage),
				reason: "runner_system_failure",
			}
		}
		j.binds = append(j.binds, name+":"+dest)
	}
	return nil
}

func (j *dockerJob) labels(kind string) map[string]string {
	const p = "com.gitlab.gitlab-runner."
	return map[string]string{
		p + "managed":          "true",
		p + "type":             kind,
		p + "job.id":           strconv.FormatInt(j.job.ID, 10),
		p + "job.sha":          j.job.GitInfo.Sha,
		p + "job.ref":          j.job.GitInfo.Ref,
		p + "project.id":       strconv.FormatInt(j.job.JobInfo.ProjectID, 10),
		p + "pipeline.id":      strconv.FormatInt(j.job.JobInfo.PipelineID, 10),
		p + "runner.id":        shortToken(j.rc.Token),
		p + "runner.system_id": j.systemID,
		p + "concurrent.id":    strconv.Itoa(j.concurrentID),
		p + "test-double":      "true",
	}
}

// env is the container environment: predefined runner variables, the job's
// variables, then the runner's `environment` setting, which overrides.
func (j *dockerJob) env() []string {
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	set("CI_RUNNER_ID", strconv.FormatInt(j.rc.ID, 10))
	set("CI_RUNNER_DESCRIPTION", j.rc.Name)
	set("CI_RUNNER_SHORT_TOKEN", shortToken(j.rc.Token))
	set("CI_RUNNER_VERSION", version)
	set("CI_RUNNER_REVISION", revision)
	set("CI_RUNNER_EXECUTABLE_ARCH", runtime.GOOS+"/"+runtime.GOARCH)
	set("CI_SERVER", "yes")
	set("CI_DISPOSABLE_ENVIRONMENT", "true")
	set("CI_BUILDS_DIR", j.buildsDir)
	set("CI_PROJECT_DIR", j.projectDir)
	set("CI_CONCURRENT_ID", strconv.Itoa(j.concurrentID))
	set("CI_CONCURRENT_PROJECT_ID", strconv.Itoa(j.concurrentID))
	set("CI_JOB_TOKEN", j.job.Token)
	for _, v := range j.job.Variables {
		if v.File {
			set(v.Key, j.fileVariablePath(v.Key))
			continue
		}
		set(v.Key, v.Value)
	}
	for _, e := range j.rc.Environment {
		if k, v, ok := strings.Cut(e, "="); ok {
			set(k, v)
		}
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vals[k])
	}
	return out
}

func (j *dockerJob) fileVariablePath(key string) string {
	return j.projectDir + ".tmp/" + key
}

func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// script builds the sh program for one stage: stop at the first failing
// command (set -e, pipefail where the shell has it) and echo each command
// first, as the real runner does ("$ command" in green).
func (j *dockerJob) script(commands []string, intro string) string {
	var b strings.Builder
	b.WriteString("if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi\nset -e\n")
	for _, v := range j.job.Variables {
		if v.File {
			p := j.fileVariablePath(v.Key)
			fmt.Fprintf(&b, "mkdir -p %s && printf '%%s' %s > %s\n", shQuote(path.Dir(p)), shQuote(v.Value), shQuote(p))
		}
	}
	if intro != "" {
		fmt.Fprintf(&b, "printf '%%s\\n' %s\n", shQuote(ansiGreen+intro+ansiReset))
	}
	for _, cmd := range commands {
		display := strings.TrimSpace(cmd)
		if first, _, multi := strings.Cut(display, "\n"); multi {
			display = first + " # collapsed multi-line command"
		}
		fmt.Fprintf(&b, "printf '%%s\\n' %s\n", shQuote(ansiGreen+"$ "+display+ansiReset))
		b.WriteString(cmd + "\n")
	}
	return b.String()
}

// runStage runs commands in a new container from the job image and returns
// nil, a script failure (exit code) or the reason the context ended.
func (j *dockerJob) runStage(ctx context.Context, stage string, commands []string, intro string) error {
	code, err := j.runContainer(ctx, stage, j.script(commands, intro))
	if ctx.Err() != nil {
		return j.contextFailure(ctx, ctx.Err())
	}
	if err != nil {
		return systemFailure(err)
	}
	if code != 0 {
		return &jobFailure{msg: fmt.Sprintf("exit code %d", code), reason: "script_failure", exitCode: code}
	}
	return nil
}

func (j *dockerJob) runAfterScript(step jobStep) {
	j.trace.sectionStart("after_script", "Running after_script")
	defer j.trace.sectionEnd("after_script")
	ctx, cancel := context.WithTimeoutCause(context.Background(), afterScriptTimeout, errJobTimeout)
	defer cancel()
	code, err := j.runContainer(ctx, "after_script", j.script(step.Script, "Running after script..."))
	switch {
	case ctx.Err() != nil:
		j.trace.warnln(fmt.Sprintf("after_script failed, but job will continue unaffected: execution took longer than %v seconds", afterScriptTimeout))
	case err != nil:
		j.trace.warnln("after_script failed, but job will continue unaffected: " + err.Error())
	case code != 0:
		j.trace.warnln(fmt.Sprintf("after_script failed, but job will continue unaffected: exit code %d", code))
	}
}

func (j *dockerJob) hostConfig() hostConfig {
	d := j.rc.Docker
	hc := hostConfig{
		Privileged: d.Privileged, NetworkMode: d.NetworkMode, Binds: j.binds, ShmSize: d.ShmSize,
		DNS: d.DNS, DNSSearch: d.DNSSearch, ExtraHosts: d.ExtraHosts, CapAdd: d.CapAdd, CapDrop: d.CapDrop,
		SecurityOpt: d.SecurityOpt, Tmpfs: d.Tmpfs, UsernsMode: d.UsernsMode,
	}
	if hc.Binds == nil {
		hc.Binds = []string{}
	}
	hc.LogConfig.Type = "json-file"
	for _, dev := range d.Devices {
		parts := strings.Split(dev, ":")
		m := deviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
		if len(parts) > 1 {
			m.PathInContainer = parts[1]
		}
		if len(parts) > 2 {
			m.CgroupPermissions = parts[2]
		}
		hc.Devices = append(hc.Devices, m)
	}
	return hc
}

// runContainer creates a container for one stage, streams its output into
// the job log and returns its exit code. Ending ctx kills the container.
func (j *dockerJob) runContainer(ctx context.Context, stage, script string) (int, error) {
	spec := containerSpec{
		Image: j.image.ID, Cmd: []string{"sh", "-c", script}, Entrypoint: j.job.Image.Entrypoint,
		Env: j.env(), WorkingDir: j.projectDir, Hostname: j.uniqueName, User: j.rc.Docker.User,
		Labels: j.labels("build"), AttachStdout: true, AttachStderr: true,
		HostConfig: j.hostConfig(),
	}
	spec.Labels["com.gitlab.gitlab-runner.stage"] = stage
	name := fmt.Sprintf("%s-%s-%s", j.uniqueName, randomSuffix(), strings.ReplaceAll(stage, "_", "-"))

	bg, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := j.docker.containerCreate(bg, name, spec)
	if err != nil {
		return -1, fmt.Errorf("creating the %s container: %w", stage, err)
	}
	j.containers = append(j.containers, id)
	j.log.with("container", id[:min(12, len(id))]).debug("Created container for stage", stage)

	stream, err := j.docker.containerAttach(bg, id)
	if err != nil {
		return -1, fmt.Errorf("attaching to the %s container: %w", stage, err)
	}
	defer stream.Close()
	if err := j.docker.containerStart(bg, id); err != nil {
		return -1, fmt.Errorf("starting the %s container: %w", stage, err)
	}
	copied := make(chan error, 1)
	go func() { copied <- demuxStream(stream, j.trace) }()
	select {
	case err = <-copied:
		if err != nil {
			j.log.withError(err).warn("Reading the container output ended with an error")
		}
	case <-ctx.Done():
		j.docker.containerKill(bg, id)
		stream.Close()
		<-copied
		return -1, ctx.Err()
	}
	j.trace.flushPending()
	return j.docker.containerWait(bg, id)
}

// cleanup removes the job's containers and temporary volumes, even when the
// job was aborted.
func (j *dockerJob) cleanup() {
	if j.docker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range j.containers {
		if err := j.docker.containerRemove(ctx, id); err != nil {
			j.log.withError(err).with("container", id).warn("Failed to remove a job container")
		}
	}
	for _, v := range j.tempVols {
		if err := j.docker.volumeRemove(ctx, v); err != nil {
			j.log.withError(err).with("volume", v).warn("Failed to remove a temporary volume")
		}
	}
}
