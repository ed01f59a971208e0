// Stand-in for gitlab.com/gitlab-org/step-runner: native CI steps (the `run:` keyword, step-runner execution) are turned off.
package steprunner

import "errors"

// ErrNotAvailable is returned by everything that would run steps or talk to a step-runner.
var ErrNotAvailable = errors.New("step-runner stand-in: native steps (run:) are not available in this gitlab-runner build")
