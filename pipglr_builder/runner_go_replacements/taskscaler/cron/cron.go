// Package cron parses the five-field cron expressions used for autoscaler
// policy periods and tells whether a moment lies inside such a period.
// It is fully working: the kubernetes executor's pause-pod policies use it.
//
// Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
// JAN-DEC), day of week (0-7 or SUN-SAT, 0 and 7 are Sunday). Each field is a
// comma-separated list of "*", "N", "N-M", each optionally followed by "/STEP"
// ("N/STEP" runs from N to the field maximum). As in standard cron, when both
// day fields are restricted a day matches if either of them does.
package cron

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is a parsed cron expression in a time zone.
type Schedule struct {
	minute, hour, dom, month, dow uint64 // bit n set: value n matches
	domAny, dowAny                bool   // field started with "*"
	loc                           *time.Location
}

type field struct {
	name     string
	min, max int
	names    []string // names[i] stands for value min+i (case-insensitive)
}

var (
	minuteField = field{name: "minute", min: 0, max: 59}
	hourField   = field{name: "hour", min: 0, max: 23}
	domField    = field{name: "day of month", min: 1, max: 31}
	monthField  = field{name: "month", min: 1, max: 12,
		names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}}
	dowField = field{name: "day of week", min: 0, max: 7,
		names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}}
)

// Parse parses a five-field cron expression. timezone is an IANA zone name;
// empty means the system's local time zone.
func Parse(expr, timezone string) (Schedule, error) {
	loc := time.Local
	if timezone != "" {
		var err error
		if loc, err = time.LoadLocation(timezone); err != nil {
			return Schedule{}, fmt.Errorf("cron %q: timezone: %w", expr, err)
		}
	}

	parts := strings.Fields(expr)
	if len(parts) != 5 {
		return Schedule{}, fmt.Errorf("cron %q: expected 5 fields, got %d", expr, len(parts))
	}

	s := Schedule{loc: loc, domAny: strings.HasPrefix(parts[2], "*"), dowAny: strings.HasPrefix(parts[4], "*")}
	for i, f := range []struct {
		dst *uint64
		def field
	}{{&s.minute, minuteField}, {&s.hour, hourField}, {&s.dom, domField}, {&s.month, monthField}, {&s.dow, dowField}} {
		bits, err := f.def.parse(parts[i])
		if err != nil {
			return Schedule{}, fmt.Errorf("cron %q: %w", expr, err)
		}
		*f.dst = bits
	}
	if s.dow&(1<<7) != 0 { // 7 is Sunday too
		s.dow |= 1
	}

	return s, nil
}

// Contains reports whether t falls inside the schedule, at minute resolution.
func (s Schedule) Contains(t time.Time) bool {
	if s.loc != nil {
		t = t.In(s.loc)
	}
	if !has(s.minute, t.Minute()) || !has(s.hour, t.Hour()) || !has(s.month, int(t.Month())) {
		return false
	}

	domOK, dowOK := has(s.dom, t.Day()), has(s.dow, int(t.Weekday()))
	if s.domAny || s.dowAny {
		return domOK && dowOK
	}
	return domOK || dowOK
}

func has(bits uint64, n int) bool { return bits&(1<<uint(n)) != 0 }

// parse turns one field into a bit set of matching values.
func (f field) parse(text string) (uint64, error) {
	var bits uint64
	for _, item := range strings.Split(text, ",") {
		rangePart, stepPart, hasStep := strings.Cut(item, "/")

		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepPart)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("%s: invalid step in %q", f.name, item)
			}
			step = n
		}

		var lo, hi int
		switch lowText, highText, isRange := strings.Cut(rangePart, "-"); {
		case rangePart == "*":
			lo, hi = f.min, f.max
		case isRange:
			var err error
			if lo, err = f.value(lowText); err != nil {
				return 0, err
			}
			if hi, err = f.value(highText); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("%s: range %q is backwards", f.name, rangePart)
			}
		default:
			var err error
			if lo, err = f.value(rangePart); err != nil {
				return 0, err
			}
			hi = lo
			if hasStep {
				hi = f.max
			}
		}

		for n := lo; n <= hi; n += step {
			bits |= 1 << uint(n)
		}
	}
	return bits, nil
}

// value parses a single number or name of the field.
func (f field) value(text string) (int, error) {
	for i, name := range f.names {
		if strings.EqualFold(text, name) {
			return f.min + i, nil
		}
	}
	n, err := strconv.Atoi(text)
	if err != nil || n < f.min || n > f.max {
		return 0, fmt.Errorf("%s: invalid value %q (want %d-%d)", f.name, text, f.min, f.max)
	}
	return n, nil
}
