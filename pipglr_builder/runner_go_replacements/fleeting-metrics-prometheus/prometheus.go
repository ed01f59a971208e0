// Stand-in for gitlab.com/gitlab-org/fleeting/fleeting/metrics/prometheus: fleeting instance metrics are off (no plugin can run).
package prometheus

import "github.com/prometheus/client_golang/prometheus"

// Collector would export fleeting instance metrics. As no fleeting plugin can
// run in this build there is never anything to export, so it exports nothing.
type Collector struct{}

var _ prometheus.Collector = (*Collector)(nil)

// Option configures New.
type Option func(*Collector)

// New returns a collector; its options have nothing to configure here.
func New(opts ...Option) *Collector {
	c := &Collector{}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

func WithConstLabels(labels prometheus.Labels) Option           { return func(*Collector) {} }
func WithInstanceCreationTimeBuckets(buckets []float64) Option  { return func(*Collector) {} }
func WithInstanceIsRunningTimeBuckets(buckets []float64) Option { return func(*Collector) {} }
func WithInstanceDeletionTimeBuckets(buckets []float64) Option  { return func(*Collector) {} }
func WithInstanceLifeDurationBuckets(buckets []float64) Option  { return func(*Collector) {} }

// Describe implements prometheus.Collector; there are no metrics.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector; there are no metrics.
func (c *Collector) Collect(chan<- prometheus.Metric) {}
