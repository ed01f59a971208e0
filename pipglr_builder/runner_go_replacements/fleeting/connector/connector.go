// Package connector would connect to autoscaled instances over SSH or WinRM;
// in this build every connection attempt fails.
package connector

import (
	"context"
	"fmt"
	"io"
	"net"

	"gitlab.com/gitlab-org/fleeting/fleeting"
	"gitlab.com/gitlab-org/fleeting/fleeting/provider"
)

// RunOptions describes a command to run on an instance.
type RunOptions struct {
	Command string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// DialOptions controls how an instance is dialed.
type DialOptions struct {
	UseExternalAddr bool
	DialFn          func(ctx context.Context, network, addr string) (net.Conn, error)
}

// ConnectorOptions combines dial and run options for Run.
type ConnectorOptions struct {
	RunOptions
	DialOptions
}

// Client is a connection to an instance.
type Client interface {
	Dial(network, addr string) (net.Conn, error)
	DialRun(ctx context.Context, command string) (net.Conn, error)
	Run(ctx context.Context, opts RunOptions) error
	Close() error
}

// DialFn is the signature of Dial.
type DialFn func(ctx context.Context, info provider.ConnectInfo, options DialOptions) (Client, error)

// ExitError reports a remote command's non-zero exit status.
type ExitError struct{ code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
func (e *ExitError) ExitCode() int { return e.code }

// Dial always fails: instance connections are not available in this build.
func Dial(ctx context.Context, info provider.ConnectInfo, options DialOptions) (Client, error) {
	return nil, fleeting.ErrUnavailable
}

// Run always fails: instance connections are not available in this build.
func Run(ctx context.Context, info provider.ConnectInfo, options ConnectorOptions) error {
	return fleeting.ErrUnavailable
}
