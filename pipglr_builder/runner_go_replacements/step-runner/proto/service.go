package proto

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// StepResult is the state of a job.
type StepResult int32

const (
	StepResult_running StepResult = iota + 1
	StepResult_cancelled
)

// StatusError_Kind classifies a job error.
type StatusError_Kind int32

const StatusError_cancelled StatusError_Kind = 1

type (
	RunRequest         struct{}
	RunResponse        struct{}
	CancelRequest      struct{ Id string }
	CancelResponse     struct{}
	FollowLogsRequest  struct{}
	FollowLogsResponse struct{}
	StatusRequest      struct{ Id string }
	StatusResponse     struct{ Jobs []*Status }
	CloseRequest       struct{}
	CloseResponse      struct{}
)

// Status reports one job.
type Status struct {
	Id        string
	Status    StepResult
	StartTime *timestamppb.Timestamp
	EndTime   *timestamppb.Timestamp
	Error     *StatusError
}

// StatusError says why a job did not succeed.
type StatusError struct {
	Kind    StatusError_Kind
	Message string
}

// StepRunnerServer is the step-runner service.
type StepRunnerServer interface {
	Run(context.Context, *RunRequest) (*RunResponse, error)
	Cancel(context.Context, *CancelRequest) (*CancelResponse, error)
	FollowLogs(*FollowLogsRequest, grpc.ServerStreamingServer[FollowLogsResponse]) error
	Status(context.Context, *StatusRequest) (*StatusResponse, error)
	Close(context.Context, *CloseRequest) (*CloseResponse, error)
}

// UnimplementedStepRunnerServer answers every call with codes.Unimplemented.
type UnimplementedStepRunnerServer struct{}

var errUnimplemented = status.Error(codes.Unimplemented, "step-runner: method not implemented")

func (UnimplementedStepRunnerServer) Run(context.Context, *RunRequest) (*RunResponse, error) {
	return nil, errUnimplemented
}

func (UnimplementedStepRunnerServer) Cancel(context.Context, *CancelRequest) (*CancelResponse, error) {
	return nil, errUnimplemented
}

func (UnimplementedStepRunnerServer) FollowLogs(*FollowLogsRequest, grpc.ServerStreamingServer[FollowLogsResponse]) error {
	return errUnimplemented
}

func (UnimplementedStepRunnerServer) Status(context.Context, *StatusRequest) (*StatusResponse, error) {
	return nil, errUnimplemented
}

func (UnimplementedStepRunnerServer) Close(context.Context, *CloseRequest) (*CloseResponse, error) {
	return nil, errUnimplemented
}

// RegisterStepRunnerServer registers nothing: this build has no step-runner
// wire protocol, so a gRPC server it is given answers every step-runner call
// with codes.Unimplemented.
func RegisterStepRunnerServer(_ grpc.ServiceRegistrar, _ StepRunnerServer) {}
