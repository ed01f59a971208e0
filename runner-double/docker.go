package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// dockerAPIVersion is the Docker Engine API version the double speaks; podman
// serves it on its Docker-compatible socket.
const dockerAPIVersion = "v1.41"

// dockerClient talks HTTP to a Docker-compatible API on a unix socket.
type dockerClient struct {
	host string // as configured, for messages
	http *http.Client
}

func newDockerClient(host string) (*dockerClient, error) {
	if host == "" {
		return nil, errors.New(`no Docker host configured: set host = "unix:///path/to/podman.sock" in [runners.docker]`)
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("parsing docker host %q: %w", host, err)
	}
	if u.Scheme != "unix" {
		return nil, fmt.Errorf("docker host %q: the gitlab-runner test double supports only unix:// sockets", host)
	}
	sock := u.Path
	if sock == "" {
		sock = u.Host
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &dockerClient{host: host, http: &http.Client{Transport: tr}}, nil
}

// dockerError is an error answer of the daemon, worded like the docker CLI's.
type dockerError struct {
	status  int
	message string
}

func (e *dockerError) Error() string { return "Error response from daemon: " + e.message }

func isNotFound(err error) bool {
	var de *dockerError
	return errors.As(err, &de) && de.status == http.StatusNotFound
}

// connectionError is the docker CLI's wording for an unreachable daemon.
func (d *dockerClient) connectionError(err error) error {
	return fmt.Errorf("Cannot connect to the Docker daemon at %s. Is the docker daemon running? (%v)", d.host, err)
}

func (d *dockerClient) request(ctx context.Context, method, path string, query url.Values, body any, extra http.Header) (*http.Response, error) {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		reader = bytes.NewReader(data)
	}
	u := "http://docker/" + dockerAPIVersion + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, reader)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range extra {
		req.Header[k] = vs
	}
	resp, err := d.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, d.connectionError(err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			msg = e.Message
		}
		return nil, &dockerError{status: resp.StatusCode, message: msg}
	}
	return resp, nil
}

// call sends a request and decodes a JSON answer into out (if non-nil).
func (d *dockerClient) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := d.request(ctx, method, path, query, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (d *dockerClient) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return d.connectionError(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return d.connectionError(fmt.Errorf("GET /_ping answered %s", resp.Status))
	}
	return nil
}

type imageInfo struct {
	ID          string   `json:"Id"`
	RepoDigests []string `json:"RepoDigests"`
}

// imageInspect returns (nil, nil) when the image is not present.
func (d *dockerClient) imageInspect(ctx context.Context, name string) (*imageInfo, error) {
	var img imageInfo
	err := d.call(ctx, http.MethodGet, "/images/"+name+"/json", nil, nil, &img)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &img, nil
}

// imagePull pulls through POST /images/create, whose answer is a stream of
// JSON progress messages; an "error" message means the pull failed.
func (d *dockerClient) imagePull(ctx context.Context, name string) error {
	ref, tag := name, ""
	if i := strings.LastIndex(name, "@"); i >= 0 {
		ref, tag = name[:i], name[i+1:]
	} else if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		ref, tag = name[:i], name[i+1:]
	}
	if tag == "" {
		tag = "latest"
	}
	resp, err := d.request(ctx, http.MethodPost, "/images/create", url.Values{"fromImage": {ref}, "tag": {tag}}, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading pull progress: %w", err)
		}
		if msg.Error != "" {
			return &dockerError{status: http.StatusInternalServerError, message: msg.Error}
		}
		if msg.ErrorDetail.Message != "" {
			return &dockerError{status: http.StatusInternalServerError, message: msg.ErrorDetail.Message}
		}
	}
}

func (d *dockerClient) volumeCreate(ctx context.Context, name string, labels map[string]string) error {
	err := d.call(ctx, http.MethodPost, "/volumes/create", nil, map[string]any{"Name": name, "Labels": labels}, nil)
	var de *dockerError
	if errors.As(err, &de) && de.status == http.StatusConflict {
		return nil // already there: reuse it, as Docker itself does
	}
	return err
}

func (d *dockerClient) volumeRemove(ctx context.Context, name string) error {
	err := d.call(ctx, http.MethodDelete, "/volumes/"+name, url.Values{"force": {"true"}}, nil, nil)
	if isNotFound(err) {
		return nil
	}
	return err
}

// containerSpec is the body of POST /containers/create (only what we set).
type containerSpec struct {
	Image        string            `json:"Image"`
	Cmd          []string          `json:"Cmd"`
	Entrypoint   []string          `json:"Entrypoint,omitempty"`
	Env          []string          `json:"Env"`
	WorkingDir   string            `json:"WorkingDir,omitempty"`
	Hostname     string            `json:"Hostname,omitempty"`
	User         string            `json:"User,omitempty"`
	Labels       map[string]string `json:"Labels"`
	AttachStdout bool              `json:"AttachStdout"`
	AttachStderr bool              `json:"AttachStderr"`
	Tty          bool              `json:"Tty"`
	OpenStdin    bool              `json:"OpenStdin"`
	HostConfig   hostConfig        `json:"HostConfig"`
}

type deviceMapping struct {
	PathOnHost        string `json:"PathOnHost"`
	PathInContainer   string `json:"PathInContainer"`
	CgroupPermissions string `json:"CgroupPermissions"`
}

type hostConfig struct {
	Privileged  bool              `json:"Privileged"`
	NetworkMode string            `json:"NetworkMode,omitempty"`
	Binds       []string          `json:"Binds"`
	ShmSize     int64             `json:"ShmSize,omitempty"`
	DNS         []string          `json:"Dns,omitempty"`
	DNSSearch   []string          `json:"DnsSearch,omitempty"`
	ExtraHosts  []string          `json:"ExtraHosts,omitempty"`
	CapAdd      []string          `json:"CapAdd,omitempty"`
	CapDrop     []string          `json:"CapDrop,omitempty"`
	SecurityOpt []string          `json:"SecurityOpt,omitempty"`
	Devices     []deviceMapping   `json:"Devices,omitempty"`
	Tmpfs       map[string]string `json:"Tmpfs,omitempty"`
	UsernsMode  string            `json:"UsernsMode,omitempty"`
	// json-file (k8s-file in podman) keeps job output readable without journald.
	LogConfig struct {
		Type string `json:"Type"`
	} `json:"LogConfig"`
}

func (d *dockerClient) containerCreate(ctx context.Context, name string, spec containerSpec) (string, error) {
	var out struct {
		ID       string   `json:"Id"`
		Warnings []string `json:"Warnings"`
	}
	if err := d.call(ctx, http.MethodPost, "/containers/create", url.Values{"name": {name}}, spec, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// containerAttach opens the container's output stream before it starts, so
// no output is lost. The caller reads it with demuxStream until EOF.
func (d *dockerClient) containerAttach(ctx context.Context, id string) (io.ReadCloser, error) {
	h := http.Header{}
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "tcp")
	q := url.Values{"stream": {"1"}, "stdout": {"1"}, "stderr": {"1"}}
	resp, err := d.request(ctx, http.MethodPost, "/containers/"+id+"/attach", q, nil, h)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func (d *dockerClient) containerStart(ctx context.Context, id string) error {
	return d.call(ctx, http.MethodPost, "/containers/"+id+"/start", nil, nil, nil)
}

func (d *dockerClient) containerWait(ctx context.Context, id string) (int, error) {
	var out struct {
		StatusCode int `json:"StatusCode"`
		Error      *struct {
			Message string `json:"Message"`
		} `json:"Error"`
	}
	if err := d.call(ctx, http.MethodPost, "/containers/"+id+"/wait", url.Values{"condition": {"not-running"}}, nil, &out); err != nil {
		return -1, err
	}
	if out.Error != nil && out.Error.Message != "" {
		return out.StatusCode, fmt.Errorf("waiting for container: %s", out.Error.Message)
	}
	return out.StatusCode, nil
}

func (d *dockerClient) containerKill(ctx context.Context, id string) error {
	return d.call(ctx, http.MethodPost, "/containers/"+id+"/kill", url.Values{"signal": {"SIGKILL"}}, nil, nil)
}

func (d *dockerClient) containerRemove(ctx context.Context, id string) error {
	err := d.call(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}, "v": {"1"}}, nil, nil)
	if isNotFound(err) {
		return nil
	}
	return err
}

// demuxStream copies a Docker attach stream to w. Without a TTY the stream is
// multiplexed: 8-byte headers (stream type, 3 zero bytes, big-endian size)
// before each frame. A stream that does not start like that is copied raw.
func demuxStream(r io.Reader, w io.Writer) error {
	br := bufio.NewReaderSize(r, 32<<10)
	head, err := br.Peek(8)
	if err != nil {
		if len(head) > 0 {
			_, werr := w.Write(head)
			return werr
		}
		if err == io.EOF {
			return nil
		}
		return err
	}
	if head[0] > 2 || head[1] != 0 || head[2] != 0 || head[3] != 0 {
		_, err := io.Copy(w, br)
		return err
	}
	hdr := make([]byte, 8)
	for {
		if _, err := io.ReadFull(br, hdr); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil
			}
			return err
		}
		size := int64(binary.BigEndian.Uint32(hdr[4:]))
		if _, err := io.CopyN(w, br, size); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}
