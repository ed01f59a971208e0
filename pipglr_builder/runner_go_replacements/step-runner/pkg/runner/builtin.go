// Package runner defines the interface of built-in step functions.
package runner

import (
	"context"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"gitlab.com/gitlab-org/step-runner/proto"
)

// Kind is the expected kind of a step input value.
type Kind int

const (
	KindBool Kind = iota + 1
	KindString
	KindList
)

// BuiltinFunction is a step function compiled into the step-runner.
type BuiltinFunction interface {
	Spec() *proto.Spec
	Run(ctx context.Context, builtinCtx BuiltinContext) (BuiltinResult, error)
}

// BuiltinResult is what a built-in function returns.
type BuiltinResult struct{}

// BuiltinContext is what a running built-in function can see of its job.
// Nothing in this build creates one, as steps are never run.
type BuiltinContext interface {
	GetInput(name string, kind Kind) (*structpb.Value, error)
	GetInputWithDefault(name string, kind Kind, inputs map[string]*proto.Spec_Content_Input) (*structpb.Value, error)
	GetJobVars() map[string]*structpb.Value
	GetEnvs() map[string]string
	GetEnvList() []string
	WorkDir() string
	Pipe() (stdout io.Writer, stderr io.Writer)
	GracefulExitDelay() time.Duration
	ListenCancel(ctx context.Context) (context.Context, context.CancelFunc)
}
