// Stand-in for gitlab.com/gitlab-org/fleeting/fleeting: no fleeting plugins can be run, so the autoscaler executors are off.
package fleeting

import (
	"errors"

	"github.com/hashicorp/go-hclog"

	"gitlab.com/gitlab-org/fleeting/fleeting/provider"
)

// ErrUnavailable is returned by everything in this stand-in that would start
// a fleeting plugin or talk to an autoscaled instance.
var ErrUnavailable = errors.New("fleeting stand-in: the autoscaler executors (docker-autoscaler, instance) are not available in this gitlab-runner build")

// Cause says why an instance became known to the autoscaler.
type Cause string

const (
	CauseRequested  Cause = "requested"
	CausePreexisted Cause = "preexisted"
)

// MetricsCollector receives fleeting metrics. Nothing reports to it here.
type MetricsCollector interface{}

// PluginOption configures RunPlugin.
type PluginOption func(*pluginOptions)

type pluginOptions struct{ logger hclog.Logger }

// WithPluginLogger sets the logger a plugin would write to.
func WithPluginLogger(logger hclog.Logger) PluginOption {
	return func(o *pluginOptions) { o.logger = logger }
}

// Runner is a running fleeting plugin process. None can exist in this build.
type Runner struct{}

// RunPlugin would start the plugin binary at path; it always fails here.
func RunPlugin(path string, config []byte, opts ...PluginOption) (*Runner, error) {
	return nil, ErrUnavailable
}

// InstanceGroup returns nil: no plugin runs, so there is no instance group.
func (r *Runner) InstanceGroup() provider.InstanceGroup { return nil }

// Kill does nothing: no plugin process was started.
func (r *Runner) Kill() {}
