// Package client holds the request and status types of the step-runner client.
package client

import (
	"time"

	"google.golang.org/grpc"
)

// Dialer opens the gRPC connection to a step-runner.
type Dialer interface {
	Dial() (*grpc.ClientConn, error)
}

// RunRequest asks a step-runner to run a job's steps.
type RunRequest struct {
	Id        string
	Timeout   *time.Duration
	WorkDir   string
	BuildDir  string
	Env       map[string]string
	Steps     string
	Variables []Variable
}

// Variable is a CI variable passed along with a RunRequest.
type Variable struct {
	Key    string
	Value  string
	File   bool
	Masked bool
}

// State is the state of a step-runner job.
type State int

// The zero State is StateUnspecified, so an empty Status never reads as success.
const (
	StateUnspecified State = iota
	StateSuccess
	StateFailure
	StateCancelled
)

func (s State) String() string {
	switch s {
	case StateSuccess:
		return "success"
	case StateFailure:
		return "failure"
	case StateCancelled:
		return "cancelled"
	default:
		return "unspecified"
	}
}

// ErrorKind classifies why a job did not succeed.
type ErrorKind int

const (
	ErrorUnknown ErrorKind = iota
	ErrorInternal
	ErrorStepFailure
	ErrorCancelled
	ErrorTimeout
)

// Status is the outcome of a step-runner job.
type Status struct {
	State     State
	Message   string
	ErrorKind ErrorKind
}
