// Stand-in for gitlab.com/ajwalker/phrasestream: turns off nothing; ::add-mask:: masking is implemented for real.

// Package addmask masks secrets in output streams. A line written to any of
// the streams that starts with "::add-mask::" registers the rest of that line
// as a secret phrase: it is saved to the Store (so later processes sharing
// the store mask it too) and from then on every occurrence of the phrase, in
// every stream, is replaced with "[MASKED]" (the command line itself included).
// A phrase split across several writes is still masked: output that could be
// the start of a phrase is held back until it is known not to be, or until
// Close.
package addmask

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

const (
	// Masked replaces every occurrence of a masked phrase.
	Masked = "[MASKED]"
	// Command starts a line that adds the rest of the line as a phrase.
	Command = "::add-mask::"

	// maxCommandLine bounds how much of an unterminated command line is held
	// back waiting for its newline; a longer line is passed on as output.
	maxCommandLine = 64 << 10
)

// Store persists phrases across processes.
type Store interface {
	List() ([]string, error)
	Add(phrase string) error
}

// AddMask owns a set of masked phrases and the streams that apply them.
type AddMask struct {
	mu      sync.Mutex
	store   Store
	phrases map[byte][]string // by first byte, longest first
	known   map[string]bool
	streams []*stream
	closed  bool
	err     error // first error from the store
}

// New returns an AddMask whose stream i (see Get) writes masked output to
// writers[i]. Phrases already in store are masked from the start.
func New(store Store, writers ...io.Writer) (*AddMask, error) {
	a := &AddMask{store: store, phrases: map[byte][]string{}, known: map[string]bool{}}

	if store != nil {
		list, err := store.List()
		if err != nil {
			return nil, fmt.Errorf("listing masked phrases: %w", err)
		}
		for _, phrase := range list {
			a.addPhrase(phrase)
		}
	}

	for _, w := range writers {
		a.streams = append(a.streams, &stream{a: a, w: w, atLineStart: true})
	}
	return a, nil
}

// Get returns the writer for stream i, in the order the writers were given
// to New (for the runner: 0 is stdout, 1 is stderr).
func (a *AddMask) Get(i int) io.Writer {
	return a.streams[i]
}

// Close flushes any held-back output of every stream. It does not close the
// underlying writers. Writes after Close are masked and passed on at once.
func (a *AddMask) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()

	a.closed = true
	errs := []error{a.err}
	for _, s := range a.streams {
		errs = append(errs, s.flush(true))
	}
	return errors.Join(errs...)
}

// addPhrase adds a phrase to the in-memory set; it reports whether it was new.
func (a *AddMask) addPhrase(phrase string) bool {
	if strings.TrimSpace(phrase) == "" || a.known[phrase] {
		return false
	}
	a.known[phrase] = true

	list := append(a.phrases[phrase[0]], phrase)
	slices.SortStableFunc(list, func(x, y string) int { return len(y) - len(x) })
	a.phrases[phrase[0]] = list
	return true
}

// addCommand handles the value of an "::add-mask::" line.
func (a *AddMask) addCommand(phrase string) {
	if !a.addPhrase(phrase) || a.store == nil {
		return
	}
	if err := a.store.Add(phrase); err != nil && a.err == nil {
		a.err = fmt.Errorf("saving masked phrase: %w", err)
	}
}

// match looks for a phrase at the start of buf. It returns the length of the
// longest phrase found there, or hold=true when more input could still make a
// longer phrase match (never when final).
func (a *AddMask) match(buf []byte, final bool) (n int, hold bool) {
	for _, p := range a.phrases[buf[0]] {
		if len(p) > len(buf) {
			if !final && strings.HasPrefix(p, string(buf)) {
				return 0, true
			}
			continue
		}
		if string(buf[:len(p)]) == p {
			return len(p), false
		}
	}
	return 0, false
}

type stream struct {
	a           *AddMask
	w           io.Writer
	pending     []byte // input not yet passed on
	atLineStart bool   // pending starts at the beginning of a line
	err         error
}

func (s *stream) Write(p []byte) (int, error) {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()

	if s.err != nil {
		return 0, s.err
	}
	s.pending = append(s.pending, p...)
	if err := s.flush(s.a.closed); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush masks and writes out as much of the pending input as can be decided
// now; with final, all of it. Called with a.mu held.
func (s *stream) flush(final bool) error {
	buf := s.pending
	out := make([]byte, 0, len(buf)+len(Masked))

	i := 0
	for i < len(buf) {
		rest := buf[i:]
		lineStart := (i == 0 && s.atLineStart) || (i > 0 && buf[i-1] == '\n')

		if lineStart {
			if !final && len(rest) < len(Command) && strings.HasPrefix(Command, string(rest)) {
				break // might become a command line
			}
			if bytes.HasPrefix(rest, []byte(Command)) {
				end := bytes.IndexByte(rest, '\n')
				if end < 0 && !final && len(rest) < maxCommandLine {
					break // wait for the end of the command line
				}
				if end < 0 {
					end = len(rest)
				}
				s.a.addCommand(strings.TrimRight(string(rest[len(Command):end]), "\r"))
			}
		}

		n, hold := s.a.match(rest, final)
		if hold {
			break
		}
		if n > 0 {
			out = append(out, Masked...)
			i += n
			continue
		}
		out = append(out, buf[i])
		i++
	}

	if i > 0 {
		s.atLineStart = buf[i-1] == '\n'
	}
	s.pending = append(s.pending[:0], buf[i:]...)

	if len(out) > 0 && s.err == nil {
		if _, err := s.w.Write(out); err != nil {
			s.err = err
		}
	}
	return s.err
}
