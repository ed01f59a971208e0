// Package schema holds the data types of a CI step definition (the `run:` keyword).
// They only carry data: decoding and re-encoding a job's steps works, running them does not.
package schema

// Step is one entry of a `run:` list. Fields are listed in the order they are encoded.
type Step struct {
	Action string            `json:"action,omitempty" yaml:"action,omitempty"`
	Env    map[string]string `json:"env,omitempty" yaml:"env,omitempty"`
	Exec   *Exec             `json:"exec,omitempty" yaml:"exec,omitempty"`
	Inputs StepInputs        `json:"inputs,omitempty" yaml:"inputs,omitempty"`
	Name   *string           `json:"name,omitempty" yaml:"name,omitempty"`
	Run    []Step            `json:"run,omitempty" yaml:"run,omitempty"`
	Script *string           `json:"script,omitempty" yaml:"script,omitempty"`
	// Step references the function to run, e.g. "builtin://script_legacy".
	Step string `json:"func,omitempty" yaml:"func,omitempty"`
}

// StepInputs are the named inputs passed to a step.
type StepInputs map[string]any

// Exec runs a command directly.
type Exec struct {
	Command []string `json:"command" yaml:"command"`
	WorkDir *string  `json:"work_dir,omitempty" yaml:"work_dir,omitempty"`
}
