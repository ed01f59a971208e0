// Package oidc would provide cloud OIDC tokens for the Snowplow collector.
// In this stand-in no token is ever fetched.
package oidc

import "errors"

// ErrUnavailable is returned by Source.Token: this build fetches no OIDC tokens.
var ErrUnavailable = errors.New("oidc: token sources are not available in this build")

type config struct {
	skipIfUnsupportedCloud bool
}

// Option configures a Source.
type Option func(*config)

// WithSkipIfUnsupportedCloud sets whether to send without a token when not on
// a supported cloud provider.
func WithSkipIfUnsupportedCloud(skip bool) Option {
	return func(c *config) { c.skipIfUnsupportedCloud = skip }
}

// Source is an OIDC token source.
type Source struct {
	cfg config
}

// NewSource returns a token source.
func NewSource(opts ...Option) *Source {
	s := &Source{}
	for _, o := range opts {
		o(&s.cfg)
	}
	return s
}

// Token always fails: this build fetches no OIDC tokens.
func (s *Source) Token() (string, error) {
	return "", ErrUnavailable
}
