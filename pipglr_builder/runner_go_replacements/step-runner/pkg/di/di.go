// Package di assembles the step-runner service; in this build there is no service to assemble.
package di

import (
	"log/slog"

	steprunner "gitlab.com/gitlab-org/step-runner"
	"gitlab.com/gitlab-org/step-runner/pkg/runner"
	"gitlab.com/gitlab-org/step-runner/proto"
)

// Container collects the options of a step-runner service.
type Container struct {
	builtins       map[string]runner.BuiltinFunction
	operatorLogger *slog.Logger
}

// NewContainer applies opts to a new Container.
func NewContainer(opts ...func(*Container)) *Container {
	c := &Container{builtins: map[string]runner.BuiltinFunction{}}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// WithBuiltinFunc registers a built-in step function under name.
func WithBuiltinFunc(name string, fn runner.BuiltinFunction) func(*Container) {
	return func(c *Container) { c.builtins[name] = fn }
}

// WithOperatorLogger sets the logger for operator-facing messages.
func WithOperatorLogger(logger *slog.Logger) func(*Container) {
	return func(c *Container) { c.operatorLogger = logger }
}

// StepRunnerService always fails: this build cannot run steps.
func (c *Container) StepRunnerService() (proto.StepRunnerServer, error) {
	return nil, steprunner.ErrNotAvailable
}
