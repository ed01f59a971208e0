// Package metrics holds the options for the Snowplow emitter's Prometheus
// collector. In this stand-in the collector exports nothing.
package metrics

// CollectorConfig is what the collector options set.
type CollectorConfig struct {
	Namespace                    string
	BatchDeliveryDurationBuckets []float64
}

// CollectorOption configures the emitter's metrics collector.
type CollectorOption func(*CollectorConfig)

// WithCollectorNamespace sets the metrics namespace.
func WithCollectorNamespace(namespace string) CollectorOption {
	return func(c *CollectorConfig) { c.Namespace = namespace }
}

// WithCollectorBatchDeliveryDurationBuckets sets the histogram buckets for
// batch delivery durations.
func WithCollectorBatchDeliveryDurationBuckets(buckets []float64) CollectorOption {
	return func(c *CollectorConfig) { c.BatchDeliveryDurationBuckets = buckets }
}
