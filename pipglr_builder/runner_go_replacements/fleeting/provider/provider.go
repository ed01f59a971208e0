// Package provider holds the plugin-facing types of fleeting that
// gitlab-runner refers to. No plugin can be loaded in this build.
package provider

import (
	"context"
	"time"
)

// Protocol is the protocol used to reach an instance.
type Protocol string

const (
	ProtocolSSH   Protocol = "ssh"
	ProtocolWinRM Protocol = "winrm"
)

// Capability is an optional feature a plugin can advertise.
type Capability string

const CapabilitySuspendResume Capability = "suspend_resume"

// ConnectorConfig describes how to connect to instances.
type ConnectorConfig struct {
	OS                   string
	Arch                 string
	Protocol             Protocol
	ProtocolPort         int
	Username             string
	Password             string
	Key                  []byte
	UseStaticCredentials bool
	Keepalive            time.Duration
	Timeout              time.Duration
}

// ConnectInfo is what is needed to connect to one instance.
type ConnectInfo struct {
	ConnectorConfig

	ID           string
	ExternalAddr string
	InternalAddr string
}

// Settings are instance group settings passed to a plugin.
type Settings struct {
	ConnectorConfig
}

// InstanceGroup is a group of instances managed by a plugin. This build
// never has one.
type InstanceGroup interface {
	ConnectInfo(ctx context.Context, id string) (ConnectInfo, error)
	Shutdown(ctx context.Context) error
}
