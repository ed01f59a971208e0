package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// ---- helpers ----

// syncBuffer collects a command's stderr while it is still running.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type cmdResult struct {
	code   int
	stdout string
	stderr string
}

// runCLI runs one command line of the double in-process, with env as its
// whole environment.
func runCLI(t *testing.T, env map[string]string, args ...string) cmdResult {
	t.Helper()
	var out, errb syncBuffer
	a := newApp(strings.NewReader(""), &out, &errb, func(k string) string { return env[k] })
	code := a.main(args)
	return cmdResult{code, out.String(), errb.String()}
}

// startRun starts `gitlab-runner run` in the background; stop ends it like
// SIGTERM and returns its exit code.
func startRun(t *testing.T, args ...string) (logs *syncBuffer, stop func() int) {
	t.Helper()
	logs = &syncBuffer{}
	a := newApp(strings.NewReader(""), io.Discard, logs, func(string) string { return "" })
	ctx, cancel := context.WithCancel(context.Background())
	a.ctx = ctx
	a.signals = make(chan os.Signal)
	done := make(chan int, 1)
	go func() { done <- a.main(append([]string{"run"}, args...)) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				t.Errorf("run did not stop; log:\n%s", logs.String())
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return logs, stop
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	extra := ""
	if logs != nil {
		extra = "\nlog:\n" + logs.String()
	}
	t.Fatalf("timed out waiting for %s%s", what, extra)
}

// fastLoops shortens the main loop's timers for the test.
func fastLoops(t *testing.T) {
	old := []time.Duration{configCheckInterval, tokenCheckInterval, defaultCheckInterval, preparationRetryInterval, maxRequestBackoff}
	configCheckInterval, tokenCheckInterval, defaultCheckInterval = 50*time.Millisecond, 20*time.Millisecond, 50*time.Millisecond
	preparationRetryInterval, maxRequestBackoff = 10*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() {
		configCheckInterval, tokenCheckInterval, defaultCheckInterval = old[0], old[1], old[2]
		preparationRetryInterval, maxRequestBackoff = old[3], old[4]
	})
}

func decodeTOMLFile(t *testing.T, path string) map[string]any {
	t.Helper()
	m := map[string]any{}
	if _, err := toml.DecodeFile(path, &m); err != nil {
		t.Fatalf("config %s is not valid TOML: %v", path, err)
	}
	return m
}

func runnersOf(t *testing.T, m map[string]any) []map[string]any {
	t.Helper()
	rs, _ := m["runners"].([]map[string]any)
	return rs
}

// ---- fake GitLab ----

type fakeJob struct {
	resp       map[string]any
	state      string
	reason     string
	exitCode   int
	checksum   string
	bytesize   int
	trace      []byte
	force416   bool
	done       chan struct{}
	closedOnce sync.Once
}

type fakeGitLab struct {
	t   *testing.T
	srv *httptest.Server

	mu            sync.Mutex
	regToken      string
	tokens        map[string]int64 // valid runner tokens -> runner id
	nextID        int64
	expiresIn     time.Duration
	registerBods  []map[string]any
	jobRequests   []map[string]any
	pending       []*fakeJob
	jobs          map[int64]*fakeJob
	deleted       []string
	managers      []map[string]any
	resets        []string
	verifies      []string
	unknownTokens []string
}

func newFakeGitLab(t *testing.T) *fakeGitLab {
	g := &fakeGitLab{t: t, regToken: "GR1348941-reg-token", tokens: map[string]int64{}, nextID: 100, jobs: map[int64]*fakeJob{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.handle))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGitLab) addToken(token string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nextID++
	g.tokens[token] = g.nextID
}

func (g *fakeGitLab) hasToken(token string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.tokens[token]
	return ok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (g *fakeGitLab) expiry() any {
	if g.expiresIn == 0 {
		return nil
	}
	return time.Now().Add(g.expiresIn).UTC().Format(time.RFC3339)
}

var traceURL = regexp.MustCompile(`^/api/v4/jobs/(\d+)/trace$`)
var jobURL = regexp.MustCompile(`^/api/v4/jobs/(\d+)$`)

func (g *fakeGitLab) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req map[string]any
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &req); err != nil {
			g.t.Errorf("%s %s: body is not JSON: %v", r.Method, r.URL.Path, err)
		}
	}
	token, _ := req["token"].(string)
	g.mu.Lock()
	defer g.mu.Unlock()
	_, known := g.tokens[token]
	forbidden := func() { writeJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden"}) }

	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/v4/runners":
		g.registerBods = append(g.registerBods, req)
		if token != g.regToken {
			forbidden()
			return
		}
		g.nextID++
		newToken := fmt.Sprintf("glrt-registered%dxyzxyzxyz", g.nextID)
		g.tokens[newToken] = g.nextID
		writeJSON(w, http.StatusCreated, map[string]any{"id": g.nextID, "token": newToken, "token_expires_at": g.expiry()})
	case r.Method == http.MethodPost && r.URL.Path == "/api/v4/runners/verify":
		g.verifies = append(g.verifies, token)
		if !known {
			forbidden()
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": g.tokens[token], "token": token, "token_expires_at": g.expiry()})
	case r.Method == http.MethodDelete && r.URL.Path == "/api/v4/runners":
		if !known {
			forbidden()
			return
		}
		delete(g.tokens, token)
		g.deleted = append(g.deleted, token)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodDelete && r.URL.Path == "/api/v4/runners/managers":
		if !known {
			forbidden()
			return
		}
		g.managers = append(g.managers, req)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == "/api/v4/runners/reset_authentication_token":
		if !known {
			forbidden()
			return
		}
		id := g.tokens[token]
		delete(g.tokens, token)
		newToken := fmt.Sprintf("glrt-rotated%d-%dabcdefgh", id, len(g.resets)+1)
		g.tokens[newToken] = id
		g.resets = append(g.resets, token)
		writeJSON(w, http.StatusCreated, map[string]any{"token": newToken, "token_expires_at": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)})
	case r.Method == http.MethodPost && r.URL.Path == "/api/v4/jobs/request":
		g.jobRequests = append(g.jobRequests, req)
		if !known {
			g.unknownTokens = append(g.unknownTokens, token)
			forbidden()
			return
		}
		w.Header().Set("X-GitLab-Last-Update", "lu-1")
		if len(g.pending) == 0 {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		j := g.pending[0]
		g.pending = g.pending[1:]
		id := int64(j.resp["id"].(int))
		g.jobs[id] = j
		writeJSON(w, http.StatusCreated, j.resp)
	case r.Method == http.MethodPatch && traceURL.MatchString(r.URL.Path):
		id, _ := strconv.ParseInt(traceURL.FindStringSubmatch(r.URL.Path)[1], 10, 64)
		j := g.jobs[id]
		if j == nil || r.Header.Get("JOB-TOKEN") != j.resp["token"] {
			forbidden()
			return
		}
		var start, end int
		if _, err := fmt.Sscanf(r.Header.Get("Content-Range"), "%d-%d", &start, &end); err != nil || end-start+1 != len(body) {
			g.t.Errorf("bad Content-Range %q for %d bytes", r.Header.Get("Content-Range"), len(body))
		}
		if j.force416 && len(body) > 5 {
			// Pretend only the first 5 bytes arrived: the runner must resend from there.
			j.force416 = false
			j.trace = append(j.trace, body[:5]...)
			w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.trace)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		if start != len(j.trace) {
			w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.trace)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		j.trace = append(j.trace, body...)
		w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.trace)))
		w.Header().Set("Job-Status", "running")
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPut && jobURL.MatchString(r.URL.Path):
		id, _ := strconv.ParseInt(jobURL.FindStringSubmatch(r.URL.Path)[1], 10, 64)
		j := g.jobs[id]
		if j == nil || token != j.resp["token"] {
			forbidden()
			return
		}
		j.state, _ = req["state"].(string)
		j.reason, _ = req["failure_reason"].(string)
		if ec, ok := req["exit_code"].(float64); ok {
			j.exitCode = int(ec)
		}
		out, _ := req["output"].(map[string]any)
		j.checksum, _ = out["checksum"].(string)
		if n, ok := out["bytesize"].(float64); ok {
			j.bytesize = int(n)
		}
		if j.state == "success" || j.state == "failed" {
			j.closedOnce.Do(func() { close(j.done) })
		}
		w.WriteHeader(http.StatusOK)
	default:
		g.t.Errorf("fake GitLab: unexpected %s %s", r.Method, r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
	}
}

func (g *fakeGitLab) queueJob(id int, script []string, vars ...map[string]any) *fakeJob {
	variables := []map[string]any{{"key": "GIT_STRATEGY", "value": "none", "public": true}}
	variables = append(variables, vars...)
	j := &fakeJob{done: make(chan struct{}), resp: map[string]any{
		"id": id, "token": fmt.Sprintf("glcbt-jobtoken-%d-secret", id), "allow_git_fetch": false,
		"job_info":    map[string]any{"name": "test", "stage": "test", "project_id": 42, "project_name": "proj"},
		"git_info":    map[string]any{"repo_url": "http://gitlab-ci-token:secret@127.0.0.1/group/proj.git", "ref": "main", "sha": "abc123", "before_sha": "000", "ref_type": "branch", "refspecs": []string{}, "depth": 20},
		"runner_info": map[string]any{"timeout": 60},
		"variables":   variables,
		"steps":       []map[string]any{{"name": "script", "script": script, "timeout": 60, "when": "on_success", "allow_failure": false}},
		"image":       map[string]any{"name": "alpine:3.20"},
		"services":    []any{}, "artifacts": []any{}, "cache": []any{}, "credentials": []any{}, "dependencies": []any{},
		"features": map[string]any{"trace_sections": true},
	}}
	g.mu.Lock()
	g.pending = append(g.pending, j)
	g.mu.Unlock()
	return j
}

func (g *fakeGitLab) lastJobRequest() map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.jobRequests) == 0 {
		return nil
	}
	return g.jobRequests[len(g.jobRequests)-1]
}

// ---- fake Docker API on a unix socket ----
//
// Containers are local `sh` processes: enough to check the script the double
// generates and the API calls it makes, without podman.

type fakeContainer struct {
	id      string
	name    string
	spec    containerSpec
	started chan struct{}
	done    chan struct{}
	exit    int
	proc    *exec.Cmd
	removed bool
}

type fakeDocker struct {
	t          *testing.T
	sock       string
	mu         sync.Mutex
	images     map[string]string // name -> ID
	volumes    []string
	containers []*fakeContainer
	pulls      []string
	running    int
	maxRunning int
}

func newFakeDocker(t *testing.T) *fakeDocker {
	dir, err := os.MkdirTemp("", "dkr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &fakeDocker{t: t, sock: filepath.Join(dir, "docker.sock"), images: map[string]string{"alpine:3.20": "sha256:alpineid"}}
	l, err := net.Listen("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(d.handle)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return d
}

func (d *fakeDocker) container(id string) *fakeContainer {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.containers {
		if c.id == id {
			return c
		}
	}
	return nil
}

func (d *fakeDocker) handle(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/_ping" {
		io.WriteString(w, "OK")
		return
	}
	if !strings.HasPrefix(p, "/v1.41/") {
		d.t.Errorf("fake docker: path without /v1.41/: %s", p)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	p = strings.TrimPrefix(p, "/v1.41")
	notFound := func(msg string) { writeJSON(w, http.StatusNotFound, map[string]string{"message": msg}) }
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/images/") && strings.HasSuffix(p, "/json"):
		name := strings.TrimSuffix(strings.TrimPrefix(p, "/images/"), "/json")
		d.mu.Lock()
		id, ok := d.images[name]
		d.mu.Unlock()
		if !ok {
			notFound("No such image: " + name)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"Id": id, "RepoDigests": []string{}})
	case r.Method == http.MethodPost && p == "/images/create":
		d.mu.Lock()
		d.pulls = append(d.pulls, r.URL.Query().Get("fromImage")+":"+r.URL.Query().Get("tag"))
		d.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"status":"Trying to pull"}`+"\n"+`{"error":"initializing source: no registry reachable","errorDetail":{"message":"no registry reachable"}}`+"\n")
	case r.Method == http.MethodPost && p == "/volumes/create":
		var v struct{ Name string }
		json.NewDecoder(r.Body).Decode(&v)
		d.mu.Lock()
		d.volumes = append(d.volumes, v.Name)
		d.mu.Unlock()
		writeJSON(w, http.StatusCreated, map[string]any{"Name": v.Name})
	case r.Method == http.MethodPost && p == "/containers/create":
		var spec containerSpec
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
			d.t.Errorf("containers/create: %v", err)
		}
		d.mu.Lock()
		c := &fakeContainer{id: fmt.Sprintf("cid%04d", len(d.containers)+1), name: r.URL.Query().Get("name"), spec: spec,
			started: make(chan struct{}), done: make(chan struct{})}
		d.containers = append(d.containers, c)
		d.mu.Unlock()
		writeJSON(w, http.StatusCreated, map[string]any{"Id": c.id, "Warnings": []string{}})
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/attach"):
		c := d.container(strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/attach"))
		if c == nil {
			notFound("no such container")
			return
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			d.t.Errorf("hijack: %v", err)
			return
		}
		buf.WriteString("HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		buf.Flush()
		go d.runContainer(c, conn)
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/start"):
		c := d.container(strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/start"))
		if c == nil {
			notFound("no such container")
			return
		}
		close(c.started)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/wait"):
		c := d.container(strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/wait"))
		if c == nil {
			notFound("no such container")
			return
		}
		<-c.done
		writeJSON(w, http.StatusOK, map[string]any{"StatusCode": c.exit})
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/kill"):
		c := d.container(strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/kill"))
		if c != nil && c.proc != nil && c.proc.Process != nil {
			c.proc.Process.Kill()
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodDelete && strings.HasPrefix(p, "/containers/"):
		c := d.container(strings.TrimPrefix(p, "/containers/"))
		if c == nil {
			notFound("no such container")
			return
		}
		d.mu.Lock()
		c.removed = true
		d.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodDelete && strings.HasPrefix(p, "/volumes/"):
		w.WriteHeader(http.StatusNoContent)
	default:
		d.t.Errorf("fake docker: unexpected %s %s", r.Method, p)
		w.WriteHeader(http.StatusNotFound)
	}
}

// frameWriter writes Docker's multiplexed stream format.
type frameWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	stream byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hdr := make([]byte, 8)
	hdr[0] = f.stream
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(p)))
	if _, err := f.w.Write(append(hdr, p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *fakeDocker) runContainer(c *fakeContainer, conn net.Conn) {
	defer conn.Close()
	defer close(c.done)
	<-c.started
	cmd := exec.Command(c.spec.Cmd[0], c.spec.Cmd[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, c.spec.Env...)
	cmd.Dir = os.TempDir()
	var mu sync.Mutex
	cmd.Stdout = frameWriter{&mu, conn, 1}
	cmd.Stderr = frameWriter{&mu, conn, 2}
	c.proc = cmd
	d.mu.Lock()
	d.running++
	d.maxRunning = max(d.maxRunning, d.running)
	d.mu.Unlock()
	err := cmd.Run()
	d.mu.Lock()
	d.running--
	d.mu.Unlock()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		c.exit = ee.ExitCode()
		if c.exit < 0 {
			c.exit = 137
		}
	default:
		c.exit = 127
	}
}

// ---- tests ----

func TestVersion(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		res := runCLI(t, nil, flag)
		if res.code != 0 {
			t.Fatalf("%s: exit %d", flag, res.code)
		}
		for _, want := range []string{"Version:      19.4.0\n", "Git revision: testdouble\n", "Git branch:   test-double\n",
			"GO version:   go", "Built:        ", "OS/Arch:      linux/", "Note: this is pipglr-builder's protocol test double of gitlab-runner, not the real program\n"} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("%s output lacks %q:\n%s", flag, want, res.stdout)
			}
		}
	}
}

func TestUnknownFlagAndCommand(t *testing.T) {
	res := runCLI(t, nil, "register", "--no-such-flag")
	if res.code == 0 || !strings.Contains(res.stderr, "flag provided but not defined: -no-such-flag") {
		t.Errorf("unknown flag: exit %d, stderr:\n%s", res.code, res.stderr)
	}
	res = runCLI(t, nil, "frobnicate")
	if res.code != 1 || !strings.Contains(res.stderr, "FATAL: Command frobnicate not found.") {
		t.Errorf("unknown command: exit %d, stderr:\n%s", res.code, res.stderr)
	}
}

func registerArgs(url, config string, extra ...string) []string {
	return append([]string{"register", "--non-interactive", "--url", url, "--registration-token", "GR1348941-reg-token",
		"--executor", "docker", "--docker-image", "alpine:3.20", "--config", config}, extra...)
}

func TestRegisterWritesConfig(t *testing.T) {
	g := newFakeGitLab(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")

	res := runCLI(t, nil, registerArgs(g.srv.URL+"/", cfgPath,
		"--name", "first", "--docker-host", "unix:///run/podman/podman.sock", "--docker-privileged",
		"--docker-network-mode", "host", "--docker-helper-image", "helper:local", "--tag-list", "a,b",
		"--docker-volumes", "/certs:/certs:ro")...)
	if res.code != 0 {
		t.Fatalf("register failed (%d):\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"Registering runner... succeeded", "Runner registered successfully.",
		fmt.Sprintf("Configuration (with the authentication token) was saved in %q", cfgPath)} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("register output lacks %q:\n%s", want, res.stderr)
		}
	}

	g.mu.Lock()
	body := g.registerBods[0]
	g.mu.Unlock()
	if body["token"] != "GR1348941-reg-token" || body["description"] != "first" || body["tag_list"] != "a,b" ||
		body["run_untagged"] != false || body["locked"] != true {
		t.Errorf("unexpected POST /runners body: %v", body)
	}
	if info, _ := body["info"].(map[string]any); info["name"] != "gitlab-runner" || info["version"] != "19.4.0" {
		t.Errorf("unexpected info in POST /runners: %v", body["info"])
	}

	m := decodeTOMLFile(t, cfgPath)
	if m["concurrent"] != int64(1) || m["check_interval"] != int64(0) || m["shutdown_timeout"] != int64(0) {
		t.Errorf("top-level defaults missing: %v", m)
	}
	if ss, _ := m["session_server"].(map[string]any); ss["session_timeout"] != int64(1800) {
		t.Errorf("session_server.session_timeout missing: %v", m["session_server"])
	}
	rs := runnersOf(t, m)
	if len(rs) != 1 {
		t.Fatalf("want 1 runner, got %d", len(rs))
	}
	r := rs[0]
	if r["name"] != "first" || r["executor"] != "docker" || r["id"] != int64(101) ||
		!strings.HasPrefix(r["token"].(string), "glrt-registered101") || r["url"] != g.srv.URL+"/" {
		t.Errorf("unexpected runner entry: %v", r)
	}
	if _, ok := r["token_obtained_at"].(time.Time); !ok {
		t.Errorf("token_obtained_at is not a datetime: %v", r["token_obtained_at"])
	}
	d, _ := r["docker"].(map[string]any)
	if d["host"] != "unix:///run/podman/podman.sock" || d["image"] != "alpine:3.20" || d["privileged"] != true ||
		d["network_mode"] != "host" || d["helper_image"] != "helper:local" {
		t.Errorf("unexpected [runners.docker]: %v", d)
	}
	if vols := fmt.Sprint(d["volumes"]); vols != "[/certs:/certs:ro /cache]" {
		t.Errorf("volumes = %s, want the given one plus /cache", vols)
	}
	text, _ := os.ReadFile(cfgPath)
	if !strings.HasPrefix(string(text), "concurrent = 1\n") || !strings.Contains(string(text), "\n[[runners]]\n  name = \"first\"\n") ||
		!strings.Contains(string(text), "\n  [runners.docker]\n    host = ") {
		t.Errorf("config.toml does not look like gitlab-runner's:\n%s", text)
	}
	if st, _ := os.Stat(cfgPath); st.Mode().Perm() != 0o600 {
		t.Errorf("config.toml mode = %v, want 0600", st.Mode().Perm())
	}
	if strings.Contains(res.stderr, r["token"].(string)) {
		t.Errorf("the full runner token was printed:\n%s", res.stderr)
	}
}

func TestRegisterFromEnvironmentAppends(t *testing.T) {
	g := newFakeGitLab(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	// An existing file with a runner and settings the double does not model:
	// they must survive.
	existing := `concurrent = 4
listen_address = ":9252"

[[runners]]
  name = "old"
  url = "https://gitlab.example"
  token = "glrt-oldoldoldold"
  executor = "docker"
  [runners.docker]
    image = "debian"
    [runners.docker.tmpfs]
      "/mnt/ramdisk" = "rw,exec,size=2G"
`
	if err := os.WriteFile(cfgPath, []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"REGISTER_NON_INTERACTIVE": "true", "CI_SERVER_URL": g.srv.URL, "CI_SERVER_TOKEN": "GR1348941-reg-token",
		"RUNNER_EXECUTOR": "docker", "DOCKER_IMAGE": "busybox", "DOCKER_HOST": "unix:///sock",
		"DOCKER_PRIVILEGED": "false", "DOCKER_VOLUMES": "/cache,/srv:/srv", "DOCKER_NETWORK_MODE": "host",
		"RUNNER_NAME": "second", "CONFIG_FILE": cfgPath, "REGISTER_RUN_UNTAGGED": "true",
	}
	res := runCLI(t, env, "register")
	if res.code != 0 {
		t.Fatalf("register from env failed (%d):\n%s", res.code, res.stderr)
	}
	m := decodeTOMLFile(t, cfgPath)
	if m["concurrent"] != int64(4) || m["listen_address"] != ":9252" {
		t.Errorf("existing top-level settings changed: %v", m)
	}
	rs := runnersOf(t, m)
	if len(rs) != 2 || rs[0]["name"] != "old" || rs[1]["name"] != "second" {
		t.Fatalf("want runners old and second, got %v", rs)
	}
	tmpfs := rs[0]["docker"].(map[string]any)["tmpfs"].(map[string]any)
	if tmpfs["/mnt/ramdisk"] != "rw,exec,size=2G" {
		t.Errorf("existing [runners.docker.tmpfs] lost: %v", rs[0]["docker"])
	}
	d := rs[1]["docker"].(map[string]any)
	if fmt.Sprint(d["volumes"]) != "[/cache /srv:/srv]" || d["network_mode"] != "host" || d["host"] != "unix:///sock" {
		t.Errorf("unexpected [runners.docker] from env: %v", d)
	}
	g.mu.Lock()
	if g.registerBods[0]["run_untagged"] != true {
		t.Errorf("REGISTER_RUN_UNTAGGED not sent: %v", g.registerBods[0])
	}
	g.mu.Unlock()

	// A third registration appends again.
	res = runCLI(t, env, "register", "--name", "third")
	if res.code != 0 {
		t.Fatalf("third register failed:\n%s", res.stderr)
	}
	if rs := runnersOf(t, decodeTOMLFile(t, cfgPath)); len(rs) != 3 || rs[2]["name"] != "third" {
		t.Errorf("third runner not appended: %v", rs)
	}
}

func TestRegisterForbidden(t *testing.T) {
	g := newFakeGitLab(t)
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	args := registerArgs(g.srv.URL, cfgPath)
	args[5] = "GR1348941-wrong-token"
	res := runCLI(t, nil, args...)
	if res.code == 0 {
		t.Fatalf("register with a bad token succeeded:\n%s", res.stderr)
	}
	for _, want := range []string{
		"ERROR: Registering runner... forbidden (check registration token)",
		"status=403 Forbidden",
		"refused the registration token (403 Forbidden)",
		"PANIC: Failed to register the runner.",
	} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("output lacks %q:\n%s", want, res.stderr)
		}
	}
	if _, err := os.Stat(cfgPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config.toml was written after a refused registration")
	}
	if strings.Contains(res.stderr, "GR1348941-wrong-token") {
		t.Errorf("the registration token was printed in full:\n%s", res.stderr)
	}
}

func TestRegisterUnwritableConfig(t *testing.T) {
	g := newFakeGitLab(t)
	dir := t.TempDir()

	// A config path that cannot even be read is refused before GitLab is asked.
	blocker := filepath.Join(dir, "not-a-dir")
	os.WriteFile(blocker, nil, 0o600)
	badPath := filepath.Join(blocker, "config.toml")
	res := runCLI(t, nil, registerArgs(g.srv.URL, badPath)...)
	if res.code == 0 || !strings.Contains(res.stderr, "PANIC: Couldn't read the config file "+badPath) {
		t.Errorf("unreadable config path: exit %d\n%s", res.code, res.stderr)
	}

	// Saving fails after GitLab registered the runner: it is removed again.
	old := saveFile
	saveFile = func(string, []byte) error {
		return errors.New("saving the file: open config.toml: read-only file system")
	}
	t.Cleanup(func() { saveFile = old })
	cfgPath := filepath.Join(dir, "config.toml")
	res = runCLI(t, nil, registerArgs(g.srv.URL, cfgPath)...)
	if res.code == 0 {
		t.Fatalf("register succeeded although the config cannot be written:\n%s", res.stderr)
	}
	if !strings.Contains(res.stderr, "Couldn't save the new runner to "+cfgPath+": saving the file: open config.toml: read-only file system") {
		t.Errorf("no clear message about the config file:\n%s", res.stderr)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.registerBods) != 1 || len(g.managers) != 1 {
		t.Errorf("the runner registered in GitLab was not removed again (register calls=%d, manager deletions=%v)", len(g.registerBods), g.managers)
	}
}

func TestRegisterWithAuthenticationToken(t *testing.T) {
	g := newFakeGitLab(t)
	g.addToken("glrt-authtokenauthtoken")
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	res := runCLI(t, nil, "register", "-n", "--url", g.srv.URL, "--token", "glrt-authtokenauthtoken",
		"--executor", "docker", "--docker-image", "alpine", "--config", cfgPath, "--name", "auth")
	if res.code != 0 {
		t.Fatalf("register --token failed:\n%s", res.stderr)
	}
	if !strings.Contains(res.stderr, "Verifying runner... is valid") {
		t.Errorf("no verify message:\n%s", res.stderr)
	}
	g.mu.Lock()
	regs := len(g.registerBods)
	g.mu.Unlock()
	if regs != 0 {
		t.Errorf("POST /runners was called with an authentication token")
	}
	rs := runnersOf(t, decodeTOMLFile(t, cfgPath))
	if len(rs) != 1 || rs[0]["token"] != "glrt-authtokenauthtoken" || rs[0]["id"] == int64(0) {
		t.Errorf("unexpected runner: %v", rs)
	}

	// Server-side settings are refused with an authentication token.
	res = runCLI(t, nil, "register", "-n", "--url", g.srv.URL, "--token", "glrt-authtokenauthtoken",
		"--executor", "docker", "--docker-image", "alpine", "--config", cfgPath, "--tag-list", "x")
	if res.code == 0 || !strings.Contains(res.stderr, "is reserved") {
		t.Errorf("--tag-list with glrt- token: exit %d\n%s", res.code, res.stderr)
	}
	// An unknown authentication token fails.
	res = runCLI(t, nil, "register", "-n", "--url", g.srv.URL, "--token", "glrt-unknownunknown",
		"--executor", "docker", "--docker-image", "alpine", "--config", cfgPath)
	if res.code == 0 || !strings.Contains(res.stderr, "PANIC: Failed to verify the runner.") {
		t.Errorf("unknown glrt- token: exit %d\n%s", res.code, res.stderr)
	}
}

func writeRunnerConfig(t *testing.T, path, url, token, extraRunner, dockerExtra string) {
	t.Helper()
	cfg := fmt.Sprintf(`concurrent = 2
check_interval = 0

[[runners]]
  name = "r1"
  url = %q
  id = 7
  token = %q
  executor = "docker"
%s  [runners.docker]
    image = "alpine:3.20"
%s`, url, token, extraRunner, dockerExtra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestUnregisterAndVerify(t *testing.T) {
	g := newFakeGitLab(t)
	g.addToken("legacytoken-one-1234")
	g.addToken("legacytoken-two-5678")
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	cfg := fmt.Sprintf(`concurrent = 1

[[runners]]
  name = "one"
  url = %[1]q
  token = "legacytoken-one-1234"
  executor = "docker"
  [runners.docker]
    image = "alpine"

[[runners]]
  name = "two"
  url = %[1]q
  token = "legacytoken-two-5678"
  executor = "docker"
  [runners.docker]
    image = "alpine"

[[runners]]
  name = "gone"
  url = %[1]q
  token = "legacytoken-gone-000"
  executor = "docker"
  [runners.docker]
    image = "alpine"
`, g.srv.URL)
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	res := runCLI(t, nil, "verify", "--config", cfgPath)
	if res.code == 0 || !strings.Contains(res.stderr, "Verifying runner... is alive") ||
		!strings.Contains(res.stderr, "Verifying runner... is removed") || !strings.Contains(res.stderr, "FATAL: Failed to verify runners") {
		t.Errorf("verify: exit %d\n%s", res.code, res.stderr)
	}
	res = runCLI(t, nil, "verify", "--config", cfgPath, "--delete")
	if res.code != 0 || len(runnersOf(t, decodeTOMLFile(t, cfgPath))) != 2 {
		t.Errorf("verify --delete: exit %d\n%s", res.code, res.stderr)
	}

	res = runCLI(t, nil, "unregister", "--config", cfgPath, "--name", "one")
	if res.code != 0 || !strings.Contains(res.stderr, "Unregistering runner from GitLab succeeded") {
		t.Fatalf("unregister --name: exit %d\n%s", res.code, res.stderr)
	}
	rs := runnersOf(t, decodeTOMLFile(t, cfgPath))
	if len(rs) != 1 || rs[0]["name"] != "two" {
		t.Errorf("after unregister: %v", rs)
	}
	g.mu.Lock()
	if len(g.deleted) != 1 || g.deleted[0] != "legacytoken-one-1234" {
		t.Errorf("DELETE /runners calls: %v", g.deleted)
	}
	g.mu.Unlock()

	res = runCLI(t, nil, "unregister", "--config", cfgPath, "--all-runners")
	if res.code != 0 || len(runnersOf(t, decodeTOMLFile(t, cfgPath))) != 0 {
		t.Errorf("unregister --all-runners: exit %d\n%s", res.code, res.stderr)
	}
	res = runCLI(t, nil, "unregister", "--config", cfgPath, "--name", "nobody")
	if res.code == 0 || !strings.Contains(res.stderr, "could not find a runner with the name 'nobody'") {
		t.Errorf("unregister of an unknown runner: exit %d\n%s", res.code, res.stderr)
	}
}

func TestSystemIDPersisted(t *testing.T) {
	fastLoops(t)
	g := newFakeGitLab(t)
	g.addToken("glrt-sysidtokensysid")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	writeRunnerConfig(t, cfgPath, g.srv.URL, "glrt-sysidtokensysid", "", "    host = \"unix:///nonexistent.sock\"\n")

	logs, stop := startRun(t, "--config", cfgPath)
	waitFor(t, "a job request", 5*time.Second, func() bool { return g.lastJobRequest() != nil }, logs)
	stop()

	idPath := filepath.Join(dir, ".runner_system_id")
	data, err := os.ReadFile(idPath)
	if err != nil {
		t.Fatalf("no .runner_system_id: %v", err)
	}
	id := string(data)
	if !regexp.MustCompile(`^s_[a-z0-9]{12}$`).MatchString(id) {
		t.Errorf("system ID %q does not look like s_ + 12 lowercase letters/digits", id)
	}
	if st, _ := os.Stat(idPath); st.Mode().Perm() != 0o600 {
		t.Errorf(".runner_system_id mode = %v, want 0600", st.Mode().Perm())
	}
	if got := g.lastJobRequest()["system_id"]; got != id {
		t.Errorf("jobs/request system_id = %v, want %s", got, id)
	}
	if !strings.Contains(logs.String(), "Created missing unique system ID") {
		t.Errorf("creation not logged:\n%s", logs)
	}

	// A second start reuses it.
	logs2, stop2 := startRun(t, "--config", cfgPath)
	g.mu.Lock()
	n := len(g.jobRequests)
	g.mu.Unlock()
	waitFor(t, "a second job request", 5*time.Second, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.jobRequests) > n }, logs2)
	stop2()
	if got := g.lastJobRequest()["system_id"]; got != id {
		t.Errorf("second run used system_id %v, want %s", got, id)
	}
	if strings.Contains(logs2.String(), "Created missing unique system ID") {
		t.Errorf("a new system ID was created although the file exists:\n%s", logs2)
	}
}

func TestRunWaitsForMissingConfig(t *testing.T) {
	fastLoops(t)
	g := newFakeGitLab(t)
	g.addToken("glrt-latecomerlatecomer")
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	logs, stop := startRun(t, "--config", cfgPath)
	waitFor(t, "the missing-config message", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "Config file "+cfgPath+" does not exist")
	}, logs)
	if !strings.Contains(logs.String(), "Starting multi-runner from "+cfgPath+"...") {
		t.Errorf("no start message:\n%s", logs)
	}
	writeRunnerConfig(t, cfgPath, g.srv.URL, "glrt-latecomerlatecomer", "", "    host = \"unix:///nonexistent.sock\"\n")
	waitFor(t, "a job request after the config appeared", 5*time.Second, func() bool { return g.lastJobRequest() != nil }, logs)
	if code := stop(); code != 0 {
		t.Errorf("run exited %d after SIGTERM-like stop", code)
	}
	if !strings.Contains(logs.String(), "Can exit now!") {
		t.Errorf("no shutdown message:\n%s", logs)
	}
}

func TestRunUnreachableGitLab(t *testing.T) {
	fastLoops(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	writeRunnerConfig(t, cfgPath, url, "glrt-unreachableunreach", "", "")
	logs, stop := startRun(t, "--config", cfgPath)
	waitFor(t, "an error naming the URL", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "ERROR: Cannot get jobs from GitLab at "+url)
	}, logs)
	if code := stop(); code != 0 {
		t.Errorf("run exited %d", code)
	}
	if !strings.Contains(logs.String(), "Checking for jobs... failed") || !strings.Contains(logs.String(), url+"/api/v4/jobs/request") {
		t.Errorf("request failure not logged with its URL:\n%s", logs)
	}
}

func TestTokenRotation(t *testing.T) {
	fastLoops(t)
	g := newFakeGitLab(t)
	g.addToken("glrt-expiringexpiring")
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	obtained := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	expires := time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339) // past 3/4 of its life
	writeRunnerConfig(t, cfgPath, g.srv.URL, "glrt-expiringexpiring",
		fmt.Sprintf("  token_obtained_at = %s\n  token_expires_at = %s\n", obtained, expires),
		"    host = \"unix:///nonexistent.sock\"\n    [runners.docker.tmpfs]\n      \"/tmp\" = \"rw\"\n")

	logs, stop := startRun(t, "--config", cfgPath)
	waitFor(t, "the rotated token in config.toml", 5*time.Second, func() bool {
		data, _ := os.ReadFile(cfgPath)
		return strings.Contains(string(data), "glrt-rotated")
	}, logs)
	rs := runnersOf(t, decodeTOMLFile(t, cfgPath))
	newToken := rs[0]["token"].(string)
	if !g.hasToken(newToken) || g.hasToken("glrt-expiringexpiring") {
		t.Fatalf("config holds %q, which GitLab does not know", newToken)
	}
	if exp := rs[0]["token_expires_at"].(time.Time); time.Until(exp) < 20*time.Hour {
		t.Errorf("token_expires_at not updated: %v", exp)
	}
	if rs[0]["docker"].(map[string]any)["tmpfs"].(map[string]any)["/tmp"] != "rw" {
		t.Errorf("rewriting the config lost settings: %v", rs[0])
	}
	waitFor(t, "a job request with the new token", 5*time.Second, func() bool {
		r := g.lastJobRequest()
		return r != nil && r["token"] == newToken
	}, logs)
	stop()
	out := logs.String()
	if !strings.Contains(out, "Resetting runner authentication token... succeeded") ||
		!strings.Contains(out, "Saved the new runner authentication token in "+cfgPath) {
		t.Errorf("rotation not logged:\n%s", out)
	}
	g.mu.Lock()
	if len(g.resets) != 1 || g.resets[0] != "glrt-expiringexpiring" {
		t.Errorf("reset calls: %v (the new token must not be reset again at once)", g.resets)
	}
	g.mu.Unlock()
	for _, tok := range []string{"glrt-expiringexpiring", newToken} {
		if strings.Contains(out, tok) {
			t.Errorf("token %s printed in full:\n%s", tok, out)
		}
	}
}

func TestTokenRotationSaveFails(t *testing.T) {
	fastLoops(t)
	old := saveFile
	saveFile = func(string, []byte) error {
		return errors.New("saving the file: open config.toml: read-only file system")
	}
	t.Cleanup(func() { saveFile = old })

	g := newFakeGitLab(t)
	g.addToken("glrt-readonlyreadonly")
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	writeRunnerConfig(t, cfgPath, g.srv.URL, "glrt-readonlyreadonly",
		"  token_obtained_at = 2020-01-01T00:00:00Z\n  token_expires_at = 2020-01-02T00:00:00Z\n", "    host = \"unix:///nonexistent.sock\"\n")
	before, _ := os.ReadFile(cfgPath)

	logs, stop := startRun(t, "--config", cfgPath)
	waitFor(t, "Failed to save config", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "ERROR: Failed to save config")
	}, logs)
	// The new token is used from memory.
	waitFor(t, "a job request with the rotated token", 5*time.Second, func() bool {
		r := g.lastJobRequest()
		tok, _ := r["token"].(string)
		return strings.HasPrefix(tok, "glrt-rotated")
	}, logs)
	stop()
	after, _ := os.ReadFile(cfgPath)
	if !bytes.Equal(before, after) {
		t.Errorf("config changed although saving failed")
	}
}

func TestRunJob(t *testing.T) {
	fastLoops(t)
	g := newFakeGitLab(t)
	d := newFakeDocker(t)
	token := "glrt-jobrunnerjobrunner"
	g.addToken(token)
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	writeRunnerConfig(t, cfgPath, g.srv.URL, token, "",
		fmt.Sprintf("    host = \"unix://%s\"\n    privileged = true\n    network_mode = \"host\"\n    volumes = [\"/cache\", \"/srv/data:/data:ro\"]\n", d.sock))

	ok := g.queueJob(12, []string{"echo hello from the job", "echo \"secret is $MY_SECRET\"", "printf 'no newline at end'"},
		map[string]any{"key": "MY_SECRET", "value": "hunter2hunter2", "masked": true})
	ok.force416 = true
	bad := g.queueJob(13, []string{"echo start", "(exit 3)", "echo never printed"})

	logs, stop := startRun(t, "--config", cfgPath)
	for _, j := range []*fakeJob{ok, bad} {
		select {
		case <-j.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("job %v did not finish; log:\n%s", j.resp["id"], logs)
		}
	}
	stop()

	g.mu.Lock()
	defer g.mu.Unlock()
	trace := string(ok.trace)
	if ok.state != "success" {
		t.Errorf("job 12 state %q, want success; trace:\n%s", ok.state, trace)
	}
	if want := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(ok.trace)); ok.checksum != want || ok.bytesize != len(ok.trace) {
		t.Errorf("final update checksum %s/%d, but GitLab's trace is %s/%d (the 416 resend went wrong?)", ok.checksum, ok.bytesize, want, len(ok.trace))
	}
	for _, want := range []string{
		"Running with gitlab-runner 19.4.0 (testdouble)",
		"  on r1 jobrunne, system ID: s_",
		`Preparing the "docker" executor`,
		"Using Docker executor with image alpine:3.20 ...",
		"Skipping Git repository setup",
		"$ echo hello from the job",
		"hello from the job\n",
		"secret is [MASKED]",
		"no newline at end",
		"Job succeeded",
	} {
		if !strings.Contains(trace, want) {
			t.Errorf("trace of job 12 lacks %q:\n%s", want, trace)
		}
	}
	if strings.Contains(trace, "hunter2hunter2") {
		t.Errorf("masked variable leaked into the trace")
	}

	if bad.state != "failed" || bad.reason != "script_failure" || bad.exitCode != 3 {
		t.Errorf("job 13: state=%q reason=%q exit=%d, want failed/script_failure/3", bad.state, bad.reason, bad.exitCode)
	}
	btrace := string(bad.trace)
	if !strings.Contains(btrace, "ERROR: Job failed: exit code 3") || strings.Contains(btrace, "never printed") {
		t.Errorf("trace of job 13:\n%s", btrace)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	wantVolume := fmt.Sprintf("runner-jobrunne-project-42-concurrent-0-cache-%x", md5.Sum([]byte("/cache")))
	if !slices.Contains(d.volumes, wantVolume) {
		t.Errorf("volumes created: %v, want %s", d.volumes, wantVolume)
	}
	if len(d.containers) != 2 {
		t.Fatalf("want 2 containers, got %d", len(d.containers))
	}
	c := d.containers[0]
	if c.spec.Labels["com.gitlab.gitlab-runner.job.id"] != "12" {
		c = d.containers[1]
	}
	hc := c.spec.HostConfig
	if !hc.Privileged || hc.NetworkMode != "host" || fmt.Sprint(hc.Binds) != fmt.Sprintf("[%s:/cache /srv/data:/data:ro]", wantVolume) {
		t.Errorf("HostConfig: %+v", hc)
	}
	if c.spec.Image != "sha256:alpineid" || c.spec.WorkingDir != "/builds/group/proj" || c.spec.Cmd[0] != "sh" {
		t.Errorf("container spec: image=%s workdir=%s cmd=%v", c.spec.Image, c.spec.WorkingDir, c.spec.Cmd)
	}
	env := strings.Join(c.spec.Env, "\n")
	for _, want := range []string{"MY_SECRET=hunter2hunter2", "GIT_STRATEGY=none", "CI_PROJECT_DIR=/builds/group/proj", "CI_RUNNER_VERSION=19.4.0"} {
		if !strings.Contains(env, want) {
			t.Errorf("container env lacks %s", want)
		}
	}
	for _, c := range d.containers {
		if !c.removed {
			t.Errorf("container %s was not removed", c.name)
		}
	}
	if len(d.pulls) != 0 {
		t.Errorf("a present image was pulled: %v", d.pulls)
	}

	out := logs.String()
	if !regexp.MustCompile(`Checking for jobs\.\.\. received\s+ correlation_id=\S+ job=12 repo_url=http://127\.0\.0\.1/group/proj\.git runner=jobrunne`).MatchString(out) {
		t.Errorf("job reception not logged in gitlab-runner style:\n%s", out)
	}
	if strings.Contains(out, token) || strings.Contains(out, "glcbt-jobtoken-12-secret") {
		t.Errorf("a token was printed in full:\n%s", out)
	}
	if testing.Verbose() {
		t.Logf("runner log:\n%s", out)
	}
}

func TestRunHonoursConcurrentAndLimit(t *testing.T) {
	for _, tc := range []struct {
		name        string
		concurrent  int
		limit       string
		wantMaxJobs int
	}{
		{"concurrent=1", 1, "", 1},
		{"limit=1 within concurrent=3", 3, "  limit = 1\n", 1},
		{"concurrent=3", 3, "", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fastLoops(t)
			g := newFakeGitLab(t)
			d := newFakeDocker(t)
			g.addToken("glrt-concurrencyconcur")
			cfgPath := filepath.Join(t.TempDir(), "config.toml")
			writeRunnerConfig(t, cfgPath, g.srv.URL, "glrt-concurrencyconcur", tc.limit, fmt.Sprintf("    host = \"unix://%s\"\n", d.sock))
			data, _ := os.ReadFile(cfgPath)
			os.WriteFile(cfgPath, bytes.Replace(data, []byte("concurrent = 2"), []byte(fmt.Sprintf("concurrent = %d", tc.concurrent)), 1), 0o600)
			var jobs []*fakeJob
			for i := 0; i < 3; i++ {
				jobs = append(jobs, g.queueJob(50+i, []string{"sleep 0.3"}))
			}
			logs, stop := startRun(t, "--config", cfgPath)
			for _, j := range jobs {
				select {
				case <-j.done:
				case <-time.After(20 * time.Second):
					t.Fatalf("job did not finish; log:\n%s", logs)
				}
			}
			stop()
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.maxRunning != tc.wantMaxJobs {
				t.Errorf("at most %d jobs ran at once, want %d", d.maxRunning, tc.wantMaxJobs)
			}
		})
	}
}

func TestRunJobMissingHelperImage(t *testing.T) {
	fastLoops(t)
	g := newFakeGitLab(t)
	d := newFakeDocker(t)
	g.addToken("glrt-helperlesshelper")
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	writeRunnerConfig(t, cfgPath, g.srv.URL, "glrt-helperlesshelper", "",
		fmt.Sprintf("    host = \"unix://%s\"\n    volumes = [\"/cache\"]\n    helper_image = \"registry.local/helper:x86_64-abc\"\n    pull_policy = [\"if-not-present\"]\n", d.sock))
	j := g.queueJob(21, []string{"echo should not run"})
	logs, stop := startRun(t, "--config", cfgPath)
	select {
	case <-j.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("job did not finish; log:\n%s", logs)
	}
	stop()
	g.mu.Lock()
	trace := string(j.trace)
	state := j.state
	g.mu.Unlock()
	if state != "failed" {
		t.Errorf("state %q, want failed", state)
	}
	for _, want := range []string{
		"Using helper image:  registry.local/helper:x86_64-abc  (overridden, default would be ",
		"Pulling docker image registry.local/helper:x86_64-abc ...",
		`ERROR: Job failed: adding cache volume: set volume permissions: create permission container for volume "runner-helperle-project-42-concurrent-0-cache-`,
		"No such image: registry.local/helper:x86_64-abc",
	} {
		if !strings.Contains(trace, want) {
			t.Errorf("trace lacks %q:\n%s", want, trace)
		}
	}
	if strings.Contains(trace, "should not run") && strings.Contains(trace, "$ echo") {
		t.Errorf("the script ran although preparation failed")
	}
}

func TestConfigWriterRoundTrip(t *testing.T) {
	src := `concurrent = 3
weird = 1.5
when = 1979-05-27T07:32:00
list = [1, 2, 3]

[session_server]
  session_timeout = 1800

[[runners]]
  name = "a \"quoted\" name"
  url = "https://x"
  token = "t"
  executor = "docker"
  environment = ["A=1", "B=two words"]
  [runners.docker]
    image = "alpine"
    pull_policy = "if-not-present"
    [[runners.docker.services]]
      name = "postgres"
`
	cf, err := parseConfig("x", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	out := encodeTOML(cf.tree)
	again := map[string]any{}
	if _, err := toml.Decode(string(out), &again); err != nil {
		t.Fatalf("re-encoded config is not valid TOML: %v\n%s", err, out)
	}
	orig := map[string]any{}
	toml.Decode(src, &orig)
	if fmt.Sprint(orig) != fmt.Sprint(again) {
		t.Errorf("round trip changed the config:\n%v\n%v\n%s", orig, again, out)
	}
	if got := []string(cf.cfg.Runners[0].Docker.PullPolicy); len(got) != 1 || got[0] != "if-not-present" {
		t.Errorf("pull_policy string form not read: %v", got)
	}
	if len(cf.unsupported) != 1 || cf.unsupported[0] != "runners.docker.services" {
		t.Errorf("unsupported settings: %v", cf.unsupported)
	}
}

func TestShortToken(t *testing.T) {
	for in, want := range map[string]string{
		"glrt-abcdefghijkl": "abcdefgh", "glrt-t1_abcdefghij": "abcdefgh", "GR1348941abcdefghij": "abcdefgh",
		"plain123456789": "plain123", "short": "short",
	} {
		if got := shortToken(in); got != want {
			t.Errorf("shortToken(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRunJobAgainstPodman runs a job through a real Docker-compatible socket.
// It is skipped unless RUNNER_DOUBLE_TEST_DOCKER_HOST (unix://...) and
// RUNNER_DOUBLE_TEST_IMAGE (an image present there, with sh) are set, e.g.
//
//	podman system service --time=0 unix:///tmp/podman.sock &
//	RUNNER_DOUBLE_TEST_DOCKER_HOST=unix:///tmp/podman.sock RUNNER_DOUBLE_TEST_IMAGE=debian:trixie go test -run Podman
func TestRunJobAgainstPodman(t *testing.T) {
	host, image := os.Getenv("RUNNER_DOUBLE_TEST_DOCKER_HOST"), os.Getenv("RUNNER_DOUBLE_TEST_IMAGE")
	if host == "" || image == "" {
		t.Skip("set RUNNER_DOUBLE_TEST_DOCKER_HOST and RUNNER_DOUBLE_TEST_IMAGE to run a job through a real podman socket")
	}
	fastLoops(t)
	g := newFakeGitLab(t)
	g.addToken("glrt-podmanpodmanpodman")
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	writeRunnerConfig(t, cfgPath, g.srv.URL, "glrt-podmanpodmanpodman", "",
		fmt.Sprintf("    host = %q\n    network_mode = \"host\"\n    pull_policy = [\"never\"]\n    volumes = [\"/cache\"]\n", host))
	ok := g.queueJob(31, []string{"echo from podman", "echo data > /cache/probe && cat /cache/probe", "id -u"})
	ok.resp["image"] = map[string]any{"name": image}
	bad := g.queueJob(32, []string{"echo failing", "false", "echo unreachable"})
	bad.resp["image"] = map[string]any{"name": image}
	logs, stop := startRun(t, "--config", cfgPath)
	for _, j := range []*fakeJob{ok, bad} {
		select {
		case <-j.done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("job %v did not finish; log:\n%s", j.resp["id"], logs)
		}
	}
	stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	if ok.state != "success" || !strings.Contains(string(ok.trace), "from podman\n") || !strings.Contains(string(ok.trace), "data\n") {
		t.Errorf("job 31: state %s, trace:\n%s", ok.state, ok.trace)
	}
	if bad.state != "failed" || bad.exitCode != 1 || strings.Contains(string(bad.trace), "unreachable\n") {
		t.Errorf("job 32: state %s exit %d, trace:\n%s", bad.state, bad.exitCode, bad.trace)
	}
	t.Logf("trace of job 31:\n%s", ok.trace)
}

func TestRegisterInteractive(t *testing.T) {
	g := newFakeGitLab(t)
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	answers := g.srv.URL + "\nGR1348941-reg-token\nasked-name\n\n\ndocker\nalpine:3.20\n"
	var out, errb syncBuffer
	a := newApp(strings.NewReader(answers), &out, &errb, func(string) string { return "" })
	if code := a.main([]string{"register", "--config", cfgPath}); code != 0 {
		t.Fatalf("interactive register failed (%d):\n%s", code, errb.String())
	}
	for _, prompt := range []string{"Enter the GitLab instance URL (for example, https://gitlab.com/):",
		"Enter the registration token:", "Enter an executor: docker:", "Enter the default Docker image (for example, ruby:2.7):"} {
		if !strings.Contains(errb.String(), prompt) {
			t.Errorf("prompt %q missing:\n%s", prompt, errb.String())
		}
	}
	rs := runnersOf(t, decodeTOMLFile(t, cfgPath))
	if len(rs) != 1 || rs[0]["name"] != "asked-name" || rs[0]["docker"].(map[string]any)["image"] != "alpine:3.20" {
		t.Errorf("unexpected runner: %v", rs)
	}
	// Without answers (stdin at its end) it says what to do, like the real one.
	res := runCLI(t, nil, "register", "--config", cfgPath)
	if res.code == 0 || !strings.Contains(res.stderr, "Unexpected EOF. Did you mean to use --non-interactive?") {
		t.Errorf("register with no input: exit %d\n%s", res.code, res.stderr)
	}
}
