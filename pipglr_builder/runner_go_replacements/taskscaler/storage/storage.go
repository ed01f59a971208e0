// Package storage would persist taskscaler state; not available in this build.
package storage

import "gitlab.com/gitlab-org/fleeting/fleeting"

// Storage persists taskscaler state between runner restarts.
type Storage interface {
	Close() error
}

// NewFileStorage always fails: state storage only serves the autoscaler
// executors, which are not available in this build.
func NewFileStorage(dir string) (Storage, error) {
	return nil, fleeting.ErrUnavailable
}
