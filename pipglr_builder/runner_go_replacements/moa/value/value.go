// Package value holds the dynamically typed values that moa expressions
// work on: null, boolean, number, string, array and object. A value can
// carry marks (bit flags, e.g. "sensitive") that follow it through
// evaluation. The zero Value is null.
package value

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
)

var (
	// ErrAttributeNotFound is returned when an object has no such attribute.
	ErrAttributeNotFound = errors.New("attribute not found")
	// ErrInvalidKey is returned for a key of the wrong kind or out of range.
	ErrInvalidKey = errors.New("invalid key")
)

// Kind is the type of a Value.
type Kind int

const (
	NullKind Kind = iota
	BoolKind
	NumberKind
	StringKind
	ArrayKind
	ObjectKind
)

func (k Kind) String() string {
	switch k {
	case NullKind:
		return "null"
	case BoolKind:
		return "boolean"
	case NumberKind:
		return "number"
	case StringKind:
		return "string"
	case ArrayKind:
		return "array"
	case ObjectKind:
		return "object"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Mapper is the interface of object values: string keys to values.
type Mapper interface {
	All() iter.Seq2[Value, Value]
	Attr(name string) (Value, error)
	Get(key Value) (Value, error)
	Keys() iter.Seq[Value]
	Len() int
	Values() iter.Seq[Value]
	WithMarks(marks uint16) Mapper
}

// Value is a moa value.
type Value struct {
	kind  Kind
	marks uint16
	b     bool
	n     float64
	s     string
	arr   []Value
	obj   Mapper
}

// Null returns the null value.
func Null() Value { return Value{} }

// Bool returns a boolean value.
func Bool(b bool) Value { return Value{kind: BoolKind, b: b} }

// Number returns a number value.
func Number(n float64) Value { return Value{kind: NumberKind, n: n} }

// String returns a string value.
func String(s string) Value { return Value{kind: StringKind, s: s} }

// Array returns an array value.
func Array(elems ...Value) Value { return Value{kind: ArrayKind, arr: elems} }

// Object returns an object value backed by m.
func Object(m Mapper) Value { return Value{kind: ObjectKind, obj: m} }

// Map returns an object value holding a copy of m.
func Map(m map[string]Value) Value {
	mm := mapMapper{}
	for k, v := range m {
		mm[k] = v
	}
	return Object(mm)
}

// Kind returns the kind of v.
func (v Value) Kind() Kind { return v.kind }

// Marks returns the marks set on v.
func (v Value) Marks() uint16 { return v.marks }

// WithMarks returns v with the given marks added.
func (v Value) WithMarks(marks uint16) Value {
	v.marks |= marks
	return v
}

// HasMarks reports whether all the given marks are set on v.
func (v Value) HasMarks(marks uint16) bool { return v.marks&marks == marks }

// Bool returns the boolean of a BoolKind value (false otherwise).
func (v Value) Bool() bool { return v.b }

// Float returns the number of a NumberKind value (0 otherwise).
func (v Value) Float() float64 { return v.n }

// Elems returns the elements of an ArrayKind value (nil otherwise).
func (v Value) Elems() []Value { return v.arr }

// Mapper returns the mapper of an ObjectKind value (nil otherwise).
func (v Value) Mapper() Mapper { return v.obj }

// String returns the text of a string, the canonical form of a number,
// boolean or null, and JSON for arrays and objects.
func (v Value) String() string {
	switch v.kind {
	case StringKind:
		return v.s
	case NumberKind:
		return formatNumber(v.n)
	case BoolKind:
		return strconv.FormatBool(v.b)
	case NullKind:
		return "null"
	}
	b, err := v.MarshalJSON()
	if err != nil {
		return fmt.Sprintf("<%s: %v>", v.kind, err)
	}
	return string(b)
}

func formatNumber(n float64) string {
	if n == math.Trunc(n) && math.Abs(n) < 1e15 {
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	return strconv.FormatFloat(n, 'g', -1, 64)
}

// Get returns v[key]: an attribute of an object (string key, marks of v
// carried over) or an element of an array (integer number key).
func (v Value) Get(key Value) (Value, error) {
	var elem Value
	var err error
	switch v.kind {
	case ObjectKind:
		elem, err = v.obj.Get(key)
	case ArrayKind:
		if key.kind != NumberKind || key.n != math.Trunc(key.n) {
			return Null(), fmt.Errorf("%w: array requires integer index not %v", ErrInvalidKey, key)
		}
		if key.n < 0 || key.n >= float64(len(v.arr)) {
			return Null(), fmt.Errorf("%w: index %v out of range for array of length %d", ErrInvalidKey, key, len(v.arr))
		}
		elem = v.arr[int(key.n)]
	default:
		return Null(), fmt.Errorf("%w: cannot index a %s", ErrInvalidKey, v.kind)
	}
	if err != nil {
		return Null(), err
	}
	return elem.WithMarks(v.marks), nil
}

// Equal reports whether a and b have the same kind and content (marks are
// ignored).
func Equal(a, b Value) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case NullKind:
		return true
	case BoolKind:
		return a.b == b.b
	case NumberKind:
		return a.n == b.n
	case StringKind:
		return a.s == b.s
	case ArrayKind:
		return slices.EqualFunc(a.arr, b.arr, Equal)
	}
	if a.obj.Len() != b.obj.Len() {
		return false
	}
	for k, av := range a.obj.All() {
		bv, err := b.obj.Get(k)
		if err != nil || !Equal(av, bv) {
			return false
		}
	}
	return true
}

// MarshalJSON encodes v as JSON (marks are not encoded).
func (v Value) MarshalJSON() ([]byte, error) {
	switch v.kind {
	case NullKind:
		return []byte("null"), nil
	case BoolKind:
		return json.Marshal(v.b)
	case NumberKind:
		return json.Marshal(v.n)
	case StringKind:
		return json.Marshal(v.s)
	case ArrayKind:
		if v.arr == nil {
			return []byte("[]"), nil
		}
		return json.Marshal(v.arr)
	}
	m := map[string]Value{}
	for k, e := range v.obj.All() {
		m[k.String()] = e
	}
	return json.Marshal(m)
}

// UnmarshalJSON decodes any JSON value.
func (v *Value) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return err
	}
	nv, err := fromJSON(x)
	if err != nil {
		return err
	}
	*v = nv
	return nil
}

func fromJSON(x any) (Value, error) {
	switch x := x.(type) {
	case nil:
		return Null(), nil
	case bool:
		return Bool(x), nil
	case json.Number:
		n, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return Null(), fmt.Errorf("number %s: %w", x, err)
		}
		return Number(n), nil
	case string:
		return String(x), nil
	case []any:
		elems := make([]Value, len(x))
		for i, e := range x {
			var err error
			if elems[i], err = fromJSON(e); err != nil {
				return Null(), err
			}
		}
		return Array(elems...), nil
	case map[string]any:
		m := mapMapper{}
		for k, e := range x {
			var err error
			if m[k], err = fromJSON(e); err != nil {
				return Null(), err
			}
		}
		return Object(m), nil
	}
	return Null(), fmt.Errorf("unsupported JSON value %T", x)
}

// mapMapper is a Mapper over a Go map; it iterates in sorted key order.
type mapMapper map[string]Value

func (m mapMapper) sortedKeys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (m mapMapper) All() iter.Seq2[Value, Value] {
	return func(yield func(Value, Value) bool) {
		for _, k := range m.sortedKeys() {
			if !yield(String(k), m[k]) {
				return
			}
		}
	}
}

func (m mapMapper) Attr(name string) (Value, error) {
	v, ok := m[name]
	if !ok {
		return Null(), ErrAttributeNotFound
	}
	return v, nil
}

func (m mapMapper) Get(key Value) (Value, error) {
	if key.kind != StringKind {
		return Null(), fmt.Errorf("%w: object requires string key not %v", ErrInvalidKey, key.kind)
	}
	return m.Attr(key.s)
}

func (m mapMapper) Keys() iter.Seq[Value] {
	return func(yield func(Value) bool) {
		for _, k := range m.sortedKeys() {
			if !yield(String(k)) {
				return
			}
		}
	}
}

func (m mapMapper) Len() int { return len(m) }

func (m mapMapper) Values() iter.Seq[Value] {
	return func(yield func(Value) bool) {
		for _, k := range m.sortedKeys() {
			if !yield(m[k]) {
				return
			}
		}
	}
}

// WithMarks returns m: marks live on the Value wrapping a mapper, and Get
// passes them on to the attributes it returns.
func (m mapMapper) WithMarks(uint16) Mapper { return m }
