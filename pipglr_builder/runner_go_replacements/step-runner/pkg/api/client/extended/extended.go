// Package extended is the step-runner client; in this build it cannot connect.
package extended

import (
	"context"
	"io"

	steprunner "gitlab.com/gitlab-org/step-runner"
	"gitlab.com/gitlab-org/step-runner/pkg/api/client"
)

// FollowOutput receives a job's logs while it is followed.
type FollowOutput struct {
	Logs io.Writer
}

// Client talks to a step-runner.
type Client struct{}

// New always fails: this build cannot connect to a step-runner.
func New(_ client.Dialer) (*Client, error) {
	return nil, steprunner.ErrNotAvailable
}

func (*Client) CloseConn() error { return nil }

func (*Client) Cancel(context.Context, string) error { return steprunner.ErrNotAvailable }

func (*Client) RunAndFollow(context.Context, *client.RunRequest, *FollowOutput) (client.Status, error) {
	return client.Status{}, steprunner.ErrNotAvailable
}
