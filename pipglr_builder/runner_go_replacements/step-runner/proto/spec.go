// Package proto holds plain Go versions of the step-runner's protocol messages.
// They are not protobuf-generated: nothing in this build sends them over the wire.
package proto

import "google.golang.org/protobuf/types/known/structpb"

// ValueType is the declared type of a step input.
type ValueType int32

const (
	ValueType_string ValueType = iota + 1
	ValueType_boolean
	ValueType_array
)

// Spec describes a step function.
type Spec struct {
	Spec *Spec_Content
}

func (s *Spec) GetSpec() *Spec_Content {
	if s == nil {
		return nil
	}
	return s.Spec
}

// Spec_Content lists a step function's inputs.
type Spec_Content struct {
	Inputs map[string]*Spec_Content_Input
}

func (c *Spec_Content) GetInputs() map[string]*Spec_Content_Input {
	if c == nil {
		return nil
	}
	return c.Inputs
}

// Spec_Content_Input declares one input.
type Spec_Content_Input struct {
	Type      ValueType
	Default   *structpb.Value
	Sensitive bool
}
