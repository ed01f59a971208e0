package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusClientError marks requests that never got an HTTP answer (the real
// client returns -1 there and logs the Go error, which names the URL).
const statusClientError = -1

// gitlabClient speaks the runner API (/api/v4) of one GitLab instance.
type gitlabClient struct {
	rawURL  string
	baseURL string // ends in /api/v4/
	http    *http.Client

	mu         sync.Mutex
	lastUpdate string // X-GitLab-Last-Update, echoed back in job requests
}

func newGitlabClient(rawURL, caFile string) (*gitlabClient, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil {
		return nil, fmt.Errorf("parse URL %s: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("only http or https scheme supported, got %q in URL %q", u.Scheme, rawURL)
	}
	// The real runner accepts URLs with a trailing / or /ci.
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/ci")
	base := strings.TrimSuffix(u.String(), "/") + "/api/v4/"

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyFromEnvironment
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading TLS CA file (tls-ca-file): %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &gitlabClient{rawURL: rawURL, baseURL: base, http: &http.Client{Transport: tr}}, nil
}

func userAgent() string {
	return fmt.Sprintf("gitlab-runner %s (%s; %s; %s/%s)", version, branch, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func newCorrelationID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type apiResult struct {
	status        int
	statusText    string
	header        http.Header
	correlationID string
}

// do sends one request. body is JSON-encoded unless it is a []byte (sent as
// text/plain); out, if non-nil, is decoded from an application/json answer
// when the status is want.
func (c *gitlabClient) do(ctx context.Context, method, path string, headers http.Header, body any, want int, out any) apiResult {
	res := apiResult{correlationID: newCorrelationID()}
	var reader io.Reader
	contentType := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		reader = bytes.NewReader(b)
		contentType = "text/plain"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			res.status, res.statusText = statusClientError, fmt.Sprintf("marshal request object: %v", err)
			return res
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, reader)
	if err != nil {
		res.status, res.statusText = statusClientError, fmt.Sprintf("create request: %v", err)
		return res
	}
	for k, vs := range headers {
		req.Header[k] = vs
	}
	if reader != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if out != nil {
		req.Header.Set("Accept", "application/json")
	}
	req.Header.Set("User-Agent", userAgent())
	req.Header.Set("X-Request-Id", res.correlationID)

	resp, err := c.http.Do(req)
	if err != nil {
		res.status = statusClientError
		res.statusText = "execute JSON request: execute request: " + err.Error()
		return res
	}
	defer resp.Body.Close()
	res.status, res.header = resp.StatusCode, resp.Header
	if id := resp.Header.Get("X-Request-Id"); id != "" {
		res.correlationID = id
	}
	if lu := resp.Header.Get("X-GitLab-Last-Update"); lu != "" {
		c.mu.Lock()
		c.lastUpdate = lu
		c.mu.Unlock()
	}
	mimeType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))

	if resp.StatusCode == want && out != nil {
		if mimeType != "application/json" {
			res.status = statusClientError
			res.statusText = fmt.Sprintf("response is not application/json: got Content-Type %q from %s %s", resp.Header.Get("Content-Type"), method, c.baseURL+path)
			return res
		}
		if err := json.Unmarshal(data, out); err != nil {
			res.status = statusClientError
			res.statusText = fmt.Sprintf("decoding json payload %v", err)
			return res
		}
	}
	res.statusText = resp.Status
	if resp.StatusCode >= 300 && mimeType == "application/json" {
		// GitLab explains errors as {"message": ...} or {"error": ...}.
		var e struct {
			Message any    `json:"message"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil {
			if s, ok := e.Message.(string); ok && s != "" {
				res.statusText = s
			} else if e.Message != nil {
				b, _ := json.Marshal(e.Message)
				res.statusText = resp.Status + " " + string(b)
			} else if e.Error != "" {
				res.statusText = resp.Status + " " + e.Error
			}
		}
	}
	return res
}

func (c *gitlabClient) getLastUpdate() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastUpdate
}

// ---- request and response bodies (common/network.go of the real runner) ----

type runnerInfo struct {
	Name         string          `json:"name,omitempty"`
	Version      string          `json:"version,omitempty"`
	Revision     string          `json:"revision,omitempty"`
	Platform     string          `json:"platform,omitempty"`
	Architecture string          `json:"architecture,omitempty"`
	Executor     string          `json:"executor,omitempty"`
	Shell        string          `json:"shell,omitempty"`
	Features     map[string]bool `json:"features"`
	Config       struct {
		Gpus string `json:"gpus"`
	} `json:"config"`
}

// newRunnerInfo describes this program. Only features the double really has
// are announced, so GitLab does not expect artifacts, caches or services.
func newRunnerInfo(executor string) runnerInfo {
	info := runnerInfo{
		Name: "gitlab-runner", Version: version, Revision: revision,
		Platform: runtime.GOOS, Architecture: runtime.GOARCH,
		Features: map[string]bool{},
	}
	if executor == "docker" {
		info.Executor, info.Shell = "docker", "bash"
		for _, f := range []string{"variables", "image", "shared", "refspecs", "masking", "raw_variables",
			"multi_build_steps", "trace_reset", "trace_checksum", "trace_size", "cancelable", "return_exit_code"} {
			info.Features[f] = true
		}
	}
	return info
}

type registerRequest struct {
	Description     string     `json:"description,omitempty"`
	MaintenanceNote string     `json:"maintenance_note,omitempty"`
	TagList         string     `json:"tag_list,omitempty"`
	RunUntagged     bool       `json:"run_untagged"`
	Locked          bool       `json:"locked"`
	AccessLevel     string     `json:"access_level,omitempty"`
	MaximumTimeout  int        `json:"maximum_timeout,omitempty"`
	Paused          bool       `json:"paused"`
	Info            runnerInfo `json:"info"`
	Token           string     `json:"token,omitempty"`
}

type tokenResponse struct {
	ID             int64     `json:"id,omitempty"`
	Token          string    `json:"token,omitempty"`
	TokenExpiresAt time.Time `json:"token_expires_at"`
}

type tokenRequest struct {
	Info     *runnerInfo `json:"info,omitempty"`
	Token    string      `json:"token,omitempty"`
	SystemID string      `json:"system_id,omitempty"`
}

func runnerTokenHeader(token string) http.Header {
	h := http.Header{}
	if token != "" {
		h.Set("RUNNER-TOKEN", token)
	}
	return h
}

func jobTokenHeader(token string) http.Header {
	h := http.Header{}
	if token != "" {
		h.Set("JOB-TOKEN", token)
	}
	return h
}

// registerRunner calls POST /runners with a registration token.
func (c *gitlabClient) registerRunner(ctx context.Context, log *entry, req registerRequest) (*tokenResponse, apiResult) {
	var out tokenResponse
	res := c.do(ctx, http.MethodPost, "runners", runnerTokenHeader(req.Token), req, http.StatusCreated, &out)
	log = log.with("correlation_id", res.correlationID)
	switch res.status {
	case http.StatusCreated:
		log.info("Registering runner...", "succeeded")
		return &out, res
	case http.StatusForbidden:
		log.with("status", res.statusText).error("Registering runner...", "forbidden (check registration token)")
	default:
		log.with("status", res.statusText).error("Registering runner...", "failed")
	}
	return nil, res
}

// verifyRunner calls POST /runners/verify. It returns nil only when GitLab
// says the token is unknown (403); other failures return an empty response,
// like the real runner, which does not delete runners on network errors.
func (c *gitlabClient) verifyRunner(ctx context.Context, log *entry, token, systemID, executor string) (*tokenResponse, bool) {
	info := newRunnerInfo(executor)
	var out tokenResponse
	res := c.do(ctx, http.MethodPost, "runners/verify", runnerTokenHeader(token),
		tokenRequest{Info: &info, Token: token, SystemID: systemID}, http.StatusOK, &out)
	log = log.with("correlation_id", res.correlationID)
	authToken := strings.HasPrefix(token, "glrt-")
	switch res.status {
	case http.StatusOK:
		if authToken {
			log.info("Verifying runner...", "is valid")
		} else {
			log.info("Verifying runner...", "is alive")
		}
		return &out, true
	case http.StatusForbidden:
		if authToken {
			log.info("Verifying runner...", "is not valid")
		} else {
			log.with("status", res.statusText).error("Verifying runner...", "is removed")
		}
		return nil, false
	default:
		log.with("status", res.statusText).error("Verifying runner...", "failed")
		return &out, false
	}
}

// unregisterRunner calls DELETE /runners (legacy runner tokens) or, for
// glrt- authentication tokens, DELETE /runners/managers: since GitLab 16 the
// runner itself belongs to GitLab and only this machine's manager is removed.
func (c *gitlabClient) unregisterRunner(ctx context.Context, log *entry, token, systemID string) bool {
	path, text := "runners", "Unregistering runner from GitLab"
	body := tokenRequest{Token: token}
	if strings.HasPrefix(token, "glrt-") {
		path, text = "runners/managers", "Unregistering runner manager from GitLab"
		body.SystemID = systemID
	}
	res := c.do(ctx, http.MethodDelete, path, runnerTokenHeader(token), body, http.StatusNoContent, nil)
	log = log.with("correlation_id", res.correlationID)
	switch res.status {
	case http.StatusNoContent:
		log.info(text, "succeeded")
		return true
	case http.StatusForbidden:
		log.with("status", res.statusText).error(text, "forbidden")
	default:
		log.with("status", res.statusText).error(text, "failed")
	}
	return false
}

// resetToken calls POST /runners/reset_authentication_token.
func (c *gitlabClient) resetToken(ctx context.Context, log *entry, token string) *tokenResponse {
	var out tokenResponse
	res := c.do(ctx, http.MethodPost, "runners/reset_authentication_token", nil,
		tokenRequest{Token: token}, http.StatusCreated, &out)
	log = log.with("correlation_id", res.correlationID)
	const text = "Resetting runner authentication token..."
	switch res.status {
	case http.StatusCreated:
		if out.Token == "" {
			log.with("status", res.statusText).error(text, "failed (the answer holds no token)")
			return nil
		}
		log.info(text, "succeeded")
		return &out
	case http.StatusForbidden:
		log.with("status", res.statusText).error(text, "failed (check used token)")
	default:
		log.with("status", res.statusText).error(text, "failed")
	}
	return nil
}

// ---- jobs ----

type jobVariable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
	Raw    bool   `json:"raw"`
}

type jobStep struct {
	Name         string   `json:"name"`
	Script       []string `json:"script"`
	Timeout      int      `json:"timeout"`
	When         string   `json:"when"`
	AllowFailure bool     `json:"allow_failure"`
}

type jobResponse struct {
	ID            int64  `json:"id"`
	Token         string `json:"token"`
	AllowGitFetch bool   `json:"allow_git_fetch"`
	JobInfo       struct {
		Name            string `json:"name"`
		Stage           string `json:"stage"`
		PipelineID      int64  `json:"pipeline_id"`
		ProjectID       int64  `json:"project_id"`
		ProjectName     string `json:"project_name"`
		ProjectFullPath string `json:"project_full_path"`
	} `json:"job_info"`
	GitInfo struct {
		RepoURL   string   `json:"repo_url"`
		Ref       string   `json:"ref"`
		Sha       string   `json:"sha"`
		BeforeSha string   `json:"before_sha"`
		RefType   string   `json:"ref_type"`
		Refspecs  []string `json:"refspecs"`
		Depth     int      `json:"depth"`
	} `json:"git_info"`
	RunnerInfo struct {
		Timeout int `json:"timeout"`
	} `json:"runner_info"`
	Variables []jobVariable `json:"variables"`
	Steps     []jobStep     `json:"steps"`
	Image     struct {
		Name       string   `json:"name"`
		Entrypoint []string `json:"entrypoint"`
		PullPolicy []string `json:"pull_policy"`
	} `json:"image"`
	Services     []json.RawMessage `json:"services"`
	Artifacts    []json.RawMessage `json:"artifacts"`
	Cache        []json.RawMessage `json:"cache"`
	Dependencies []json.RawMessage `json:"dependencies"`
	Features     struct {
		TraceSections  bool     `json:"trace_sections"`
		FailureReasons []string `json:"failure_reasons"`
	} `json:"features"`
}

// repoCleanURL is the repository URL without credentials, for logs.
func (j *jobResponse) repoCleanURL() string {
	u, err := url.Parse(j.GitInfo.RepoURL)
	if err != nil {
		return ""
	}
	u.User = nil
	return u.String()
}

type jobRequest struct {
	Info       runnerInfo `json:"info"`
	Token      string     `json:"token,omitempty"`
	SystemID   string     `json:"system_id,omitempty"`
	LastUpdate string     `json:"last_update,omitempty"`
}

type requestOutcome int

const (
	requestNoJob     requestOutcome = iota // 204 or an answer that is not worth a backoff
	requestJob                             // 201 with a job
	requestForbidden                       // 403: token unknown to GitLab
	requestFailed                          // network or protocol failure
)

// requestJob calls POST /jobs/request.
func (c *gitlabClient) requestJob(ctx context.Context, log *entry, rc *RunnerConfig, systemID string) (*jobResponse, requestOutcome, string) {
	req := jobRequest{Info: newRunnerInfo(rc.Executor), Token: rc.Token, SystemID: systemID, LastUpdate: c.getLastUpdate()}
	var job jobResponse
	res := c.do(ctx, http.MethodPost, "jobs/request", runnerTokenHeader(rc.Token), req, http.StatusCreated, &job)
	if ctx.Err() != nil {
		return nil, requestFailed, "" // the runner is stopping: nothing to report
	}
	log = log.with("correlation_id", res.correlationID)
	switch res.status {
	case http.StatusCreated:
		log.with("job", job.ID).with("repo_url", job.repoCleanURL()).info("Checking for jobs...", "received")
		return &job, requestJob, ""
	case http.StatusNoContent:
		log.with("status", res.statusText).debug("Checking for jobs...", "no content")
		return nil, requestNoJob, ""
	case http.StatusForbidden:
		log.with("status", res.statusText).error("Checking for jobs...", "forbidden")
		return nil, requestForbidden, res.statusText
	case http.StatusServiceUnavailable:
		log.with("status", res.statusText).warn("Checking for jobs...", "GitLab instance currently unavailable")
		return nil, requestFailed, res.statusText
	case statusClientError:
		log.with("status", res.statusText).warn("Checking for jobs...", "failed")
		return nil, requestFailed, res.statusText
	default:
		log.with("status", res.statusText).warn("Checking for jobs...", "failed")
		return nil, requestFailed, res.statusText
	}
}

type jobOutput struct {
	Checksum string `json:"checksum,omitempty"`
	Bytesize int    `json:"bytesize,omitempty"`
}

type updateJobRequest struct {
	Info          runnerInfo `json:"info"`
	Token         string     `json:"token,omitempty"`
	State         string     `json:"state,omitempty"`
	FailureReason string     `json:"failure_reason,omitempty"`
	Checksum      string     `json:"checksum,omitempty"`
	Output        jobOutput  `json:"output"`
	ExitCode      int        `json:"exit_code,omitempty"`
}

// remoteState reads the Job-Status and update-interval headers GitLab adds
// to trace and update answers.
type remoteState struct {
	state          string
	updateInterval time.Duration
}

func readRemoteState(h http.Header) remoteState {
	rs := remoteState{state: h.Get("Job-Status")}
	if v := h.Get("X-GitLab-Trace-Update-Interval"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			rs.updateInterval = time.Duration(n) * time.Second
		}
	}
	return rs
}

// aborted is true when GitLab no longer wants this job (canceled or failed
// on its side, or the job token is refused).
func (r remoteState) aborted() bool {
	return r.state == "canceled" || r.state == "failed" || r.state == "canceling"
}

// updateJob calls PUT /jobs/:id.
func (c *gitlabClient) updateJob(ctx context.Context, log *entry, rc *RunnerConfig, jobID int64, jobToken string, u updateJobRequest) (apiResult, remoteState) {
	u.Info, u.Token = newRunnerInfo(rc.Executor), jobToken
	u.Checksum = u.Output.Checksum
	log = log.with("job", jobID).with("checksum", u.Output.Checksum).with("bytesize", u.Output.Bytesize)
	log.info("Updating job...")
	res := c.do(ctx, http.MethodPut, fmt.Sprintf("jobs/%d", jobID), jobTokenHeader(jobToken), u, http.StatusOK, nil)
	rs := readRemoteState(res.header)
	log = log.with("code", res.status).with("job-status", rs.state).with("correlation_id", res.correlationID)
	switch {
	case rs.state == "canceled" || rs.state == "failed":
		log.with("status", res.statusText).warn("Submitting job to coordinator...", "job failed")
	case res.status == http.StatusOK:
		log.info("Submitting job to coordinator...", "ok")
	case res.status == http.StatusAccepted:
		log.info("Submitting job to coordinator...", "accepted, but not yet completed")
	case res.status == http.StatusPreconditionFailed:
		log.info("Submitting job to coordinator...", "trace validation failed")
	case res.status == http.StatusNotFound:
		log.with("status", res.statusText).warn("Submitting job to coordinator...", "not found")
	case res.status == http.StatusForbidden:
		log.with("status", res.statusText).error("Submitting job to coordinator...", "forbidden")
	default:
		log.with("status", res.statusText).warn("Submitting job to coordinator...", "failed")
	}
	return res, rs
}

// patchTrace calls PATCH /jobs/:id/trace with content starting at offset.
// It returns the offset GitLab now has: offset+len(content) on 202, the end
// of GitLab's Range on 416, or offset unchanged on failure.
func (c *gitlabClient) patchTrace(ctx context.Context, log *entry, jobID int64, jobToken string, content []byte, offset int) (int, apiResult, remoteState) {
	end := offset + len(content)
	contentRange := fmt.Sprintf("%d-%d", offset, end-1)
	h := jobTokenHeader(jobToken)
	h.Set("Content-Range", contentRange)
	res := c.do(ctx, http.MethodPatch, fmt.Sprintf("jobs/%d/trace?debug_trace=false", jobID), h, content, http.StatusAccepted, nil)
	rs := readRemoteState(res.header)
	log = log.with("job", jobID).with("sent-log", contentRange).with("code", res.status).with("status", res.statusText)
	if res.header != nil {
		log = log.with("job-log", res.header.Get("Range")).with("job-status", rs.state)
	}
	switch {
	case rs.state == "canceled" || rs.state == "failed":
		log.warn("Appending trace to coordinator...", "job failed")
		return offset, res, rs
	case res.status == http.StatusAccepted:
		log.debug("Appending trace to coordinator...", "ok")
		return end, res, rs
	case res.status == http.StatusRequestedRangeNotSatisfiable:
		log.warn("Appending trace to coordinator...", "range mismatch")
		// GitLab answers "Range: 0-N": it has N bytes, so resend from N.
		parts := strings.Split(res.header.Get("Range"), "-")
		if len(parts) == 2 {
			if n, err := strconv.Atoi(strings.TrimSpace(parts[1])); err == nil && n >= 0 {
				return n, res, rs
			}
		}
		return 0, res, rs
	case res.status == http.StatusNotFound:
		log.warn("Appending trace to coordinator...", "not-found")
	case res.status == statusClientError:
		log.error("Appending trace to coordinator...", "error")
	default:
		log.warn("Appending trace to coordinator...", "failed")
	}
	return offset, res, rs
}
