// Stand-in for gitlab.com/gitlab-org/fleeting/taskscaler: no taskscaler can be created, so the autoscaler executors are off (package cron works).
package taskscaler

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"

	"gitlab.com/gitlab-org/fleeting/fleeting"
	"gitlab.com/gitlab-org/fleeting/fleeting/provider"
	"gitlab.com/gitlab-org/fleeting/taskscaler/storage"
)

// ErrNoCapacity is returned by Reserve when there is no free capacity.
var ErrNoCapacity = errors.New("no capacity")

// Taskscaler schedules tasks onto autoscaled instances.
type Taskscaler interface {
	ConfigureSchedule(schedules ...Schedule) error
	Reserve(key string) error
	Unreserve(key string)
	Acquire(ctx context.Context, key string) (Acquisition, error)
	Release(key string)
	Suspend(key string) error
	Resume(ctx context.Context, key string) (Acquisition, error)
	HasCapability(capability provider.Capability) bool
	MetricsCollector() MetricsCollector
	FleetingMetricsCollector() fleeting.MetricsCollector
	Shutdown(ctx context.Context)
}

// Acquisition is a slot on an instance acquired for one task.
type Acquisition interface {
	Slot() int
	InstanceConnectInfo(ctx context.Context) (provider.ConnectInfo, error)
	WithContext(ctx context.Context) (context.Context, context.CancelFunc)
}

// Schedule is an idle-capacity policy active during Periods (cron syntax, see package cron).
type Schedule struct {
	Periods          []string
	Timezone         string
	IdleCount        int
	IdleTime         time.Duration
	ScaleFactor      float64
	ScaleFactorLimit int
	PreemptiveMode   bool
}

// MetricsCollector receives taskscaler metrics. Nothing reports to it here.
type MetricsCollector interface{}

// UpFuncInstance describes an instance that has become ready.
type UpFuncInstance struct {
	Info         provider.ConnectInfo
	Cause        fleeting.Cause
	Restored     bool
	Acquisitions []string
}

// UpFunc is called when an instance becomes ready.
type UpFunc func(ts Taskscaler, instance UpFuncInstance) error

// HeartbeatFunc checks that an instance is still alive.
type HeartbeatFunc func(ctx context.Context, info provider.ConnectInfo) error

// Option configures New. Options are accepted but have no effect, since New
// always fails in this build.
type Option func(*options)

type options struct{}

func ignored(*options) {}

func WithReservations() Option                                         { return ignored }
func WithReservationThrottling() Option                                { return ignored }
func WithDeleteInstancesOnShutdown() Option                            { return ignored }
func WithCapacityPerInstance(n int) Option                             { return ignored }
func WithMaxUseCount(n int) Option                                     { return ignored }
func WithMaxInstances(n int) Option                                    { return ignored }
func WithShutdownDeletionRetries(n int) Option                         { return ignored }
func WithFailureThreshold(n int) Option                                { return ignored }
func WithScaleThrottle(limit, burst int) Option                        { return ignored }
func WithUpdateInterval(d time.Duration) Option                        { return ignored }
func WithUpdateIntervalWhenExpecting(d time.Duration) Option           { return ignored }
func WithDeletionRetryInterval(d time.Duration) Option                 { return ignored }
func WithShutdownDeletionInterval(d time.Duration) Option              { return ignored }
func WithInstanceGroupSettings(settings provider.Settings) Option      { return ignored }
func WithMetricsCollector(mc MetricsCollector) Option                  { return ignored }
func WithFleetingMetricsCollector(mc fleeting.MetricsCollector) Option { return ignored }
func WithInstanceUpFunc(fn UpFunc) Option                              { return ignored }
func WithHeartbeatFunc(fn HeartbeatFunc) Option                        { return ignored }
func WithLogger(logger hclog.Logger) Option                            { return ignored }
func WithStorage(store storage.Storage) Option                         { return ignored }

// New always fails: the autoscaler executors are not available in this build.
func New(ctx context.Context, group provider.InstanceGroup, opts ...Option) (Taskscaler, error) {
	return nil, fleeting.ErrUnavailable
}
