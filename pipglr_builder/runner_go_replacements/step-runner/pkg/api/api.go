// Package api holds the step-runner socket location helpers.
package api

import (
	"net"
	"os"
	"path/filepath"
)

// DefaultSocketPath is where a step-runner listens when no socket is given.
func DefaultSocketPath() string {
	return filepath.Join(os.TempDir(), "step-runner.sock")
}

// SocketAddr is the unix address of the socket at path.
func SocketAddr(path string) *net.UnixAddr {
	return &net.UnixAddr{Name: path, Net: "unix"}
}
