package moa

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/moa/ast"
	"gitlab.com/gitlab-org/moa/value"
)

const sensitive uint16 = 1

func testEnv(t *testing.T) value.Value {
	t.Helper()
	var inputs value.Value
	err := json.Unmarshal([]byte(`{
		"username": "fred", "age": 1, "ratio": 0.5, "admin": false,
		"friends": ["bob", "sally"],
		"address": {"line1": "42 Wallaby Way", "line2": "Sydney"},
		"my-input": "dash"
	}`), &inputs)
	if err != nil {
		t.Fatal(err)
	}
	password := value.String("123456").WithMarks(sensitive)
	secretObj := value.Map(map[string]value.Value{"key": value.String("k")}).WithMarks(sensitive)
	m := map[string]value.Value{"password": password, "secret_obj": secretObj}
	for k, v := range inputs.Mapper().All() {
		m[k.String()] = v
	}
	return value.Map(map[string]value.Value{
		"job": value.Map(map[string]value.Value{"inputs": value.Map(m)}),
	})
}

func eval(t *testing.T, text string) (value.Value, error) {
	t.Helper()
	expr, err := ParseTemplate(text)
	if err != nil {
		t.Fatalf("ParseTemplate(%q): %v", text, err)
	}
	return Eval(expr, testEnv(t))
}

func TestEval(t *testing.T) {
	tests := map[string]string{
		"plain text":                                      "plain text",
		"Hello ${{ job.inputs.username }}!":               "Hello fred!",
		"${{job.inputs.username}}${{job.inputs.age}}":     "fred1",
		"age ${{ str(job.inputs.age) }}":                  "age 1",
		"${{ job.inputs.friends[1] }}":                    "sally",
		"${{ job.inputs.address.line1 }}":                 "42 Wallaby Way",
		`${{ job.inputs["address"]['line2'] }}`:           "Sydney",
		"${{ job.inputs.my-input }}":                      "dash",
		"${{ job.inputs.friends }}":                       `["bob","sally"]`,
		"${{ job.inputs.ratio * 2 + 1 }}":                 "2",
		"${{ 'a' + \"b\" }} ${{ 7 % 4 }} ${{ -2.5 }}":     "ab 3 -2.5",
		"${{ job.inputs.age == 1 && !job.inputs.admin }}": "true",
		"${{ job.inputs.username != 'fred' || 2 <= 1 }}":  "false",
		"${{ (1 + 2) * 3 }} ${{ 1 + 2 * 3 }}":             "9 7",
		"${{ null == null }} ${{ true }} ${{ 'x}}y' }}":   "true true x}}y",
		"cost: $5 ${ not } $$ {{ x }}":                    "cost: $5 ${ not } $$ {{ x }}",
		"$${{ job.inputs.username }} ${{ 'ok' }}":         "${{ job.inputs.username }} ok",
	}

	for text, want := range tests {
		got, err := eval(t, text)
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if got.String() != want {
			t.Errorf("%q = %q, want %q", text, got.String(), want)
		}
		if got.HasMarks(sensitive) {
			t.Errorf("%q: unexpectedly sensitive", text)
		}
	}
}

func TestSingleBlockKeepsKind(t *testing.T) {
	got, err := eval(t, "${{ job.inputs.age }}")
	if err != nil || got.Kind() != value.NumberKind || got.Float() != 1 {
		t.Fatalf("got %v (%v), %v", got, got.Kind(), err)
	}
}

func TestSensitiveMarksPropagate(t *testing.T) {
	for _, text := range []string{
		"pw ${{ job.inputs.password }}",
		"${{ str(job.inputs.password) }}",
		"${{ job.inputs.secret_obj.key }}",
		"${{ job.inputs.password == 'x' }}",
	} {
		got, err := eval(t, text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if !got.HasMarks(sensitive) {
			t.Errorf("%q: result lost the sensitive mark", text)
		}
	}
}

func TestEvalErrors(t *testing.T) {
	tests := map[string]string{
		"${{ job.inputs.nonexistent }}":  `evaluating "job.inputs.nonexistent": attribute not found`,
		"${{ job.inputs.friends[5] }}":   `index 5 out of range`,
		"${{ job.inputs.friends.x }}":    `array requires integer index`,
		"a ${{ job.inputs.friends }}":    `cannot interpolate array value into text`,
		"${{ job.inputs.username + 1 }}": `operator + does not apply to string and number`,
		"${{ 1 && true }}":               `operator && needs booleans`,
		"${{ lower('A') }}":              `unknown function "lower"`,
		"${{ 1 / 0 }}":                   `division by zero`,
		"${{ other.thing }}":             `evaluating "other": attribute not found`,
	}
	for text, want := range tests {
		_, err := eval(t, text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to contain %q", text, err, want)
		}
	}
	_, err := eval(t, "${{ job.inputs.nonexistent }}")
	if !errors.Is(err, value.ErrAttributeNotFound) {
		t.Errorf("error %v does not wrap ErrAttributeNotFound", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, text := range []string{
		"Hello ${{ job.inputs.name + }}",
		"${{ }}",
		"${{ job.inputs.name",
		"${{ job.inputs. }}",
		"${{ 'unterminated }}",
		"${{ a = b }}",
		"${{ f(1, }}",
		"${{ a[1 }}",
		"${{ job.inputs.friends == ['bob'] }}", // no array literals
	} {
		if _, err := ParseTemplate(text); err == nil || !strings.Contains(err.Error(), "syntax error in") {
			t.Errorf("%q: got error %v, want a syntax error", text, err)
		}
	}
}

func TestEscapeTemplateRoundTrip(t *testing.T) {
	for _, s := range []string{"", "no blocks", "${{ x }}", "$${{ x }}", "$$${{", "a${{b}}c${{", `{"k":"${{ job.inputs.x }}"}`} {
		expr, err := ParseTemplate(EscapeTemplate(s))
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if _, ok := expr.(*ast.Literal); !ok {
			t.Errorf("%q: escaped template parsed to %T, want *ast.Literal", s, expr)
		}
		got, err := Eval(expr, value.Null())
		if err != nil || got.String() != s {
			t.Errorf("%q: round trip gave %q, %v", s, got.String(), err)
		}
	}
}

type templateFinder struct{ found int }

func (f *templateFinder) Enter(e ast.Expr) (ast.Visitor, error) {
	if _, ok := e.(*ast.Template); ok {
		f.found++
	}
	return f, nil
}
func (f *templateFinder) Exit(e ast.Expr) (ast.Expr, error) { return e, nil }

func TestWalk(t *testing.T) {
	for text, want := range map[string]int{"plain": 0, "a ${{ b.c[1] }}": 1} {
		expr, err := ParseTemplate(text)
		if err != nil {
			t.Fatal(err)
		}
		f := &templateFinder{}
		if _, err := expr.Walk(f); err != nil || f.found != want {
			t.Errorf("%q: found %d templates (err %v), want %d", text, f.found, err, want)
		}
	}
}

func TestValueJSON(t *testing.T) {
	var v struct{ Content value.Value }
	if err := json.Unmarshal([]byte(`{}`), &v); err != nil || v.Content.Kind() != value.NullKind {
		t.Fatalf("missing content: %v %v", v.Content.Kind(), err)
	}
	in := `{"a":[1,"x",true,null],"b":{"c":2.5}}`
	if err := json.Unmarshal([]byte(in), &v.Content); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(v.Content)
	if err != nil || string(out) != in {
		t.Errorf("round trip: %s, %v", out, err)
	}
}
