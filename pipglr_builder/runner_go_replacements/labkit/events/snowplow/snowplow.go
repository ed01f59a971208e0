// Stand-in for gitlab.com/gitlab-org/labkit/v2: turns off Snowplow usage events (tracked events are dropped, nothing is sent).

// Package snowplow has the shape of LabKit's Snowplow billing-event client,
// but sends nothing: tracked events are discarded and no send callback ever
// runs. Emitters and trackers still honour Stop, so the runner's writer
// behaves the same around shutdown.
package snowplow

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/gitlab-org/labkit/v2/events/snowplow/metrics"
)

// ErrEmitterStopped is returned when tracking on a stopped emitter.
var ErrEmitterStopped = errors.New("snowplow: emitter stopped")

// SendResult reports one delivery attempt of a batch of events.
type SendResult struct {
	EventCount int
	StatusCode int
	Err        error
}

// SendCallback receives the results of a send loop. Never called here.
type SendCallback func(successes, failures []SendResult)

// TokenSource supplies bearer tokens for the collector (see package oidc).
type TokenSource interface {
	Token() (string, error)
}

type emitterConfig struct {
	callback       SendCallback
	tokenSource    TokenSource
	metricsOptions []metrics.CollectorOption
}

// EmitterOption configures an Emitter.
type EmitterOption func(*emitterConfig)

// WithCallback sets the callback for send results.
func WithCallback(cb SendCallback) EmitterOption {
	return func(c *emitterConfig) { c.callback = cb }
}

// WithTokenSource sets the token source used to authenticate to the collector.
func WithTokenSource(ts TokenSource) EmitterOption {
	return func(c *emitterConfig) { c.tokenSource = ts }
}

// WithMetricsCollectorOptions configures the emitter's metrics collector.
func WithMetricsCollectorOptions(opts ...metrics.CollectorOption) EmitterOption {
	return func(c *emitterConfig) { c.metricsOptions = append(c.metricsOptions, opts...) }
}

// Emitter would batch and deliver events to a Snowplow collector; this one
// drops them.
type Emitter struct {
	collectorURI string
	cfg          emitterConfig
	collector    noopCollector
	mu           sync.Mutex
	stopped      bool
}

// NewEmitter returns an emitter for the given collector URI.
func NewEmitter(collectorURI string, opts ...EmitterOption) (*Emitter, error) {
	if collectorURI == "" {
		return nil, errors.New("snowplow: collector URI is empty")
	}
	e := &Emitter{collectorURI: collectorURI}
	for _, o := range opts {
		o(&e.cfg)
	}
	return e, nil
}

// Collector returns the emitter's Prometheus collector, which exports nothing.
func (e *Emitter) Collector() prometheus.Collector {
	return &e.collector
}

// Stop stops the emitter. Safe to call more than once.
func (e *Emitter) Stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
}

func (e *Emitter) add() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrEmitterStopped
	}
	return nil // dropped: this build sends no events
}

// noopCollector is an "unchecked" Prometheus collector with no metrics.
type noopCollector struct{}

func (*noopCollector) Describe(chan<- *prometheus.Desc) {}
func (*noopCollector) Collect(chan<- prometheus.Metric) {}

// Tracker builds events and hands them to its Emitter.
type Tracker struct {
	appID   string
	emitter *Emitter
}

// NewTracker returns a tracker for the given application ID.
func NewTracker(appID string, emitter *Emitter) (*Tracker, error) {
	if emitter == nil {
		return nil, errors.New("snowplow: emitter is nil")
	}
	return &Tracker{appID: appID, emitter: emitter}, nil
}

// BillingEventRequiredInput holds the mandatory fields of a billing event.
type BillingEventRequiredInput struct {
	Category      string
	EventType     string
	Realm         string
	UnitOfMeasure string
	Quantity      float64
}

// BillingEventOptionalInput holds the optional fields of a billing event.
type BillingEventOptionalInput struct {
	Subject          string
	DeploymentType   string
	InstanceID       string
	UniqueInstanceID string
	ProjectID        int64
	NamespaceID      int64
	RootNamespaceID  int64
	OrganizationID   int64
	Metadata         map[string]any
}

// TrackBillingEventWithOptionalInput queues a billing event. Here the event is
// dropped; the error is ErrEmitterStopped after Stop, nil otherwise.
func (t *Tracker) TrackBillingEventWithOptionalInput(required BillingEventRequiredInput, optional BillingEventOptionalInput) error {
	return t.emitter.add()
}

// Stop stops the tracker's emitter. Safe to call more than once.
func (t *Tracker) Stop() {
	t.emitter.Stop()
}
