// Command gitlab-runner is pipglr-builder's protocol test double of GitLab
// Runner. The real program cannot be built here (the Go module proxy refuses
// several of its dependencies), so the project's tests run this instead. It
// follows the real command line, config.toml layout, log style and HTTP
// protocol closely enough for the image's systemd units, runlabels and tests
// to be exercised, and runs jobs through a Docker-compatible (podman) socket.
package main

import (
	"os"
)

// Set with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "19.4.0"
	revision = "testdouble"
	branch   = "test-double"
	built    = "unknown"
)

func main() {
	a := newApp(os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	os.Exit(a.main(os.Args[1:]))
}
