// Stand-in for gitlab.com/gitlab-org/fleeting/nesting: VM isolation (nesting) is off in this gitlab-runner build.

// Package api would talk to the nesting daemon; here every call fails.
package api

import (
	"context"
	"errors"
	"net"

	"gitlab.com/gitlab-org/fleeting/nesting/hypervisor"
)

var (
	ErrNotInitialized     = errors.New("nesting not initialized")
	ErrAlreadyInitialized = errors.New("nesting already initialized")

	// ErrUnavailable is returned by every operation of this stand-in.
	ErrUnavailable = errors.New("nesting stand-in: VM isolation (nesting) is not available in this gitlab-runner build")
)

// Client is a nesting daemon client.
type Client interface {
	Init(ctx context.Context, config []byte) error
	List(ctx context.Context) ([]hypervisor.VirtualMachine, error)
	Create(ctx context.Context, name string, slot *int32) (vm hypervisor.VirtualMachine, stompedVMID *string, err error)
	Delete(ctx context.Context, id string) error
	Close() error
}

// ClientConn is a connection to the nesting daemon. None can be made here.
type ClientConn struct{}

func (*ClientConn) Close() error { return nil }

// NewClientConn always fails: the nesting daemon cannot be reached in this build.
func NewClientConn(host string, dialer func(ctx context.Context, network, address string) (net.Conn, error)) (*ClientConn, error) {
	return nil, ErrUnavailable
}

// New returns a client whose every call fails with ErrUnavailable.
func New(conn *ClientConn) Client { return unavailable{} }

type unavailable struct{}

func (unavailable) Init(context.Context, []byte) error { return ErrUnavailable }
func (unavailable) List(context.Context) ([]hypervisor.VirtualMachine, error) {
	return nil, ErrUnavailable
}
func (unavailable) Create(context.Context, string, *int32) (hypervisor.VirtualMachine, *string, error) {
	return nil, nil, ErrUnavailable
}
func (unavailable) Delete(context.Context, string) error { return ErrUnavailable }
func (unavailable) Close() error                         { return nil }
