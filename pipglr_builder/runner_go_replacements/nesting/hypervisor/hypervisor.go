// Package hypervisor holds the VM type of the nesting stand-in.
package hypervisor

// VirtualMachine is a VM created by the nesting daemon.
type VirtualMachine interface {
	GetId() string
	GetName() string
	GetAddr() string
}
