// Package expression evaluates ${{ }} templates against job inputs.
package expression

import (
	"gitlab.com/gitlab-org/moa"
	"gitlab.com/gitlab-org/moa/ast"
	"gitlab.com/gitlab-org/moa/value"
)

// Sensitive marks a value that must not end up in clear text.
const Sensitive uint16 = 1 << 0

// Input is one named job input.
type Input struct {
	Key   string
	Value value.Value
}

// Sensitive reports whether the input's value is marked Sensitive.
func (i Input) Sensitive() bool { return i.Value.HasMarks(Sensitive) }

// Evaluator evaluates templates in which job inputs are reachable as job.inputs.<key>.
type Evaluator struct {
	env value.Value
}

// NewEvaluator returns an Evaluator over inputs, an object of input values.
func NewEvaluator(inputs value.Value) (*Evaluator, error) {
	job := value.Map(map[string]value.Value{"inputs": inputs})
	return &Evaluator{env: value.Map(map[string]value.Value{"job": job})}, nil
}

// Eval evaluates expr, the parsed form of the template text given first
// (moa's errors already quote the failing part, so the text is not needed).
// The result keeps the marks (e.g. Sensitive) of the inputs it came from.
func (e *Evaluator) Eval(_ string, expr ast.Expr) (value.Value, error) {
	return moa.Eval(expr, e.env)
}
