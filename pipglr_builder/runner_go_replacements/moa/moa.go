// Stand-in for gitlab.com/gitlab-org/moa: turns off moa's full language; a small subset is evaluated for real, anything else is a parse or evaluation error.

// Package moa parses and evaluates templates: text with ${{ expression }}
// blocks. "$${{" in a template stands for a literal "${{".
//
// Expressions support: literals (numbers, 'single' or "double" quoted
// strings, true, false, null); names looked up in the environment object;
// member access a.b (names may contain '-') and indexing a[expr]; the function
// str(x); unary ! and -; binary * / % + - < <= > >= == != && || with the
// usual precedence, and parentheses. Operators need operands of the right
// kind (+ adds numbers or joins strings; && || ! need booleans), otherwise
// evaluation fails with an error naming the expression.
//
// To evaluate job inputs (what step-runner's expression.Evaluator does for
// the runner), pass ParseTemplate's result to Eval with an environment like
// value.Map(map[string]value.Value{"job": value.Map(map[string]value.Value{
// "inputs": value.Object(inputs)})}); marks such as "sensitive" on input
// values carry through to the result (see value.Value.HasMarks).
package moa

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"gitlab.com/gitlab-org/moa/ast"
	"gitlab.com/gitlab-org/moa/value"
)

const (
	openTok    = "${{"
	closeTok   = "}}"
	escapedTok = "$${{"
)

// EscapeTemplate returns a template whose evaluation is the text s, verbatim.
func EscapeTemplate(s string) string {
	return strings.ReplaceAll(s, openTok, escapedTok)
}

// ParseTemplate parses a template. Text without any ${{ }} block parses to
// a *ast.Literal string; otherwise the result is a *ast.Template.
func ParseTemplate(text string) (ast.Expr, error) {
	var parts []ast.Expr
	var lit strings.Builder
	hasExpr := false

	for i := 0; i < len(text); {
		switch {
		case strings.HasPrefix(text[i:], escapedTok):
			lit.WriteString(openTok)
			i += len(escapedTok)
		case strings.HasPrefix(text[i:], openTok):
			if lit.Len() > 0 {
				parts = append(parts, &ast.Literal{Value: value.String(lit.String())})
				lit.Reset()
			}
			p := &parser{src: text, pos: i + len(openTok), start: i}
			e, err := p.parseBlock()
			if err != nil {
				return nil, err
			}
			parts = append(parts, e)
			hasExpr = true
			i = p.pos
		default:
			lit.WriteByte(text[i])
			i++
		}
	}

	if !hasExpr {
		return &ast.Literal{Value: value.String(lit.String())}, nil
	}
	if lit.Len() > 0 {
		parts = append(parts, &ast.Literal{Value: value.String(lit.String())})
	}
	return &ast.Template{Parts: parts}, nil
}

// Parse parses a single expression (no ${{ }} around it).
func Parse(expr string) (ast.Expr, error) {
	p := &parser{src: expr}
	e, err := p.parseExpr()
	if err != nil {
		return nil, err
	}
	if p.skipSpace(); p.pos < len(p.src) {
		return nil, p.errorf("unexpected %q", p.src[p.pos:])
	}
	return e, nil
}

// Eval evaluates expr. Names are looked up as attributes of env, which
// should be an object. A template made of a single ${{ }} block evaluates to
// that block's value; otherwise to a string, into which strings, numbers and
// booleans are interpolated (other kinds are an error; use str()). The result
// carries the marks of every value it was computed from.
func Eval(expr ast.Expr, env value.Value) (value.Value, error) {
	switch e := expr.(type) {
	case *ast.Template:
		return evalTemplate(e, env)
	case *ast.Literal:
		return e.Value, nil
	case *ast.Ident:
		return get(e, env, value.String(e.Name))
	case *ast.Member:
		x, err := Eval(e.X, env)
		if err != nil {
			return x, err
		}
		return get(e, x, value.String(e.Name))
	case *ast.Index:
		x, err := Eval(e.X, env)
		if err != nil {
			return x, err
		}
		idx, err := Eval(e.Index, env)
		if err != nil {
			return idx, err
		}
		return get(e, x, idx)
	case *ast.Call:
		return evalCall(e, env)
	case *ast.Unary:
		return evalUnary(e, env)
	case *ast.Binary:
		return evalBinary(e, env)
	case nil:
		return value.Null(), errors.New("evaluating nil expression")
	}
	return value.Null(), fmt.Errorf("evaluating %q: unsupported expression type %T", expr.String(), expr)
}

func failf(e ast.Expr, format string, args ...any) (value.Value, error) {
	return value.Null(), fmt.Errorf("evaluating %q: %w", e.String(), fmt.Errorf(format, args...))
}

func get(e ast.Expr, x, key value.Value) (value.Value, error) {
	v, err := x.Get(key)
	if err != nil {
		return failf(e, "%w", err)
	}
	return v, nil
}

func evalTemplate(t *ast.Template, env value.Value) (value.Value, error) {
	if len(t.Parts) == 1 {
		return Eval(t.Parts[0], env)
	}
	var sb strings.Builder
	var marks uint16
	for _, part := range t.Parts {
		v, err := Eval(part, env)
		if err != nil {
			return v, err
		}
		switch v.Kind() {
		case value.StringKind, value.NumberKind, value.BoolKind:
			sb.WriteString(v.String())
		default:
			return failf(part, "cannot interpolate %s value into text, use str()", v.Kind())
		}
		marks |= v.Marks()
	}
	return value.String(sb.String()).WithMarks(marks), nil
}

func evalCall(c *ast.Call, env value.Value) (value.Value, error) {
	args := make([]value.Value, len(c.Args))
	for i, a := range c.Args {
		var err error
		if args[i], err = Eval(a, env); err != nil {
			return args[i], err
		}
	}
	switch c.Func {
	case "str":
		if len(args) != 1 {
			return failf(c, "str() takes 1 argument, got %d", len(args))
		}
		return value.String(args[0].String()).WithMarks(args[0].Marks()), nil
	}
	return failf(c, "unknown function %q", c.Func)
}

func evalUnary(u *ast.Unary, env value.Value) (value.Value, error) {
	x, err := Eval(u.X, env)
	if err != nil {
		return x, err
	}
	switch {
	case u.Op == "!" && x.Kind() == value.BoolKind:
		return value.Bool(!x.Bool()).WithMarks(x.Marks()), nil
	case u.Op == "-" && x.Kind() == value.NumberKind:
		return value.Number(-x.Float()).WithMarks(x.Marks()), nil
	}
	return failf(u, "operator %s does not apply to %s", u.Op, x.Kind())
}

func evalBinary(b *ast.Binary, env value.Value) (value.Value, error) {
	x, err := Eval(b.X, env)
	if err != nil {
		return x, err
	}

	if b.Op == "&&" || b.Op == "||" {
		if x.Kind() != value.BoolKind {
			return failf(b, "operator %s needs booleans, got %s", b.Op, x.Kind())
		}
		if x.Bool() == (b.Op == "||") {
			return x, nil // short-circuit
		}
		y, err := Eval(b.Y, env)
		if err != nil {
			return y, err
		}
		if y.Kind() != value.BoolKind {
			return failf(b, "operator %s needs booleans, got %s", b.Op, y.Kind())
		}
		return y.WithMarks(x.Marks()), nil
	}

	y, err := Eval(b.Y, env)
	if err != nil {
		return y, err
	}
	marks := x.Marks() | y.Marks()
	ok := func(v value.Value) (value.Value, error) { return v.WithMarks(marks), nil }

	switch b.Op {
	case "==":
		return ok(value.Bool(value.Equal(x, y)))
	case "!=":
		return ok(value.Bool(!value.Equal(x, y)))
	}

	switch {
	case x.Kind() == value.NumberKind && y.Kind() == value.NumberKind:
		a, c := x.Float(), y.Float()
		switch b.Op {
		case "+":
			return ok(value.Number(a + c))
		case "-":
			return ok(value.Number(a - c))
		case "*":
			return ok(value.Number(a * c))
		case "/", "%":
			if c == 0 {
				return failf(b, "division by zero")
			}
			if b.Op == "/" {
				return ok(value.Number(a / c))
			}
			return ok(value.Number(math.Mod(a, c)))
		case "<":
			return ok(value.Bool(a < c))
		case "<=":
			return ok(value.Bool(a <= c))
		case ">":
			return ok(value.Bool(a > c))
		case ">=":
			return ok(value.Bool(a >= c))
		}
	case x.Kind() == value.StringKind && y.Kind() == value.StringKind:
		a, c := x.String(), y.String()
		switch b.Op {
		case "+":
			return ok(value.String(a + c))
		case "<":
			return ok(value.Bool(a < c))
		case "<=":
			return ok(value.Bool(a <= c))
		case ">":
			return ok(value.Bool(a > c))
		case ">=":
			return ok(value.Bool(a >= c))
		}
	}
	return failf(b, "operator %s does not apply to %s and %s", b.Op, x.Kind(), y.Kind())
}

// parser is a recursive descent parser over src from pos.
type parser struct {
	src   string
	pos   int
	start int // where the ${{ block began, for error messages
}

func (p *parser) errorf(format string, args ...any) error {
	block := p.src[p.start:]
	if end := strings.Index(block, closeTok); end >= 0 {
		block = block[:end+len(closeTok)]
	}
	return fmt.Errorf("syntax error in %q at offset %d: %s", block, p.pos-p.start, fmt.Sprintf(format, args...))
}

// parseBlock parses "expr }}" (the "${{" already consumed).
func (p *parser) parseBlock() (ast.Expr, error) {
	e, err := p.parseExpr()
	if err != nil {
		return nil, err
	}
	if !p.accept(closeTok) {
		if p.pos >= len(p.src) {
			return nil, p.errorf("missing %q", closeTok)
		}
		return nil, p.errorf("unexpected %q, expected %q", p.src[p.pos:p.pos+1], closeTok)
	}
	return e, nil
}

func (p *parser) skipSpace() {
	for p.pos < len(p.src) && strings.IndexByte(" \t\r\n", p.src[p.pos]) >= 0 {
		p.pos++
	}
}

// accept consumes tok (after spaces) if it is next.
func (p *parser) accept(tok string) bool {
	p.skipSpace()
	if strings.HasPrefix(p.src[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

// binary operators by precedence level, lowest first; longer tokens first
// within a level so "<=" is not read as "<".
var levels = [][]string{
	{"||"},
	{"&&"},
	{"==", "!=", "<=", ">=", "<", ">"},
	{"+", "-"},
	{"*", "/", "%"},
}

func (p *parser) parseExpr() (ast.Expr, error) { return p.parseLevel(0) }

func (p *parser) parseLevel(level int) (ast.Expr, error) {
	if level == len(levels) {
		return p.parseUnary()
	}
	x, err := p.parseLevel(level + 1)
	if err != nil {
		return nil, err
	}
	for {
		op := ""
		for _, tok := range levels[level] {
			if p.accept(tok) {
				op = tok
				break
			}
		}
		if op == "" {
			return x, nil
		}
		y, err := p.parseLevel(level + 1)
		if err != nil {
			return nil, err
		}
		x = &ast.Binary{Op: op, X: x, Y: y}
	}
}

func (p *parser) parseUnary() (ast.Expr, error) {
	for _, op := range []string{"!", "-"} {
		if p.accept(op) {
			x, err := p.parseUnary()
			if err != nil {
				return nil, err
			}
			return &ast.Unary{Op: op, X: x}, nil
		}
	}
	x, err := p.parsePrimary()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.accept("."):
			name := p.ident()
			if name == "" {
				return nil, p.errorf("expected a name after %q", ".")
			}
			x = &ast.Member{X: x, Name: name}
		case p.accept("["):
			idx, err := p.parseExpr()
			if err != nil {
				return nil, err
			}
			if !p.accept("]") {
				return nil, p.errorf("expected %q", "]")
			}
			x = &ast.Index{X: x, Index: idx}
		default:
			return x, nil
		}
	}
}

func (p *parser) parsePrimary() (ast.Expr, error) {
	p.skipSpace()
	if p.pos >= len(p.src) {
		return nil, p.errorf("expected an expression, got end of text")
	}
	c := p.src[p.pos]
	switch {
	case c == '(':
		p.pos++
		x, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		if !p.accept(")") {
			return nil, p.errorf("expected %q", ")")
		}
		return x, nil
	case c == '"' || c == '\'':
		s, err := p.quoted(c)
		if err != nil {
			return nil, err
		}
		return &ast.Literal{Value: value.String(s)}, nil
	case c >= '0' && c <= '9':
		return p.number()
	}

	name := p.ident()
	switch name {
	case "":
		return nil, p.errorf("unexpected %q, expected an expression", string(c))
	case "true", "false":
		return &ast.Literal{Value: value.Bool(name == "true")}, nil
	case "null":
		return &ast.Literal{Value: value.Null()}, nil
	}
	if !p.accept("(") {
		return &ast.Ident{Name: name}, nil
	}
	call := &ast.Call{Func: name}
	if p.accept(")") {
		return call, nil
	}
	for {
		arg, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		call.Args = append(call.Args, arg)
		if p.accept(")") {
			return call, nil
		}
		if !p.accept(",") {
			return nil, p.errorf("expected %q or %q", ",", ")")
		}
	}
}

// ident reads a name: a letter or '_', then letters, digits, '_' or '-'.
func (p *parser) ident() string {
	p.skipSpace()
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (p.pos == start || !(c == '-' || (c >= '0' && c <= '9'))) {
			break
		}
		p.pos++
	}
	return p.src[start:p.pos]
}

func (p *parser) number() (ast.Expr, error) {
	start := p.pos
	digits := func() {
		for p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '9' {
			p.pos++
		}
	}
	digits()
	if p.pos+1 < len(p.src) && p.src[p.pos] == '.' && p.src[p.pos+1] >= '0' && p.src[p.pos+1] <= '9' {
		p.pos++
		digits()
	}
	if p.pos < len(p.src) && (p.src[p.pos] == 'e' || p.src[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.src) && (p.src[p.pos] == '+' || p.src[p.pos] == '-') {
			p.pos++
		}
		digits()
	}
	n, err := strconv.ParseFloat(p.src[start:p.pos], 64)
	if err != nil {
		return nil, p.errorf("bad number %q", p.src[start:p.pos])
	}
	return &ast.Literal{Value: value.Number(n)}, nil
}

// quoted reads a string in quote characters q, with backslash escapes
// \\ \' \" \n \r \t.
func (p *parser) quoted(q byte) (string, error) {
	var sb strings.Builder
	for p.pos++; p.pos < len(p.src); p.pos++ {
		c := p.src[p.pos]
		switch {
		case c == q:
			p.pos++
			return sb.String(), nil
		case c == '\\' && p.pos+1 < len(p.src):
			p.pos++
			switch e := p.src[p.pos]; e {
			case '\\', '\'', '"':
				sb.WriteByte(e)
			case 'n':
				sb.WriteByte('\n')
			case 'r':
				sb.WriteByte('\r')
			case 't':
				sb.WriteByte('\t')
			default:
				return "", p.errorf("unknown escape \\%c", e)
			}
		default:
			sb.WriteByte(c)
		}
	}
	return "", p.errorf("unterminated string")
}
