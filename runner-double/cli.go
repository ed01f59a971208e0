package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ---- flags ----
//
// gitlab-runner's commands take flags like Go's flag package (-x, --x, --x=v;
// a bool flag takes no separate value) and read most of them from
// environment variables too; a flag on the command line wins over the
// environment.

type flagDef struct {
	names  []string
	envs   []string
	usage  string
	isBool bool
	set    func(string) error
	reset  func() // slices: forget environment values when the flag is given
	given  bool
}

type flagSet struct {
	command string
	defs    []*flagDef
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func (fs *flagSet) add(names, envs, usage string, isBool bool, set func(string) error, reset func()) {
	fs.defs = append(fs.defs, &flagDef{names: split(names), envs: split(envs), usage: usage, isBool: isBool, set: set, reset: reset})
}

func (fs *flagSet) str(p *string, names, envs, usage string) {
	fs.add(names, envs, usage, false, func(v string) error { *p = v; return nil }, nil)
}

func (fs *flagSet) boolean(p *bool, names, envs, usage string) {
	fs.add(names, envs, usage, true, func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("invalid boolean value %q", v)
		}
		*p = b
		return nil
	}, nil)
}

func (fs *flagSet) integer(p *int, names, envs, usage string) {
	fs.add(names, envs, usage, false, func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("invalid integer value %q", v)
		}
		*p = n
		return nil
	}, nil)
}

func (fs *flagSet) int64(p *int64, names, envs, usage string) {
	fs.add(names, envs, usage, false, func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid integer value %q", v)
		}
		*p = n
		return nil
	}, nil)
}

// slice flags may be repeated; from the environment they are comma-separated.
func (fs *flagSet) slice(p *[]string, names, envs, usage string) {
	fs.add(names, envs, usage, false, func(v string) error { *p = append(*p, v); return nil }, func() { *p = nil })
}

var errHelp = errors.New("help requested")

func (fs *flagSet) lookup(name string) *flagDef {
	for _, d := range fs.defs {
		for _, n := range d.names {
			if n == name {
				return d
			}
		}
	}
	return nil
}

// parse applies environment values, then the command line. It stops at the
// first argument that is not a flag and returns the rest.
func (fs *flagSet) parse(args []string, getenv func(string) string) ([]string, error) {
	for _, d := range fs.defs {
		for _, env := range d.envs {
			v := getenv(env)
			if v == "" {
				continue
			}
			values := []string{v}
			if d.reset != nil {
				values = nil
				for _, part := range strings.Split(v, ",") {
					if part = strings.TrimSpace(part); part != "" {
						values = append(values, part)
					}
				}
			}
			for _, val := range values {
				if err := d.set(val); err != nil {
					return nil, fmt.Errorf("%v in environment variable %s (for --%s)", err, env, d.names[0])
				}
			}
			break
		}
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return args[i+1:], nil
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			return args[i:], nil
		}
		name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
		if name == "h" || name == "help" {
			return nil, errHelp
		}
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		d := fs.lookup(name)
		if d == nil {
			return nil, fmt.Errorf("flag provided but not defined: -%s", name)
		}
		if !hasValue {
			if d.isBool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("flag needs an argument: -%s", name)
				}
				i++
				value = args[i]
			}
		}
		if d.reset != nil && !d.given {
			d.reset()
		}
		d.given = true
		if err := d.set(value); err != nil {
			return nil, fmt.Errorf("%v for flag -%s", err, name)
		}
	}
	return nil, nil
}

func (fs *flagSet) usage(w io.Writer) {
	for _, d := range fs.defs {
		var names []string
		for _, n := range d.names {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			if d.isBool {
				names = append(names, dash+n)
			} else {
				names = append(names, dash+n+" value")
			}
		}
		env := ""
		if len(d.envs) > 0 {
			env = " [$" + strings.Join(d.envs, ", $") + "]"
		}
		fmt.Fprintf(w, "   %-44s %s%s\n", strings.Join(names, ", "), d.usage, env)
	}
}

// ---- application ----

type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	log    *logger

	// Tests replace these to stop `run` and to feed it signals.
	ctx     context.Context
	signals chan os.Signal
}

func newApp(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *app {
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, log: newLogger(stderr), ctx: context.Background()}
}

var commands = []struct{ name, usage string }{
	{"list", "List all configured runners"},
	{"register", "register a new runner"},
	{"run", "run multi runner service"},
	{"unregister", "unregister specific runner"},
	{"verify", "verify all registered runners"},
}

func (a *app) help(w io.Writer, global *flagSet) {
	fmt.Fprintf(w, "NAME:\n   gitlab-runner - a GitLab Runner (pipglr-builder's protocol test double)\n\n")
	fmt.Fprintf(w, "USAGE:\n   gitlab-runner [global options] command [command options] [arguments...]\n\n")
	fmt.Fprintf(w, "VERSION:\n   %s (%s)\n\nCOMMANDS:\n", version, revision)
	for _, c := range commands {
		fmt.Fprintf(w, "   %-12s %s\n", c.name, c.usage)
	}
	fmt.Fprintf(w, "   %-12s %s\n\nGLOBAL OPTIONS:\n", "help, h", "Shows a list of commands or help for one command")
	global.usage(w)
	fmt.Fprintf(w, "   %-44s %s\n", "--help, -h", "show help")
}

func (a *app) printVersion() {
	fmt.Fprintf(a.stdout, "Version:      %s\n", version)
	fmt.Fprintf(a.stdout, "Git revision: %s\n", revision)
	fmt.Fprintf(a.stdout, "Git branch:   %s\n", branch)
	fmt.Fprintf(a.stdout, "GO version:   %s\n", runtime.Version())
	fmt.Fprintf(a.stdout, "Built:        %s\n", built)
	fmt.Fprintf(a.stdout, "OS/Arch:      %s/%s\n", runtime.GOOS, runtime.GOARCH)
	fmt.Fprintln(a.stdout, "Note: this is pipglr-builder's protocol test double of gitlab-runner, not the real program")
}

// main runs one command line and returns the exit code.
func (a *app) main(args []string) (code int) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(exitRequest); ok {
				code = e.code
				return
			}
			panic(r)
		}
	}()

	var debug bool
	var logLevel, logFormat, cpuProfile string
	global := &flagSet{}
	global.boolean(&debug, "debug", "RUNNER_DEBUG", "debug mode")
	global.str(&logFormat, "log-format", "LOG_FORMAT", "Choose log format (options: runner, json)")
	global.str(&logLevel, "log-level,l", "LOG_LEVEL", "Log level (options: debug, info, warn, error, fatal, panic)")
	global.str(&cpuProfile, "cpuprofile", "CPU_PROFILE", "write cpu profile to file (accepted and ignored by the test double)")

	var showVersion bool
	global.boolean(&showVersion, "version,v", "", "print the version")

	rest, err := global.parse(args, a.getenv)
	if err == nil && showVersion {
		a.printVersion()
		return 0
	}
	if errors.Is(err, errHelp) || (err == nil && len(rest) == 0) {
		a.help(a.stdout, global)
		return 0
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "Incorrect Usage. %v\n\n", err)
		a.help(a.stderr, global)
		return 1
	}
	switch {
	case debug:
		a.log.setLevel(levelDebug)
		a.log.levelSetByCLI = true
	case logLevel != "":
		lv, err := parseLevel(logLevel)
		if err != nil {
			a.log.entry().fatal(err)
		}
		a.log.setLevel(lv)
		a.log.levelSetByCLI = true
	}
	switch logFormat {
	case "", "runner":
	case "json":
		a.log.json = true
	default:
		a.log.with("log-format", logFormat).warn("Log format not supported by the gitlab-runner test double; using \"runner\"")
	}

	cmd, cmdArgs := rest[0], rest[1:]
	if cmd != "help" && cmd != "h" {
		a.log.with("arch", runtime.GOARCH).with("os", runtime.GOOS).with("pid", os.Getpid()).
			with("revision", revision).with("version", version).info("Runtime platform")
	}
	switch cmd {
	case "register":
		return a.cmdRegister(cmdArgs)
	case "unregister":
		return a.cmdUnregister(cmdArgs)
	case "verify":
		return a.cmdVerify(cmdArgs)
	case "run":
		return a.cmdRun(cmdArgs)
	case "list":
		return a.cmdList(cmdArgs)
	case "help", "h":
		a.help(a.stdout, global)
		return 0
	}
	a.log.entry().fatal("Command", cmd, "not found.")
	return 1
}

// parseCommandFlags handles --help and usage errors of a command.
func (a *app) parseCommandFlags(fs *flagSet, args []string) (bool, int) {
	_, err := fs.parse(args, a.getenv)
	if errors.Is(err, errHelp) {
		fmt.Fprintf(a.stdout, "NAME:\n   gitlab-runner %s\n\nOPTIONS:\n", fs.command)
		fs.usage(a.stdout)
		return false, 0
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "Incorrect Usage: %v\n\nOPTIONS:\n", err)
		fs.usage(a.stderr)
		return false, 1
	}
	return true, 0
}

// userModeWarning is the real runner's note on system vs user mode.
func (a *app) userModeWarning(withRun bool) {
	if os.Getuid() == 0 {
		a.log.entry().info("Running in system-mode.")
	} else {
		a.log.entry().warn("Running in user-mode.")
		if withRun {
			a.log.entry().warn("The user-mode requires you to manually start builds processing:")
			a.log.entry().warn("$ gitlab-runner run")
		}
		a.log.entry().warn("Use sudo for system-mode:")
		a.log.entry().warn("$ sudo gitlab-runner...")
	}
	a.log.entry().info("")
}

// ---- register ----

type registerOptions struct {
	configFile, templateConfig                                    string
	nonInteractive, leaveRunner                                   bool
	url, registrationToken, token, name                           string
	tagList, accessLevel, maintenanceNote                         string
	runUntagged, locked, paused                                   bool
	maximumTimeout, limit, requestConcurrency, outputLimit        int
	tlsCAFile, tlsCertFile, tlsKeyFile                            string
	executor, buildsDir, cacheDir, shell                          string
	env                                                           []string
	dockerHost, dockerImage, dockerHelperImage, dockerNetworkMode string
	dockerCacheDir, dockerUser                                    string
	dockerPrivileged, dockerDisableCache, dockerTLSVerify         bool
	dockerVolumes, dockerPullPolicy, dockerAllowedPullPolicies    []string
	dockerDNS, dockerCapAdd, dockerCapDrop, dockerSecurityOpt     []string
	dockerDevices, dockerExtraHosts                               []string
	dockerShmSize                                                 int64
}

func registerFlags(o *registerOptions) *flagSet {
	fs := &flagSet{command: "register - register a new runner"}
	fs.str(&o.configFile, "config,c", "CONFIG_FILE", "Config file")
	fs.str(&o.templateConfig, "template-config", "TEMPLATE_CONFIG_FILE", "Path to the configuration template file")
	fs.str(&o.tagList, "tag-list", "RUNNER_TAG_LIST", "Tag list")
	fs.boolean(&o.nonInteractive, "non-interactive,n", "REGISTER_NON_INTERACTIVE", "Run registration unattended")
	fs.boolean(&o.leaveRunner, "leave-runner", "REGISTER_LEAVE_RUNNER", "Don't remove runner if registration fails")
	fs.str(&o.registrationToken, "registration-token,r", "REGISTRATION_TOKEN", "Runner's registration token (deprecated, use --token)")
	fs.boolean(&o.runUntagged, "run-untagged", "REGISTER_RUN_UNTAGGED", "Register to run untagged builds; defaults to 'true' when 'tag-list' is empty")
	fs.boolean(&o.locked, "locked", "REGISTER_LOCKED", "Lock Runner for current project, defaults to 'true'")
	fs.str(&o.accessLevel, "access-level", "REGISTER_ACCESS_LEVEL", "Set access_level of the runner to not_protected or ref_protected; defaults to not_protected")
	fs.integer(&o.maximumTimeout, "maximum-timeout", "REGISTER_MAXIMUM_TIMEOUT", "What is the maximum timeout (in seconds) that will be set for job when using this Runner")
	fs.boolean(&o.paused, "paused", "REGISTER_PAUSED", "Set Runner to be paused, defaults to 'false'")
	fs.str(&o.maintenanceNote, "maintenance-note", "REGISTER_MAINTENANCE_NOTE", "Runner's maintenance note")
	fs.str(&o.name, "name,description", "RUNNER_NAME", "Runner name")
	fs.integer(&o.limit, "limit", "RUNNER_LIMIT", "Maximum number of builds processed by this runner")
	fs.integer(&o.outputLimit, "output-limit", "RUNNER_OUTPUT_LIMIT", "Maximum build trace size in kilobytes")
	fs.integer(&o.requestConcurrency, "request-concurrency", "RUNNER_REQUEST_CONCURRENCY", "Maximum concurrency for job requests")
	fs.str(&o.url, "url,u", "CI_SERVER_URL", "GitLab instance URL")
	fs.str(&o.token, "token,t", "CI_SERVER_TOKEN", "Runner token (a glrt- runner authentication token)")
	fs.str(&o.tlsCAFile, "tls-ca-file", "CI_SERVER_TLS_CA_FILE", "File containing the certificates to verify the peer when using HTTPS")
	fs.str(&o.tlsCertFile, "tls-cert-file", "CI_SERVER_TLS_CERT_FILE", "File containing certificate for TLS client auth when using HTTPS")
	fs.str(&o.tlsKeyFile, "tls-key-file", "CI_SERVER_TLS_KEY_FILE", "File containing private key for TLS client auth when using HTTPS")
	fs.str(&o.executor, "executor", "RUNNER_EXECUTOR", "Select executor (the test double supports only docker)")
	fs.str(&o.buildsDir, "builds-dir", "RUNNER_BUILDS_DIR", "Directory where builds are stored")
	fs.str(&o.cacheDir, "cache-dir", "RUNNER_CACHE_DIR", "Directory where build cache is stored")
	fs.slice(&o.env, "env", "RUNNER_ENV", "Custom environment variables injected to build environment")
	fs.str(&o.shell, "shell", "RUNNER_SHELL", "Select bash, sh, cmd, pwsh or powershell")
	fs.str(&o.dockerHost, "docker-host", "DOCKER_HOST", "Docker daemon address")
	fs.boolean(&o.dockerTLSVerify, "docker-tlsverify", "DOCKER_TLS_VERIFY", "Use TLS and verify the remote")
	fs.str(&o.dockerImage, "docker-image", "DOCKER_IMAGE", "Docker image to be used")
	fs.boolean(&o.dockerPrivileged, "docker-privileged", "DOCKER_PRIVILEGED", "Give extended privileges to container")
	fs.str(&o.dockerUser, "docker-user", "DOCKER_USER", "Run all commands in the container as the specified user.")
	fs.slice(&o.dockerDNS, "docker-dns", "DOCKER_DNS", "A list of DNS servers for the container to use")
	fs.slice(&o.dockerCapAdd, "docker-cap-add", "DOCKER_CAP_ADD", "Add Linux capabilities")
	fs.slice(&o.dockerCapDrop, "docker-cap-drop", "DOCKER_CAP_DROP", "Drop Linux capabilities")
	fs.slice(&o.dockerSecurityOpt, "docker-security-opt", "DOCKER_SECURITY_OPT", "Security Options")
	fs.slice(&o.dockerDevices, "docker-devices", "DOCKER_DEVICES", "Add a host device to the container")
	fs.boolean(&o.dockerDisableCache, "docker-disable-cache", "DOCKER_DISABLE_CACHE", "Disable all container caching")
	fs.slice(&o.dockerVolumes, "docker-volumes", "DOCKER_VOLUMES", "Bind-mount a volume and create it if it doesn't exist prior to mounting. Can be specified multiple times once per mountpoint, e.g. --docker-volumes 'test0:/test0' --docker-volumes 'test1:/test1'")
	fs.str(&o.dockerCacheDir, "docker-cache-dir", "DOCKER_CACHE_DIR", "Directory where to store caches")
	fs.slice(&o.dockerExtraHosts, "docker-extra-hosts", "DOCKER_EXTRA_HOSTS", "Add a custom host-to-IP mapping")
	fs.str(&o.dockerNetworkMode, "docker-network-mode", "DOCKER_NETWORK_MODE", "Add container to a custom network")
	fs.slice(&o.dockerAllowedPullPolicies, "docker-allowed-pull-policies", "DOCKER_ALLOWED_PULL_POLICIES", "Allowed image pull policies")
	fs.slice(&o.dockerPullPolicy, "docker-pull-policy", "DOCKER_PULL_POLICY", "Image pull policy: never, if-not-present, always")
	fs.int64(&o.dockerShmSize, "docker-shm-size", "DOCKER_SHM_SIZE", "Shared memory size for docker images (in bytes)")
	fs.str(&o.dockerHelperImage, "docker-helper-image", "DOCKER_HELPER_IMAGE", "[ADVANCED] Override the default helper image used to clone repos and upload artifacts")
	return fs
}

type registration struct {
	a    *app
	o    *registerOptions
	in   *bufio.Reader
	cf   *configFile
	gl   *gitlabClient
	sid  string
	log  *entry
	id   int64
	tok  string
	exp  time.Time
	done bool // registered in GitLab: undo on failure
}

// ask returns the value of a setting, prompting for it unless the
// registration is non-interactive (then an empty required value is fatal).
func (r *registration) ask(key, prompt, current string, allowEmpty bool) string {
	current = strings.TrimSpace(current)
	if r.o.nonInteractive {
		if current == "" && !allowEmpty {
			r.fail("The", key, "needs to be entered")
		}
		return current
	}
	for {
		fmt.Fprintln(r.a.stderr, prompt)
		if current != "" {
			fmt.Fprintf(r.a.stderr, "[%s]: ", current)
		}
		line, err := r.in.ReadString('\n')
		if err != nil && line == "" {
			r.fail("Unexpected EOF. Did you mean to use --non-interactive?")
		}
		if v := strings.TrimSpace(line); v != "" {
			return v
		}
		if allowEmpty || current != "" {
			return current
		}
	}
}

// fail ends the registration like the real one (PANIC, exit 1), first
// removing a runner it already created in GitLab unless --leave-runner.
func (r *registration) fail(args ...any) {
	if r.done && !r.o.leaveRunner {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r.gl.unregisterRunner(ctx, r.a.log.with("runner", shortToken(r.tok)), r.tok, r.sid)
		cancel()
	}
	r.a.log.entry().panicExit(args...)
}

func (a *app) cmdRegister(args []string) int {
	o := &registerOptions{locked: true}
	fs := registerFlags(o)
	if ok, code := a.parseCommandFlags(fs, args); !ok {
		return code
	}
	if o.configFile == "" {
		o.configFile = defaultConfigFile()
	}
	if o.name == "" {
		o.name, _ = os.Hostname()
	}
	a.userModeWarning(true)
	if o.accessLevel != "" && o.accessLevel != "not_protected" && o.accessLevel != "ref_protected" {
		a.log.entry().panicExit("Given access-level is not valid. Refer to gitlab-runner register -h for the correct options.")
	}

	r := &registration{a: a, o: o, in: bufio.NewReader(a.stdin)}
	cf, err := loadConfigFile(o.configFile)
	if err != nil {
		a.log.entry().panicExit(fmt.Sprintf("Couldn't read the config file %s: %v", o.configFile, err))
	}
	r.cf = cf
	r.sid = loadSystemID(o.configFile, a.log)

	var template map[string]any
	if o.templateConfig != "" {
		a.log.entry().infof("Merging configuration from template file %q", o.templateConfig)
		template, err = loadTemplate(o.templateConfig)
		if err != nil {
			a.log.entry().withError(err).fatal("Could not handle configuration merging from template file")
		}
	}

	r.obtainToken()
	o.executor = r.ask("executor", "Enter an executor: docker:", o.executor, true)
	if o.executor != "docker" {
		r.fail(fmt.Sprintf("Invalid executor specified: %q (the gitlab-runner test double supports only the docker executor)", o.executor))
	}
	o.dockerImage = r.ask("docker-image", "Enter the default Docker image (for example, ruby:2.7):", o.dockerImage, false)

	entry := r.runnerTable()
	if template != nil {
		mergeMissing(entry, template)
	}
	cf.ensureTopLevelDefaults()
	cf.setRunnerTables(append(cf.runnerTables(), entry))
	if err := cf.save(); err != nil {
		r.fail(fmt.Sprintf("Couldn't save the new runner to %s: %v. Check that the file (and its directory) "+
			"exists and is writable by this user; the runner was removed from GitLab again (use --leave-runner to keep it)", o.configFile, err))
	}
	if err := cf.reparse(); err == nil && cf.cfg.concurrent() < o.limit {
		a.log.entry().warnf("The specified runner job concurrency limit (%d) is larger than current global concurrency limit (%d). "+
			"The global concurrent limit will not be increased and takes precedence.", o.limit, cf.cfg.concurrent())
	}
	a.log.entry().info("Runner registered successfully. Feel free to start it, but if it's running already the config should be automatically reloaded!")
	a.log.entry().infof("Configuration (with the authentication token) was saved in %q", o.configFile)
	return 0
}

// obtainToken gets the runner's token from GitLab: by registering with a
// registration token, or by verifying a runner authentication token (glrt-).
func (r *registration) obtainToken() {
	o, a := r.o, r.a
	o.url = r.ask("url", "Enter the GitLab instance URL (for example, https://gitlab.com/):", o.url, false)
	gl, err := newGitlabClient(o.url, o.tlsCAFile)
	if err != nil {
		a.log.entry().panicExit(err)
	}
	r.gl = gl
	ctx, cancel := context.WithTimeout(a.ctx, 60*time.Second)
	defer cancel()

	token := o.token
	switch {
	case token != "" && !strings.HasPrefix(token, "glrt-") && o.registrationToken != "":
		// Legacy: an existing runner token given with -t is only checked.
		a.log.entry().info("Token specified trying to verify runner...")
		a.log.entry().warn("If you want to register use the '-r' instead of '-t'.")
		if res, _ := gl.verifyRunner(ctx, a.log.with("runner", shortToken(token)), token, r.sid, "docker"); res == nil {
			r.fail("Failed to verify the runner. You may be having network problems.")
		}
		r.tok = token
		return
	case token != "" && !strings.HasPrefix(token, "glrt-"):
		a.log.entry().info("The token given with --token / CI_SERVER_TOKEN is not a runner authentication token (glrt-...); using it as the registration token")
		o.registrationToken, token = token, ""
	}
	if token == "" {
		token = r.ask("registration-token", "Enter the registration token:", o.registrationToken, false)
	}
	r.tok = token
	log := a.log.with("runner", shortToken(token))

	if strings.HasPrefix(token, "glrt-") {
		r.checkServerSideArgs()
		for _, rt := range r.cf.runnerTables() {
			if t, _ := rt["token"].(string); t == token {
				a.log.entry().warn("A runner with this system ID and token has already been registered.")
			}
		}
		res, _ := gl.verifyRunner(ctx, log, token, r.sid, "docker")
		if res == nil || res.ID == 0 {
			r.fail("Failed to verify the runner.")
		}
		r.id, r.exp, r.done = res.ID, res.TokenExpiresAt, true
		o.name = r.ask("name", "Enter a name for the runner. This is stored only in the local config.toml file:", o.name, false)
		return
	}

	o.name = r.ask("name", "Enter a description for the runner:", o.name, false)
	o.tagList = r.ask("tag-list", "Enter tags for the runner (comma-separated):", o.tagList, true)
	o.maintenanceNote = r.ask("maintenance-note", "Enter optional maintenance note for the runner:", o.maintenanceNote, true)
	if o.tagList == "" {
		o.runUntagged = true
	}
	a.log.entry().warn("Support for registration tokens and runner parameters in the 'register' command has been deprecated in " +
		"GitLab Runner 15.6 and will be replaced with support for authentication tokens. " +
		"For more information, see https://docs.gitlab.com/ci/runners/new_creation_workflow/")
	res, api := gl.registerRunner(ctx, log, registerRequest{
		Description: o.name, MaintenanceNote: o.maintenanceNote, TagList: o.tagList,
		RunUntagged: o.runUntagged, Locked: o.locked, AccessLevel: o.accessLevel,
		MaximumTimeout: o.maximumTimeout, Paused: o.paused,
		Info: newRunnerInfo(""), Token: token,
	})
	if res == nil {
		switch api.status {
		case 403:
			a.log.entry().errorf("GitLab at %s refused the registration token (403 Forbidden): check REGISTRATION_TOKEN "+
				"(or --registration-token); it may be mistyped, expired or reset in GitLab", o.url)
		case statusClientError:
			a.log.entry().errorf("Could not reach GitLab at %s: %s", o.url, api.statusText)
		}
		r.fail("Failed to register the runner.")
	}
	r.id, r.tok, r.exp, r.done = res.ID, res.Token, res.TokenExpiresAt, true
}

// checkServerSideArgs refuses settings that belong to GitLab when a runner
// authentication token is used, like the real register command.
func (r *registration) checkServerSideArgs() {
	o := r.o
	if o.locked && o.accessLevel == "" && !o.runUntagged && o.maximumTimeout == 0 && !o.paused &&
		o.tagList == "" && o.maintenanceNote == "" {
		return
	}
	if o.registrationToken == r.tok {
		r.a.log.entry().warn("You have specified an authentication token in the legacy parameter --registration-token. " +
			"This has triggered the 'legacy-compatible registration process' which has resulted in the following command " +
			"line parameters being ignored: --locked, --access-level, --run-untagged, --maximum-timeout, --paused, --tag-list, " +
			"and --maintenance-note.")
		return
	}
	r.a.log.entry().fatal("Runner configuration other than name and executor configuration is reserved (specifically --locked, " +
		"--access-level, --run-untagged, --maximum-timeout, --paused, --tag-list, and --maintenance-note) " +
		"and cannot be specified when registering with a runner authentication token. " +
		"This configuration is specified on the GitLab server. Please try again without specifying any of those arguments.")
}

// runnerTable is the new [[runners]] entry, with the keys register writes.
func (r *registration) runnerTable() map[string]any {
	o := r.o
	t := map[string]any{
		"name": o.name, "url": o.url, "id": r.id, "token": r.tok,
		"token_obtained_at": time.Now().UTC().Truncate(time.Second),
		"token_expires_at":  r.exp.UTC(),
		"executor":          o.executor,
	}
	setIf := func(m map[string]any, k string, v any, ok bool) {
		if ok {
			m[k] = v
		}
	}
	setIf(t, "limit", int64(o.limit), o.limit > 0)
	setIf(t, "output_limit", int64(o.outputLimit), o.outputLimit > 0)
	setIf(t, "request_concurrency", int64(o.requestConcurrency), o.requestConcurrency > 0)
	setIf(t, "tls-ca-file", o.tlsCAFile, o.tlsCAFile != "")
	setIf(t, "tls-cert-file", o.tlsCertFile, o.tlsCertFile != "")
	setIf(t, "tls-key-file", o.tlsKeyFile, o.tlsKeyFile != "")
	setIf(t, "builds_dir", o.buildsDir, o.buildsDir != "")
	setIf(t, "cache_dir", o.cacheDir, o.cacheDir != "")
	setIf(t, "environment", o.env, len(o.env) > 0)
	setIf(t, "shell", o.shell, o.shell != "")
	t["cache"] = map[string]any{"MaxUploadedArchiveSize": int64(0),
		"s3": map[string]any{}, "gcs": map[string]any{}, "azure": map[string]any{}}

	volumes := o.dockerVolumes
	hasCache := false
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if parts[len(parts)-1] == "/cache" { // the real check: "/x:/cache:ro" still gets a "/cache" added
			hasCache = true
		}
	}
	if !hasCache && !o.dockerDisableCache {
		volumes = append(volumes, "/cache")
	}
	d := map[string]any{
		"tls_verify": o.dockerTLSVerify, "image": o.dockerImage, "privileged": o.dockerPrivileged,
		"disable_entrypoint_overwrite": false, "oom_kill_disable": false,
		"disable_cache": o.dockerDisableCache, "volumes": volumes,
		"shm_size": o.dockerShmSize, "network_mtu": int64(0),
	}
	setIf(d, "host", o.dockerHost, o.dockerHost != "")
	setIf(d, "helper_image", o.dockerHelperImage, o.dockerHelperImage != "")
	setIf(d, "network_mode", o.dockerNetworkMode, o.dockerNetworkMode != "")
	setIf(d, "cache_dir", o.dockerCacheDir, o.dockerCacheDir != "")
	setIf(d, "user", o.dockerUser, o.dockerUser != "")
	setIf(d, "pull_policy", o.dockerPullPolicy, len(o.dockerPullPolicy) > 0)
	setIf(d, "allowed_pull_policies", o.dockerAllowedPullPolicies, len(o.dockerAllowedPullPolicies) > 0)
	setIf(d, "dns", o.dockerDNS, len(o.dockerDNS) > 0)
	setIf(d, "cap_add", o.dockerCapAdd, len(o.dockerCapAdd) > 0)
	setIf(d, "cap_drop", o.dockerCapDrop, len(o.dockerCapDrop) > 0)
	setIf(d, "security_opt", o.dockerSecurityOpt, len(o.dockerSecurityOpt) > 0)
	setIf(d, "devices", o.dockerDevices, len(o.dockerDevices) > 0)
	setIf(d, "extra_hosts", o.dockerExtraHosts, len(o.dockerExtraHosts) > 0)
	t["docker"] = d
	return t
}

// loadTemplate reads --template-config: a config.toml with one [[runners]].
func loadTemplate(path string) (map[string]any, error) {
	cf, err := loadConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("couldn't load configuration template file: %w", err)
	}
	if !cf.exists {
		return nil, fmt.Errorf("couldn't load configuration template file: %s does not exist", path)
	}
	rs := cf.runnerTables()
	if len(rs) != 1 {
		return nil, errors.New("configuration template must contain exactly one [[runners]] entry")
	}
	return rs[0], nil
}

// mergeMissing copies into dst what src has and dst lacks (recursively), as
// the real runner merges a template into settings given on the command line.
func mergeMissing(dst, src map[string]any) {
	for k, v := range src {
		cur, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		if dm, ok := cur.(map[string]any); ok {
			if sm, ok := v.(map[string]any); ok {
				mergeMissing(dm, sm)
			}
		}
	}
}

// ---- unregister, verify, list ----

func (a *app) loadConfigOrFatal(path string) *configFile {
	cf, err := loadConfigFile(path)
	if err != nil {
		a.log.entry().withError(err).fatal("Failed to load config", path)
	}
	return cf
}

func (a *app) cmdUnregister(args []string) int {
	var configFile, name, url, token string
	var all bool
	fs := &flagSet{command: "unregister - unregister specific runner"}
	fs.str(&configFile, "config,c", "CONFIG_FILE", "Config file")
	fs.str(&name, "name,n", "", "Name of the runner you wish to unregister")
	fs.str(&url, "url,u", "CI_SERVER_URL", "GitLab instance URL")
	fs.str(&token, "token,t", "CI_SERVER_TOKEN", "Runner token")
	fs.boolean(&all, "all-runners", "", "Unregister all runners")
	if ok, code := a.parseCommandFlags(fs, args); !ok {
		return code
	}
	if configFile == "" {
		configFile = defaultConfigFile()
	}
	a.userModeWarning(false)
	cf := a.loadConfigOrFatal(configFile)
	sid := loadSystemID(configFile, a.log)

	unregister := func(rt map[string]any) bool {
		u, _ := rt["url"].(string)
		tok, _ := rt["token"].(string)
		gl, err := newGitlabClient(u, stringValue(rt, "tls-ca-file"))
		if err != nil {
			a.log.entry().withError(err).error("Cannot talk to GitLab for runner", stringValue(rt, "name"))
			return false
		}
		ctx, cancel := context.WithTimeout(a.ctx, 60*time.Second)
		defer cancel()
		return gl.unregisterRunner(ctx, a.log.with("runner", shortToken(tok)), tok, sid)
	}

	runners := cf.runnerTables()
	var keep []map[string]any
	if all {
		a.log.entry().warn("Unregistering all runners")
		var failed []string
		for _, rt := range runners {
			if !unregister(rt) {
				failed = append(failed, fmt.Sprintf("failed to unregister runner %q", stringValue(rt, "name")))
				keep = append(keep, rt) // a runner GitLab still knows stays in the config
			}
		}
		if len(failed) > 0 {
			a.log.entry().withError(errors.New(strings.Join(failed, "\n"))).error("Failed to unregister runners")
		}
	} else {
		idx := -1
		for i, rt := range runners {
			n, t := stringValue(rt, "name"), stringValue(rt, "token")
			if (name != "" && token != "" && n == name && t == token) ||
				(name == "" && token != "" && t == token) || (token == "" && name != "" && n == name) {
				idx = i
				break
			}
		}
		var err error
		switch {
		case name == "" && token == "":
			err = errors.New("at least one of --name or --token must be specified")
		case idx < 0 && token != "":
			err = fmt.Errorf("get runner by token or name: could not find a runner with the token '%s'", shortToken(token))
		case idx < 0:
			err = fmt.Errorf("get runner by token or name: could not find a runner with the name '%s'", name)
		case !unregister(runners[idx]):
			err = fmt.Errorf("failed to unregister runner %q", stringValue(runners[idx], "name"))
		}
		if err != nil {
			a.log.entry().withError(fmt.Errorf("unregister runner: %w", err)).fatal("failed to unregister runner")
		}
		keep = append(append(keep, runners[:idx]...), runners[idx+1:]...)
	}
	if len(keep) == len(runners) {
		return 0
	}
	cf.setRunnerTables(keep)
	if err := cf.save(); err != nil {
		a.log.entry().fatal("Failed to update", configFile, err)
	}
	a.log.entry().info("Updated", configFile)
	return 0
}

func stringValue(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func (a *app) cmdVerify(args []string) int {
	var configFile, name, url, token string
	var del bool
	fs := &flagSet{command: "verify - verify all registered runners"}
	fs.str(&configFile, "config,c", "CONFIG_FILE", "Config file")
	fs.str(&name, "name,n", "", "Name of the runner you wish to verify")
	fs.str(&url, "url,u", "", "GitLab instance URL")
	fs.str(&token, "token,t", "", "Runner token")
	fs.boolean(&del, "delete", "", "Delete no longer existing runners?")
	if ok, code := a.parseCommandFlags(fs, args); !ok {
		return code
	}
	if configFile == "" {
		configFile = defaultConfigFile()
	}
	a.userModeWarning(true)
	cf := a.loadConfigOrFatal(configFile)
	sid := loadSystemID(configFile, a.log)

	hasSelector := name != "" || url != "" || token != ""
	var keep []map[string]any
	verified, unverified := 0, 0
	for _, rt := range cf.runnerTables() {
		n, u, t := stringValue(rt, "name"), stringValue(rt, "url"), stringValue(rt, "token")
		if !hasSelector || n == name || (u == url && t == token) {
			verified++
			gl, err := newGitlabClient(u, stringValue(rt, "tls-ca-file"))
			var res *tokenResponse
			if err == nil {
				ctx, cancel := context.WithTimeout(a.ctx, 60*time.Second)
				executor := stringValue(rt, "executor")
				res, _ = gl.verifyRunner(ctx, a.log.with("runner", shortToken(t)).with("runner_name", n), t, sid, executor)
				cancel()
			} else {
				a.log.with("runner", shortToken(t)).withError(err).error("Verifying runner...", "failed")
				res = &tokenResponse{}
			}
			if res == nil {
				unverified++
				continue
			}
		}
		keep = append(keep, rt)
	}
	if hasSelector && verified == 0 {
		a.log.entry().fatal("no runner matches the filtering parameters")
	}
	if unverified == 0 {
		return 0
	}
	if !del {
		a.log.entry().fatal("Failed to verify runners")
	}
	cf.setRunnerTables(keep)
	if err := cf.save(); err != nil {
		a.log.entry().fatal("Failed to update", configFile, err)
	}
	a.log.entry().info("Updated", configFile)
	return 0
}

// cmdList lists the runners of config.toml. Unlike the real command it shows
// only the short form of each token.
func (a *app) cmdList(args []string) int {
	var configFile string
	fs := &flagSet{command: "list - List all configured runners"}
	fs.str(&configFile, "config,c", "CONFIG_FILE", "Config file")
	if ok, code := a.parseCommandFlags(fs, args); !ok {
		return code
	}
	if configFile == "" {
		configFile = defaultConfigFile()
	}
	cf, err := loadConfigFile(configFile)
	if err != nil {
		a.log.entry().warn(err)
		return 0
	}
	a.log.with("ConfigFile", configFile).info("Listing configured runners")
	for _, rc := range cf.cfg.Runners {
		a.log.with("Executor", rc.Executor).with("Token", shortToken(rc.Token)).with("URL", rc.URL).info(rc.Name)
	}
	return 0
}

// ---- run ----

func (a *app) cmdRun(args []string) int {
	var configFile, workDir, service, user, listen string
	var syslog bool
	fs := &flagSet{command: "run - run multi runner service"}
	fs.str(&configFile, "config,c", "CONFIG_FILE", "Config file")
	fs.str(&workDir, "working-directory,d", "", "Specify custom working directory")
	fs.str(&service, "service,n", "", "Use different names for different services (accepted, unused)")
	fs.str(&user, "user,u", "", "Use specific user to execute shell scripts (accepted, unused: only the docker executor exists here)")
	fs.boolean(&syslog, "syslog", "LOG_SYSLOG", "Log to system service logger (accepted, unused)")
	fs.str(&listen, "listen-address", "LISTEN_ADDRESS", "Metrics / pprof server listening address (accepted, unused)")
	if ok, code := a.parseCommandFlags(fs, args); !ok {
		return code
	}
	if configFile == "" {
		configFile = defaultConfigFile()
	}
	// Keep reading the same file after --working-directory changes the cwd.
	if abs, err := filepath.Abs(configFile); err == nil {
		configFile = abs
	}
	if workDir != "" {
		if err := os.Chdir(workDir); err != nil {
			a.log.entry().withError(err).fatal("Cannot change to the working directory", workDir)
		}
	}
	signals := a.signals
	if signals == nil {
		signals = make(chan os.Signal, 4)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
		defer signal.Stop(signals)
	}
	return newMultiRunner(a, configFile).run(a.ctx, signals)
}
