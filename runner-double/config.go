package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the typed view of config.toml: only what the double acts on.
// The file itself is kept as a generic tree (configFile.tree) so that saving
// it never drops settings the double does not model.
type Config struct {
	Concurrent      int             `toml:"concurrent"`
	CheckInterval   int             `toml:"check_interval"`
	LogLevel        string          `toml:"log_level"`
	LogFormat       string          `toml:"log_format"`
	ShutdownTimeout int             `toml:"shutdown_timeout"`
	Runners         []*RunnerConfig `toml:"runners"`
}

type RunnerConfig struct {
	Name               string        `toml:"name"`
	URL                string        `toml:"url"`
	ID                 int64         `toml:"id"`
	Token              string        `toml:"token"`
	TokenObtainedAt    time.Time     `toml:"token_obtained_at"`
	TokenExpiresAt     time.Time     `toml:"token_expires_at"`
	TLSCAFile          string        `toml:"tls-ca-file"`
	Executor           string        `toml:"executor"`
	Limit              int           `toml:"limit"`
	RequestConcurrency int           `toml:"request_concurrency"`
	OutputLimit        int           `toml:"output_limit"`
	Environment        []string      `toml:"environment"`
	BuildsDir          string        `toml:"builds_dir"`
	Shell              string        `toml:"shell"`
	Docker             *DockerConfig `toml:"docker"`
}

type DockerConfig struct {
	Host                string            `toml:"host"`
	TLSVerify           bool              `toml:"tls_verify"`
	Image               string            `toml:"image"`
	Privileged          bool              `toml:"privileged"`
	User                string            `toml:"user"`
	DisableCache        bool              `toml:"disable_cache"`
	Volumes             []string          `toml:"volumes"`
	CacheDir            string            `toml:"cache_dir"`
	NetworkMode         string            `toml:"network_mode"`
	PullPolicy          stringOrArray     `toml:"pull_policy"`
	AllowedPullPolicies []string          `toml:"allowed_pull_policies"`
	ShmSize             int64             `toml:"shm_size"`
	HelperImage         string            `toml:"helper_image"`
	DNS                 []string          `toml:"dns"`
	DNSSearch           []string          `toml:"dns_search"`
	ExtraHosts          []string          `toml:"extra_hosts"`
	CapAdd              []string          `toml:"cap_add"`
	CapDrop             []string          `toml:"cap_drop"`
	SecurityOpt         []string          `toml:"security_opt"`
	Devices             []string          `toml:"devices"`
	Tmpfs               map[string]string `toml:"tmpfs"`
	UsernsMode          string            `toml:"userns_mode"`
}

// stringOrArray accepts pull_policy = "x" and pull_policy = ["x", "y"], like
// the real runner's StringOrArray.
type stringOrArray []string

func (s *stringOrArray) UnmarshalTOML(v any) error {
	switch t := v.(type) {
	case string:
		*s = []string{t}
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			str, ok := e.(string)
			if !ok {
				return fmt.Errorf("pull_policy entries must be strings, got %v", e)
			}
			out = append(out, str)
		}
		*s = out
	default:
		return fmt.Errorf("pull_policy must be a string or an array of strings, got %v", v)
	}
	return nil
}

const defaultShutdownTimeout = 30 * time.Second

// defaultCheckInterval is how often a runner asks for jobs without
// check_interval (a variable so tests can shorten it).
var defaultCheckInterval = 3 * time.Second

func (c *Config) checkInterval() time.Duration {
	if c.CheckInterval > 0 {
		return time.Duration(c.CheckInterval) * time.Second
	}
	return defaultCheckInterval
}

func (c *Config) shutdownTimeout() time.Duration {
	if c.ShutdownTimeout > 0 {
		return time.Duration(c.ShutdownTimeout) * time.Second
	}
	return defaultShutdownTimeout
}

func (c *Config) concurrent() int {
	if c.Concurrent < 1 {
		return 1
	}
	return c.Concurrent
}

// Keys the real runner accepts that the double reads but has no use for; they
// are kept in the file and not reported as unsupported.
var quietlyIgnoredKeys = map[string]bool{
	"runners.tls-cert-file": true, "runners.tls-key-file": true, "runners.cache": true,
	"runners.feature_flags": true, "runners.unhealthy_requests_limit": true, "runners.unhealthy_interval": true,
	"runners.debug_trace_disabled": true, "runners.labels": true, "runners.strict_check_interval": true,
	"runners.job_status_final_update_retry_limit": true, "runners.cache_dir": true,
	"runners.docker.disable_entrypoint_overwrite": true, "runners.docker.oom_kill_disable": true,
	"runners.docker.network_mtu": true, "runners.docker.tls_cert_path": true,
	"runners.docker.wait_for_services_timeout": true, "runners.docker.mac_address": true,
	"runners.docker.services_tmpfs": true, "runners.docker.allowed_images": true,
	"runners.docker.allowed_services": true, "runners.docker.services_privileged": true,
	"runners.docker.allowed_privileged_images": true, "runners.docker.allowed_privileged_services": true,
	"runners.docker.volume_driver": true, "runners.docker.helper_image_flavor": true,
	"runners.docker.enable_ipv6": true, "runners.docker.services_limit": true,
}

// configFile is config.toml as read from disk: a generic tree that is written
// back whole, and the typed view derived from it.
type configFile struct {
	path    string
	exists  bool
	modTime time.Time
	tree    map[string]any
	cfg     *Config
	// Settings present in the file that the double does not act on.
	unsupported []string
}

func loadConfigFile(path string) (*configFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &configFile{path: path, tree: map[string]any{}, cfg: &Config{}}, nil
	}
	if err != nil {
		return nil, err
	}
	cf, err := parseConfig(path, data)
	if err != nil {
		return nil, err
	}
	cf.exists = true
	if st, err := os.Stat(path); err == nil {
		cf.modTime = st.ModTime()
	}
	return cf, nil
}

func parseConfig(path string, data []byte) (*configFile, error) {
	tree := map[string]any{}
	if _, err := toml.Decode(string(data), &tree); err != nil {
		return nil, fmt.Errorf("decoding configuration file: %w", err)
	}
	cfg := &Config{}
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return nil, fmt.Errorf("decoding configuration file: %w", err)
	}
	cf := &configFile{path: path, tree: tree, cfg: cfg}
	seen := map[string]bool{}
	for _, key := range md.Undecoded() {
		k := key.String()
		if !strings.HasPrefix(k, "runners.") || seen[k] {
			continue // top-level settings (listen_address, session_server...) do not change job behaviour
		}
		ignored := false
		for prefix := range quietlyIgnoredKeys {
			if k == prefix || strings.HasPrefix(k, prefix+".") {
				ignored = true
				break
			}
		}
		for parent := range seen {
			if strings.HasPrefix(k, parent+".") {
				ignored = true // already reported as a whole
			}
		}
		if !ignored {
			seen[k] = true
			cf.unsupported = append(cf.unsupported, k)
		}
	}
	sort.Strings(cf.unsupported)
	return cf, nil
}

// reparse refreshes the typed view after the tree was changed in memory.
func (cf *configFile) reparse() error {
	n, err := parseConfig(cf.path, encodeTOML(cf.tree))
	if err != nil {
		return err
	}
	cf.cfg, cf.unsupported = n.cfg, n.unsupported
	return nil
}

// save writes the tree back to disk.
func (cf *configFile) save() error {
	if err := saveFile(cf.path, encodeTOML(cf.tree)); err != nil {
		return err
	}
	cf.exists = true
	if st, err := os.Stat(cf.path); err == nil {
		cf.modTime = st.ModTime()
	}
	return nil
}

// runnerTables returns the [[runners]] entries of the tree.
func (cf *configFile) runnerTables() []map[string]any {
	switch r := cf.tree["runners"].(type) {
	case []map[string]any:
		return r
	case []any:
		out := make([]map[string]any, 0, len(r))
		for _, e := range r {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m)
			}
		}
		return out
	}
	return nil
}

func (cf *configFile) setRunnerTables(rs []map[string]any) {
	if len(rs) == 0 {
		delete(cf.tree, "runners")
		return
	}
	cf.tree["runners"] = rs
}

// ensureTopLevelDefaults adds the global settings `gitlab-runner register`
// writes, without touching values that are already there.
func (cf *configFile) ensureTopLevelDefaults() {
	defaults := []struct {
		key string
		val any
	}{
		{"concurrent", int64(1)},
		{"check_interval", int64(0)},
		{"connection_max_age", "15m0s"},
		{"shutdown_timeout", int64(0)},
	}
	for _, d := range defaults {
		if _, ok := cf.tree[d.key]; !ok {
			cf.tree[d.key] = d.val
		}
	}
	if _, ok := cf.tree["session_server"]; !ok {
		cf.tree["session_server"] = map[string]any{"session_timeout": int64(1800)}
	}
}

// saveFile is a variable so tests can simulate a read-only config.
var saveFile = writeFileAtomic

// writeFileAtomic replaces path through a temporary file and a rename, so a
// reader never sees half a config. When the rename is impossible (a file
// bind-mounted into a container is a mount point: EBUSY) or the directory is
// not writable, it falls back to writing in place, which is what the real
// runner always does.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return writeInPlace(path, data, mode)
	}
	tmpName := tmp.Name()
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Chmod(mode)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmpName)
		return fmt.Errorf("saving the file: %w", werr)
	}
	if err := os.Rename(tmpName, path); err != nil {
		os.Remove(tmpName)
		if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) || errors.Is(err, os.ErrPermission) {
			return writeInPlace(path, data, mode)
		}
		return fmt.Errorf("saving the file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func writeInPlace(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("saving the file: %w", err)
	}
	return nil
}

// defaultConfigFile is where the real runner looks without --config.
func defaultConfigFile() string {
	if os.Getuid() == 0 {
		return "/etc/gitlab-runner/config.toml"
	}
	if u, err := user.Current(); err == nil && u.HomeDir != "" {
		return filepath.Join(u.HomeDir, ".gitlab-runner", "config.toml")
	}
	if home := os.Getenv("HOME"); home != "" {
		return filepath.Join(home, ".gitlab-runner", "config.toml")
	}
	wd, _ := os.Getwd()
	return filepath.Join(wd, "config.toml")
}

// ---- system ID (.runner_system_id beside config.toml) ----

var systemIDRe = regexp.MustCompile(`^[sr]_[0-9a-zA-Z]{12}$`)

// loadSystemID reads .runner_system_id from the config file's directory, or
// creates it. Failing to write it is only a warning, as in the real runner:
// the runner then gets a new ID at every start.
func loadSystemID(configPath string, log *logger) string {
	statePath := filepath.Join(filepath.Dir(configPath), ".runner_system_id")
	data, err := os.ReadFile(statePath)
	switch {
	case err == nil:
		if id := strings.TrimSpace(string(data)); systemIDRe.MatchString(id) {
			return id
		}
		log.with("state_file", statePath).warn("The runner system ID file does not hold a valid ID (s_ followed by 12 letters or digits); creating a new one")
	case !errors.Is(err, os.ErrNotExist):
		log.with("state_file", statePath).withError(err).warn("Couldn't read the runner system ID file; creating a new ID")
	}

	id := generateSystemID()
	log.with("system_id", id).info("Created missing unique system ID")
	werr := os.MkdirAll(filepath.Dir(statePath), 0o700)
	if werr == nil {
		werr = os.WriteFile(statePath, []byte(id), 0o600)
	}
	if werr != nil {
		log.with("state_file", statePath).with("system_id", id).withError(werr).warnf(
			"Couldn't save new system ID on state file. This runner will get a new system ID at every start; "+
				"to keep one, create the file yourself: echo %q > %q", id, statePath)
	}
	return id
}

// generateSystemID derives the ID from the machine ID when there is one (so it
// is stable, like the real runner's), else picks a random one.
func generateSystemID() string {
	const n = 12
	for _, p := range []string{"/var/lib/dbus/machine-id", "/etc/machine-id"} {
		data, err := os.ReadFile(p)
		mid := strings.TrimSpace(string(data))
		if err != nil || mid == "" {
			continue
		}
		mac := hmac.New(sha256.New, []byte(mid))
		mac.Write([]byte("gitlab-runner"))
		return "s_" + hex.EncodeToString(mac.Sum(nil))[:n]
	}
	const charset = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		r, err := rand.Int(rand.Reader, big.NewInt(int64(len(charset))))
		if err != nil {
			panic(err)
		}
		b[i] = charset[r.Int64()]
	}
	return "s_" + string(b)
}

// ---- TOML writer ----
//
// BurntSushi/toml can encode a map, but only with sorted keys. Writing the
// tree ourselves keeps the key order gitlab-runner uses, so a config written
// by the double reads like one written by the real program.

var tomlKeyOrder = map[string][]string{
	"": {"listen_address", "concurrent", "check_interval", "log_level", "log_format", "user",
		"sentry_dsn", "connection_max_age", "shutdown_timeout", "session_server", "runners"},
	"session_server": {"listen_address", "advertise_address", "session_timeout"},
	"runners": {"name", "limit", "output_limit", "request_concurrency", "url", "id", "token",
		"token_obtained_at", "token_expires_at", "tls-ca-file", "tls-cert-file", "tls-key-file",
		"executor", "builds_dir", "cache_dir", "clone_url", "environment", "shell",
		"feature_flags", "cache", "docker"},
	"runners.cache": {"Type", "Path", "Shared", "MaxUploadedArchiveSize", "s3", "gcs", "azure"},
	"runners.docker": {"host", "tls_cert_path", "tls_verify", "hostname", "image", "memory",
		"cpus", "dns", "dns_search", "privileged", "disable_entrypoint_overwrite", "user",
		"userns_mode", "cap_add", "cap_drop", "oom_kill_disable", "security_opt", "devices",
		"disable_cache", "volumes", "cache_dir", "extra_hosts", "network_mode",
		"allowed_pull_policies", "pull_policy", "shm_size", "tmpfs", "helper_image", "network_mtu"},
}

func encodeTOML(tree map[string]any) []byte {
	var b bytes.Buffer
	writeTOMLTable(&b, nil, tree)
	return b.Bytes()
}

func isTOMLTable(v any) bool {
	_, ok := v.(map[string]any)
	return ok
}

func tomlTableArray(v any) ([]map[string]any, bool) {
	switch t := v.(type) {
	case []map[string]any:
		return t, len(t) > 0
	case []any:
		if len(t) == 0 {
			return nil, false
		}
		out := make([]map[string]any, 0, len(t))
		for _, e := range t {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			out = append(out, m)
		}
		return out, true
	}
	return nil, false
}

func orderedKeys(path []string, m map[string]any) []string {
	order := tomlKeyOrder[strings.Join(path, ".")]
	rank := map[string]int{}
	for i, k := range order {
		rank[k] = i
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.SliceStable(keys, func(i, j int) bool {
		ri, iok := rank[keys[i]]
		rj, jok := rank[keys[j]]
		switch {
		case iok && jok:
			return ri < rj
		case iok != jok:
			return iok
		}
		return keys[i] < keys[j]
	})
	return keys
}

func writeTOMLTable(b *bytes.Buffer, path []string, m map[string]any) {
	keys := orderedKeys(path, m)
	indent := strings.Repeat("  ", len(path))
	for _, k := range keys {
		v := m[k]
		if isTOMLTable(v) {
			continue
		}
		if _, ok := tomlTableArray(v); ok {
			continue
		}
		fmt.Fprintf(b, "%s%s = %s\n", indent, tomlKey(k), tomlValue(v))
	}
	for _, k := range keys {
		v := m[k]
		sub := append(append([]string{}, path...), k)
		header := strings.Repeat("  ", len(path))
		blank := ""
		if len(path) == 0 {
			blank = "\n"
		}
		if t, ok := v.(map[string]any); ok {
			fmt.Fprintf(b, "%s%s[%s]\n", blank, header, tomlPath(sub))
			writeTOMLTable(b, sub, t)
		} else if arr, ok := tomlTableArray(v); ok {
			for _, t := range arr {
				fmt.Fprintf(b, "%s%s[[%s]]\n", blank, header, tomlPath(sub))
				writeTOMLTable(b, sub, t)
			}
		}
	}
}

var bareKeyRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func tomlKey(k string) string {
	if bareKeyRe.MatchString(k) {
		return k
	}
	return tomlString(k)
}

func tomlPath(p []string) string {
	parts := make([]string, len(p))
	for i, k := range p {
		parts[i] = tomlKey(k)
	}
	return strings.Join(parts, ".")
}

func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlValue(v any) string {
	switch t := v.(type) {
	case string:
		return tomlString(t)
	case bool:
		return strconv.FormatBool(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case int:
		return strconv.Itoa(t)
	case float64:
		switch {
		case math.IsNaN(t):
			return "nan"
		case math.IsInf(t, 1):
			return "inf"
		case math.IsInf(t, -1):
			return "-inf"
		}
		s := strconv.FormatFloat(t, 'f', -1, 64)
		if !strings.ContainsAny(s, ".e") {
			s += ".0"
		}
		return s
	case time.Time:
		// BurntSushi/toml marks local (zone-less) values by these zone names.
		switch t.Location().String() {
		case "datetime-local":
			return t.Format("2006-01-02T15:04:05.999999999")
		case "date-local":
			return t.Format("2006-01-02")
		case "time-local":
			return t.Format("15:04:05.999999999")
		}
		return t.Format(time.RFC3339Nano)
	case map[string]any:
		keys := orderedKeys(nil, t)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, tomlKey(k)+" = "+tomlValue(t[k]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice {
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = tomlValue(rv.Index(i).Interface())
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return tomlString(fmt.Sprint(v))
}
