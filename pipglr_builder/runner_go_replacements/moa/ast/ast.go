// Package ast holds the syntax tree of moa templates and expressions.
package ast

import (
	"strconv"
	"strings"

	"gitlab.com/gitlab-org/moa/value"
)

// Expr is a node of the syntax tree. String returns the node in moa syntax.
type Expr interface {
	String() string
	// Walk calls v.Enter(e); if that returns a visitor, walks e's children
	// with it (replacing each child with what its walk returns); then
	// returns v.Exit(e). An error stops the walk and is returned.
	Walk(v Visitor) (Expr, error)
}

// Visitor is called by Walk on entering and leaving each node.
type Visitor interface {
	Enter(e Expr) (Visitor, error)
	Exit(e Expr) (Expr, error)
}

// Template is text with interpolated expressions: literal string parts
// (*Literal) and the expressions of ${{ }} blocks, in order.
type Template struct {
	Parts []Expr
}

// Literal is a constant: a literal value in an expression, or plain text in
// a template.
type Literal struct {
	Value value.Value
}

// Ident is a name looked up in the evaluation environment.
type Ident struct {
	Name string
}

// Member is X.Name.
type Member struct {
	X    Expr
	Name string
}

// Index is X[Index].
type Index struct {
	X, Index Expr
}

// Call is Func(Args...).
type Call struct {
	Func string
	Args []Expr
}

// Unary is Op X, with Op one of "!" and "-".
type Unary struct {
	Op string
	X  Expr
}

// Binary is X Op Y, with Op one of "||" "&&" "==" "!=" "<" "<=" ">" ">="
// "+" "-" "*" "/" "%".
type Binary struct {
	Op   string
	X, Y Expr
}

func (t *Template) String() string {
	var sb strings.Builder
	for _, p := range t.Parts {
		if lit, ok := p.(*Literal); ok && lit.Value.Kind() == value.StringKind {
			sb.WriteString(strings.ReplaceAll(lit.Value.String(), "${{", "$${{"))
			continue
		}
		sb.WriteString("${{ " + p.String() + " }}")
	}
	return sb.String()
}

func (l *Literal) String() string {
	if l.Value.Kind() == value.StringKind {
		return strconv.Quote(l.Value.String())
	}
	return l.Value.String()
}

func (i *Ident) String() string  { return i.Name }
func (m *Member) String() string { return m.X.String() + "." + m.Name }
func (i *Index) String() string  { return i.X.String() + "[" + i.Index.String() + "]" }
func (u *Unary) String() string  { return u.Op + u.X.String() }
func (b *Binary) String() string { return "(" + b.X.String() + " " + b.Op + " " + b.Y.String() + ")" }

func (c *Call) String() string {
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = a.String()
	}
	return c.Func + "(" + strings.Join(args, ", ") + ")"
}

// walk implements Walk for a node whose children are given by pointer.
func walk(e Expr, v Visitor, children ...*Expr) (Expr, error) {
	w, err := v.Enter(e)
	if err != nil {
		return e, err
	}
	if w != nil {
		for _, c := range children {
			if *c, err = (*c).Walk(w); err != nil {
				return e, err
			}
		}
	}
	return v.Exit(e)
}

func (t *Template) Walk(v Visitor) (Expr, error) { return walk(t, v, ptrs(t.Parts)...) }
func (l *Literal) Walk(v Visitor) (Expr, error)  { return walk(l, v) }
func (i *Ident) Walk(v Visitor) (Expr, error)    { return walk(i, v) }
func (m *Member) Walk(v Visitor) (Expr, error)   { return walk(m, v, &m.X) }
func (i *Index) Walk(v Visitor) (Expr, error)    { return walk(i, v, &i.X, &i.Index) }
func (c *Call) Walk(v Visitor) (Expr, error)     { return walk(c, v, ptrs(c.Args)...) }
func (u *Unary) Walk(v Visitor) (Expr, error)    { return walk(u, v, &u.X) }
func (b *Binary) Walk(v Visitor) (Expr, error)   { return walk(b, v, &b.X, &b.Y) }

func ptrs(es []Expr) []*Expr {
	ps := make([]*Expr, len(es))
	for i := range es {
		ps[i] = &es[i]
	}
	return ps
}
